# The two commands of the README: `make demo` and `make test`.
# Both install what is missing first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The compiled parts (eBPF objects, glia-cni's fast path) are built by
# native/glia_build.py, which also builds them into the wheel (setup.py): one
# list of compiler flags. It rebuilds only what is older than its sources.
# bpf/test/: harness programs the datapath tests load next to glia's own; the
# fast path falls back to this checkout's Python plugin.

.PHONY: setup bpf demo test lint unit integration e2e bench bench-pods bench-services bench-mesh bench-policy bench-chaining bench-docker clean

setup:
	@./scripts/setup.sh

# `bpf` builds every compiled part: the eBPF objects and glia-cni's fast path.
bpf:
	@$(PY) native/glia_build.py build --with-tests --fallback $(CURDIR)/$(VENV)/bin/glia-cni

demo: setup bpf
	@$(VENV)/bin/glia lab demo

lint: setup
	@$(VENV)/bin/ruff check src tests bench native setup.py
	@$(VENV)/bin/ruff format --check src tests bench native setup.py
	@$(VENV)/bin/mypy

test: setup bpf lint
	@$(VENV)/bin/pytest -q -p no:cacheprovider --durations=30 tests

unit: setup
	@$(VENV)/bin/pytest -q tests/unit

bench: bench-pods bench-services bench-mesh bench-policy bench-chaining

bench-pods: setup bpf
	@$(PY) bench/pods.py

bench-services: setup bpf
	@$(PY) bench/services.py

bench-mesh: setup bpf
	@$(PY) bench/mesh.py

bench-policy: setup bpf
	@$(PY) bench/policy.py

bench-chaining: setup bpf
	@$(PY) bench/chaining.py

bench-docker: setup bpf
	@$(PY) bench/docker.py

clean:
	rm -rf build
