"""``glia-oci-hook`` (glia.cni.oci_hook) against a fake /proc and cgroup tree in a temp dir.

Arguments, the OCI state, and what the hook does for each place a container's
process can be in; the real kernel is in tests/integration/test_cgroup.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from glia.cni import oci_hook
from glia.cni.oci_hook import HookError

PID = 4242


@dataclass
class Fake:
    proc: Path  # stands for /proc
    mount: Path  # where the fake cgroup2 hierarchy is "mounted"
    node: Path  # the node's cgroup dir

    def put(self, cgroup: str, controllers: str = "") -> None:
        """Place PID at hierarchy path ``cgroup`` (whose cgroup.controllers is ``controllers``)."""
        (self.proc / str(PID) / "cgroup").write_text(f"4:memory:/x\n0::{cgroup}\n")
        here = self.mount / cgroup.strip("/")
        here.mkdir(parents=True, exist_ok=True)
        (here / "cgroup.controllers").write_text(controllers + "\n")

    def moved(self) -> str:
        procs = self.node / "cgroup.procs"
        return procs.read_text() if procs.exists() else ""


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    proc, mount = tmp_path / "proc", tmp_path / "cg2"
    (proc / "self").mkdir(parents=True)
    (proc / str(PID)).mkdir()
    (proc / "self" / "mountinfo").write_text(
        f"41 31 0:38 / {mount} rw,relatime - cgroup2 cgroup2 rw\n"
        f"36 31 0:33 / {tmp_path / 'pids'} rw,relatime - cgroup cgroup rw,pids\n"
    )
    node = mount / "glia-lab-gliat-c1-n1"
    node.mkdir(parents=True)
    return Fake(proc, mount, node)


def state(pid: object = PID) -> bytes:
    return json.dumps({"ociVersion": "1.0.2", "id": "0123456789abcdef", "pid": pid}).encode()


def run(fake: Fake, argv: list[str] | None = None, stdin: bytes | None = None) -> str:
    err = io.StringIO()
    args = argv if argv is not None else ["--cgroup", str(fake.node)]
    assert oci_hook.run(args, state() if stdin is None else stdin, err, str(fake.proc)) == 0
    return err.getvalue()


def test_parse_args() -> None:
    assert oci_hook.parse_args(["--cgroup", "/c/glia"]) == ("/c/glia", None)
    assert oci_hook.parse_args(["--log=/l", "--cgroup=/c/glia"]) == ("/c/glia", "/l")
    for bad in ([], ["--cgroup"], ["--cgroup", "/a", "--cgroup", "/b"], ["--pid", "1"], ["x"]):
        with pytest.raises(HookError, match="usage: glia-oci-hook"):
            oci_hook.parse_args(bad)


def test_parse_state() -> None:
    assert oci_hook.parse_state(state()) == ("0123456789abcdef", PID)
    for raw in (b"{", b"[]", state(0), state("12"), state(True), b'{"id": "x"}'):
        with pytest.raises(HookError, match="OCI state"):
            oci_hook.parse_state(raw)


def test_moves_a_process_from_runcs_cgroup_into_the_node(fake: Fake) -> None:
    fake.put("/libpod_parent/libpod-0123")  # where runc put it on a hybrid host
    assert run(fake) == ""
    assert fake.moved() == str(PID)


def test_moves_a_process_from_the_hierarchys_root(fake: Fake) -> None:
    # Where runc leaves it when it does not manage cgroup2; the root lists the
    # controllers that could be enabled below it, but limits nothing itself.
    fake.put("/", controllers="hugetlb")
    assert run(fake) == ""
    assert fake.moved() == str(PID)


def test_leaves_a_process_already_below_the_node(fake: Fake) -> None:
    # podman --cgroup-parent: runc placed it in the node's subtree itself.
    fake.put("/glia-lab-gliat-c1-n1/libpod-0123", controllers="cpu memory")
    assert run(fake) == ""
    assert fake.moved() == ""


def test_never_lifts_a_containers_limits(fake: Fake) -> None:
    fake.put("/libpod_parent/libpod-0123", controllers="cpu memory pids")
    err = run(fake)
    assert fake.moved() == ""
    assert "enforces cpu, memory, pids" in err and "--cgroup-parent" in err
    assert "still load-balanced per packet" in err


def test_failures_are_one_line_exit_0_and_logged(fake: Fake, tmp_path: Path) -> None:
    log = tmp_path / "hook.log"
    cases = {
        "no process id": (["--cgroup", str(fake.node)], state(None)),
        "No such file or directory": (["--cgroup", str(fake.node)], state(PID + 1)),
        "name starts with 'glia'": (["--cgroup", str(fake.mount / "other")], state()),
        "not inside a cgroup2 mount": (["--cgroup", str(tmp_path / "pids" / "glia-x")], state()),
        "--cgroup is required": ([], state()),
    }
    fake.put("/")
    for reason, (argv, raw) in cases.items():
        err = run(fake, [*argv, "--log", str(log)] if argv else argv, raw)
        assert err.count("\n") == 1 and reason in err, (reason, err)
        assert err.startswith("glia-oci-hook: ") and "per packet" in err
    logged = log.read_text().splitlines()
    assert len(logged) == len(cases) - 1  # the last run had no --log
    assert "container 0123456789ab (pid 4243)" in logged[1]
    assert fake.moved() == ""


def test_an_unwritable_log_is_reported_too(fake: Fake, tmp_path: Path) -> None:
    err = run(fake, ["--cgroup", str(fake.node), "--log", str(tmp_path / "no" / "log")], b"{")
    assert "not JSON" in err and "cannot write" in err


def test_imports_stay_within_the_budget() -> None:
    # It runs on every container start: the standard library's json and nothing heavy.
    code = (
        "import sys; before = set(sys.modules); import glia.cni.oci_hook; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    heavy = {"pathlib", "typing", "argparse", "subprocess", "dataclasses", "glia.datapath.cgroup"}
    assert not loaded & heavy, loaded & heavy
    assert {"json", "glia.datapath.cgroup_paths"} <= loaded
