"""Which Python plugin glia-cni's fast path hands over to (native/glia-cni.c).

``glia-cni-python`` next to the executable as it was started (argv[0]'s
directory, or /proc/self/exe's for a bare name), else the compiled-in path
(``make bpf``: this checkout's venv; none in a wheel, then a CNI error naming
what is missing). No agent runs here: every ADD below leaves the fast path, and
the stand-in Python plugins print who they are and the stdin they were given.
The wheel's variant is compiled here by native/glia_build.py, with clang.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from glia.lab.base import bin_dir, cni_plugin

FAST = cni_plugin()
ROOT = Path(__file__).resolve().parents[2]
STDIN = json.dumps(
    {
        "cniVersion": "1.0.0",
        "name": "glia",
        "type": "glia-cni",
        "agentSocket": "/nonexistent/glia.sock",
        "agentWaitSeconds": 0,
    }
).encode()
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "f00dcafe",
    "CNI_NETNS": "/run/netns/netns-1",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/usr/lib/cni",
    "PATH": "/usr/bin:/bin",
}


def glia_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("glia_build", ROOT / "native" / "glia_build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="glia-cnilookup."))
    try:
        yield d.resolve()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def stand_in(path: Path, who: str) -> None:
    """A Python plugin that says who it is, then echoes its stdin."""
    path.write_text(f"#!/bin/sh\nprintf '%s %s\\n' {who} \"$CNI_COMMAND\"\nexec cat\n")
    path.chmod(0o755)


def run(argv0: str, env_path: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**ENV, "PATH": f"{env_path}:{ENV['PATH']}"} if env_path else ENV
    return subprocess.run([argv0], env=env, input=STDIN, capture_output=True, timeout=60)


def copy_fastpath(src: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    dst = into / "glia-cni"
    shutil.copy2(src, dst)
    return dst


def test_the_sibling_next_to_the_executable_gets_the_invocation(tmp: Path) -> None:
    fast = copy_fastpath(FAST, tmp / "bin")
    stand_in(tmp / "bin" / "glia-cni-python", "sibling")
    p = run(str(fast))
    assert (p.returncode, p.stdout) == (0, b"sibling ADD\n" + STDIN)


def test_a_symlink_looks_next_to_itself_not_its_target(tmp: Path) -> None:
    fast = copy_fastpath(FAST, tmp / "real")
    stand_in(tmp / "real" / "glia-cni-python", "target")
    (tmp / "cni").mkdir()
    (tmp / "cni" / "glia-cni").symlink_to(fast)
    stand_in(tmp / "cni" / "glia-cni-python", "link")
    assert run(str(tmp / "cni" / "glia-cni")).stdout == b"link ADD\n" + STDIN
    # Started by a bare name (PATH lookup): argv[0] says nothing, /proc/self/exe does.
    assert run("glia-cni", env_path=str(tmp / "cni")).stdout == b"target ADD\n" + STDIN


def test_without_a_sibling_the_compiled_in_plugin_runs(tmp: Path) -> None:
    # make bpf's fast path: this checkout's Python plugin, which cannot reach the agent.
    fast = copy_fastpath(FAST, tmp / "bin")
    (tmp / "bin" / "glia-cni-python").write_text("#!/bin/sh\necho not executable\n")
    p = run(str(fast))
    python = subprocess.run(
        [str(bin_dir() / "glia-cni")], env=ENV, input=STDIN, capture_output=True, timeout=60
    )
    assert (p.returncode, p.stdout) == (python.returncode, python.stdout)
    assert p.returncode == 1 and json.loads(p.stdout)["code"] == 11  # agent unreachable


def test_a_wheels_fast_path_needs_the_sibling(tmp: Path) -> None:
    helper = glia_build()
    built = helper.build_fastpath(tmp / "build" / "glia-cni", tmp / "build", "")
    assert '#define GLIA_CNI_FALLBACK ""' in (tmp / "build" / "glia-cni-shim.h").read_text()
    fast = copy_fastpath(built, tmp / "bin")
    p = run(str(fast))
    assert p.returncode == 1
    error = json.loads(p.stdout)
    assert error["code"] == 999
    assert f"{tmp}/bin/glia-cni-python is missing" in error["msg"]
    assert "glia cni install" in error["msg"]
    env = {**ENV, "CNI_COMMAND": "VERSION"}
    version = subprocess.run([str(fast)], env=env, capture_output=True, timeout=60)
    assert version.returncode == 0 and "1.1.0" in json.loads(version.stdout)["supportedVersions"]
    stand_in(tmp / "bin" / "glia-cni-python", "sibling")
    assert run(str(fast)).stdout == b"sibling ADD\n" + STDIN


def test_the_build_helper_leaves_fresh_outputs_alone(tmp: Path) -> None:
    helper = glia_build()
    (obj,) = [o for o in helper.build_bpf(tmp / "bpf") if o.name == "sock.bpf.o"]
    before = obj.stat().st_mtime_ns
    helper.build_bpf(tmp / "bpf")
    assert obj.stat().st_mtime_ns == before
    assert sorted(p.name for p in (tmp / "bpf").iterdir()) == sorted(
        p.name.replace(".bpf.c", ".bpf.o") for p in (ROOT / "bpf").glob("*.bpf.c")
    )
