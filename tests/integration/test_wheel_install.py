"""The wheel, built as a packager builds it, installed into a fresh venv away from the checkout.

Then a lab of two nodes is brought up by the installed ``glia`` (its agents,
operator, CNI plugin and BPF objects all the wheel's), and its containers talk.
Its second node is set up as README's "Deployment on real hosts" tells an
operator, by the wheel's own commands (glia.lab.hostsetup).

One module-scoped build and install (about half a minute): ``pip wheel
--no-deps`` of the checkout (setup.py compiles the BPF objects and the fast
path into the package), a new venv in a ``glia-wheel.*`` temporary directory,
``pip install`` of the wheel with its dependencies from the machine's
configured index (pip's cache makes that quick the second time). Every command
then runs from the temporary directory with a bare environment: no
PYTHONPATH, no GLIA_BPF_DIR, so the checkout is nowhere on its path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
# A lab of its own next to the e2e suite's ("gliat", or $GLIA_E2E_LAB): 'glia' + 8 at most.
_E2E_LAB = os.environ.get("GLIA_E2E_LAB", "gliat")
WHEEL_LAB = _E2E_LAB[:11] + "w"
PIP_ENV = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}

# The loader and the agent find the objects in the package, and the kernel takes
# them: every object opened and loaded with its maps pinned under a test pin dir.
LOAD = """
import json, os, sys
from pathlib import Path
from glia.agent.daemon import _default_obj_dir
from glia.datapath.loader import OBJECT_FILES, Datapath, default_obj_dir, unpin
pin = Path(sys.argv[1])
dp = Datapath(pin, default_obj_dir())
try:
    dp.load()
    print(json.dumps({"obj_dir": str(dp.obj_dir), "agent": str(_default_obj_dir(None)),
                      "objects": sorted(OBJECT_FILES), "pins": len(os.listdir(pin))}))
finally:
    dp.close()
    unpin(pin)
"""


@dataclass(frozen=True)
class Installed:
    dir: Path
    venv: Path
    wheel: Path

    @property
    def site(self) -> Path:
        (site,) = self.venv.glob("lib/python3*/site-packages")
        return site

    def run(self, *cmd: str | Path, env: dict[str, str] | None = None, stdin: bytes = b"") -> str:
        p = subprocess.run(
            [str(c) for c in cmd],
            cwd=self.dir,
            env={**ENV, **(env or {})},
            input=stdin,
            capture_output=True,
            timeout=120,
        )
        assert p.returncode == 0, f"{cmd} failed ({p.returncode}): {p.stderr.decode()}"
        return p.stdout.decode()


def _check(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if p.returncode != 0:
        pytest.fail(f"{what} failed:\n{p.stdout[-2000:]}{p.stderr[-4000:]}", pytrace=False)


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    d = Path(tempfile.mkdtemp(prefix="glia-wheel."))
    try:
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        _check([*pip, "wheel", "--no-deps", "-q", "-w", str(d / "dist"), str(ROOT)], "pip wheel")
        (wheel,) = (d / "dist").glob("glia-*.whl")
        # From the base interpreter: a venv of its own, not nested in the checkout's.
        _check([sys._base_executable, "-m", "venv", str(d / "venv")], "venv")  # type: ignore[attr-defined]
        env = {**ENV, **PIP_ENV}
        _check([str(d / "venv/bin/pip"), "install", "-q", str(wheel)], "pip install", env)
        yield Installed(d, d / "venv", wheel)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_wheel_is_tagged_for_the_platform_and_carries_the_compiled_parts(
    installed: Installed,
) -> None:
    assert installed.wheel.name == "glia-0.1.0-py3-none-linux_x86_64.whl"
    package = installed.site / "glia"
    objects = sorted(p.name for p in (package / "_bpf").iterdir())
    assert objects == sorted(p.name.replace(".c", ".o") for p in (ROOT / "bpf").glob("*.bpf.c"))
    assert os.access(package / "_bin" / "glia-cni", os.X_OK)


def test_glia_runs_from_the_venv_without_the_checkout(installed: Installed) -> None:
    py = installed.venv / "bin" / "python"
    where = json.loads(
        installed.run(
            py, "-c", "import glia, json, sys; print(json.dumps([glia.__file__, sys.path]))"
        )
    )
    assert Path(where[0]).is_relative_to(installed.venv)
    assert not [p for p in where[1] if p and Path(p).resolve().is_relative_to(ROOT)]
    assert installed.run(installed.venv / "bin" / "glia", "--version") == "glia 0.1.0\n"
    for command in ("agent", "operator"):
        assert "--config" in installed.run(installed.venv / "bin" / "glia", command, "--help")


def test_the_loader_and_the_agent_find_the_packages_bpf_objects(installed: Installed) -> None:
    pin = f"/sys/fs/bpf/glia-test-{os.getpid()}-wheel"
    got = json.loads(installed.run(installed.venv / "bin" / "python", "-c", LOAD, pin))
    package_bpf = str(installed.site / "glia" / "_bpf")
    assert got["obj_dir"] == got["agent"] == package_bpf
    # Every program of the checkout, compiled into the wheel (OBJECT_FILES names them).
    sources = sorted(f.name.replace(".bpf.c", ".bpf.o") for f in (ROOT / "bpf").glob("*.bpf.c"))
    assert got["objects"] == sources and got["pins"] > 10
    assert not os.path.exists(pin)


def test_cni_install_from_the_wheel(installed: Installed) -> None:
    bin_dir, conf_dir = installed.dir / "cni" / "bin", installed.dir / "cni" / "net.d"
    glia = installed.venv / "bin" / "glia"
    out = installed.run(
        glia, "cni", "install", "--bin-dir", bin_dir, "--conf-dir", conf_dir, "-o", "json"
    )
    assert {s["action"] for s in json.loads(out)} == {"create"}
    fast = bin_dir / "glia-cni"
    assert fast.read_bytes() == (installed.site / "glia" / "_bin" / "glia-cni").read_bytes()
    assert os.readlink(bin_dir / "glia-cni-python") == str(installed.venv / "bin" / "glia-cni")
    assert (
        json.loads((conf_dir / "10-glia.conflist").read_text())["plugins"][0]["type"] == "glia-cni"
    )

    version = json.loads(installed.run(fast, env={"CNI_COMMAND": "VERSION"}))
    assert version["supportedVersions"][-1] == "1.1.0"
    # No agent: the wheel's fast path compiles no fallback in, so only the sibling
    # glia-cni-python can be what answers, with the Python plugin's CNI error.
    net = {
        "cniVersion": "1.0.0",
        "name": "glia",
        "type": "glia-cni",
        "agentSocket": str(installed.dir / "no-agent.sock"),
        "agentWaitSeconds": 0,
    }
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "f00dcafe",
        "CNI_NETNS": "/run/netns/glia-none",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bin_dir),
        "GLIA_CNI_DEBUG": "1",
    }
    p = subprocess.run(
        [str(fast)],
        env={**ENV, **env},
        input=json.dumps(net).encode(),
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 1 and json.loads(p.stdout)["code"] == 11, p
    assert b"fast path left" in p.stderr


def _agent_pids(status: object) -> list[int]:
    """The agents' PIDs anywhere in ``glia lab status -o json``."""
    if isinstance(status, dict):
        agent = status.get("agent")
        found = [agent["pid"]] if isinstance(agent, dict) and agent.get("pid") else []
        return found + [p for v in status.values() for p in _agent_pids(v)]
    if isinstance(status, list):
        return [p for v in status for p in _agent_pids(v)]
    return []


