# The two commands of the README: `make demo` and `make test`.
# Both install what is missing first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -I/usr/include/x86_64-linux-gnu -Ibpf/include

# bpf/test/: harness programs the datapath tests load next to glia's own.
BPF_SRC := $(wildcard bpf/*.bpf.c bpf/test/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,build/bpf/%.bpf.o,$(BPF_SRC))
BPF_HDR := $(wildcard bpf/include/*.h)
# glia-cni's compiled fast path (native/glia-cni.c); its constants come from Python.
SHIM := build/bin/glia-cni
SHIM_HDR := build/native/glia-cni-shim.h

.PHONY: setup bpf demo test lint unit integration e2e bench bench-pods bench-services bench-mesh bench-policy clean

setup:
	@./scripts/setup.sh

build/bpf/%.bpf.o: bpf/%.bpf.c $(BPF_HDR)
	@mkdir -p $(@D)
	@clang $(BPF_CFLAGS) -c $< -o $@

$(SHIM_HDR): src/glia/cni/shim.py src/glia/cni/spec.py
	@mkdir -p $(@D)
	@$(PY) -m glia.cni.shim header $(CURDIR)/$(VENV)/bin/glia-cni > $@.tmp && mv $@.tmp $@

$(SHIM): native/glia-cni.c $(SHIM_HDR)
	@mkdir -p $(@D)
	@clang -O2 -std=gnu11 -Wall -Wextra -Werror -Ibuild/native -o $@ $<

# `bpf` builds every compiled part: the eBPF objects and glia-cni's fast path.
bpf: $(BPF_OBJ) $(SHIM)

demo: setup bpf
	@$(VENV)/bin/glia lab demo

lint: setup
	@$(VENV)/bin/ruff check src tests bench
	@$(VENV)/bin/ruff format --check src tests bench
	@$(VENV)/bin/mypy

test: setup bpf lint
	@$(VENV)/bin/pytest -q -p no:cacheprovider tests

unit: setup
	@$(VENV)/bin/pytest -q tests/unit

bench: bench-pods bench-services bench-mesh bench-policy

bench-pods: setup bpf
	@$(PY) bench/pods.py

bench-services: setup bpf
	@$(PY) bench/services.py

bench-mesh: setup bpf
	@$(PY) bench/mesh.py

bench-policy: setup bpf
	@$(PY) bench/policy.py

clean:
	rm -rf build