def test_a_lab_runs_its_agents_and_cni_plugin_from_the_wheel(installed: Installed) -> None:
    glia = installed.venv / "bin" / "glia"
    lab_dir = Path(f"/run/glia/lab-{WHEEL_LAB}")
    lab = ("--lab", WHEEL_LAB, "--dir", str(lab_dir))
    try:
        installed.run(glia, "lab", "up", "--recreate", "-c", "1", "-n", "2", *lab)
        pids = _agent_pids(json.loads(installed.run(glia, "lab", "status", "-o", "json", *lab)))
        assert len(pids) == 2
        for pid in pids:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert Path(os.fsdecode(argv[1])) == glia and argv[2] == b"agent", argv
        config = (lab_dir / "nodes" / "c1-n1" / "agent.yaml").read_text()
        assert f"bpf_obj_dir: {installed.site / 'glia' / '_bpf'}" in config
        cni_bin = lab_dir / "cni-bin"
        assert (cni_bin / "glia-cni").resolve() == installed.site / "glia" / "_bin" / "glia-cni"
        assert os.readlink(cni_bin / "glia-cni-python") == str(installed.venv / "bin" / "glia-cni")
        # c1/n2 was set up as the README tells an operator (glia.lab.hostsetup): its
        # certificates, config, CNI plugin and unit by the wheel's own commands, and its
        # agent runs the unit's ExecStart.
        host = lab_dir / "nodes" / "c1-n2"
        steps = [ln for ln in (host / "host-setup.log").read_text().splitlines() if ln[:2] == "$ "]
        assert [s.split()[1:3] for s in steps] == [
            ["glia", "etcd"],
            ["glia", "config"],
            ["glia", "cni"],
            ["glia", "systemd"],
        ]
        assert (host / "agent.yaml").read_text().startswith(f"# {host / 'agent.yaml'}: written by")
        assert (
            f"cert_file: {host / 'pki' / 'glia-agent-n2.crt'}" in (host / "agent.yaml").read_text()
        )
        unit = (host / "systemd" / "glia-agent.service").read_text()
        assert f"ExecStart={glia} agent --config {host / 'agent.yaml'}\n" in unit
        argvs = [
            [os.fsdecode(a) for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
            for pid in pids
        ]
        wanted = [str(glia), "agent", "--config", str(host / "agent.yaml")]
        assert [a[1:5] for a in argvs if a[1:5] == wanted], argvs
        fast = host / "cni" / "bin" / "glia-cni"
        assert not fast.is_symlink()
        assert fast.read_bytes() == (installed.site / "glia" / "_bin" / "glia-cni").read_bytes()
        assert (host / "cni" / "net.d" / "10-glia.conflist").is_file()
        assert not (host / "cni" / "net.d" / "glia.conflist").exists()

        a, b = (
            json.loads(installed.run(glia, "lab", "run", node, "--name", name, "-o", "json", *lab))
            for node, name in (("c1/n1", "glia-a"), ("c1/n2", "glia-b"))
        )
        # busybox httpd answers its name; `timeout`, as wget's -T crashes Debian's busybox.
        wget = ("timeout", "5", "wget", "-q", "-O", "-", f"http://{b['ip']}/")
        assert installed.run(glia, "lab", "exec", "c1/n1/glia-a", *lab, "--", *wget) == "glia-b\n"
        assert a["ip"] != b["ip"]
    finally:
        down = subprocess.run(
            [str(glia), "lab", "down", *lab], env=ENV, capture_output=True, text=True, timeout=300
        )
        assert down.returncode == 0, down.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [n for n in netns.split() if n.startswith(f"{WHEEL_LAB}-")]
    assert not lab_dir.exists()
