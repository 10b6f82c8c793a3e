"""``glia cni install`` into temporary directories (never /opt or /etc).

The fast path is this checkout's (``make bpf``), the Python plugin this venv's
console script; the installed pair is then run as a runtime would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glia import native
from glia.cli.main import app
from glia.cni import install
from glia.cni.config import conflist

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def dirs() -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory(prefix="glia-cniinstall.") as d:
        yield Path(d) / "bin", Path(d) / "net.d"


def cni_install(bin_dir: Path, conf_dir: Path, *extra: str) -> tuple[int, str]:
    args = ["cni", "install", "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), *extra]
    r = runner.invoke(app, args)
    return r.exit_code, r.output


def actions(output: str) -> dict[str, str]:
    return {Path(s["path"]).name: s["action"] for s in json.loads(output)}


def test_a_fresh_install_writes_the_three_files(dirs: tuple[Path, Path]) -> None:
    bin_dir, conf_dir = dirs
    code, out = cni_install(bin_dir, conf_dir, "--name", "pods", "--mtu", "1400", "-o", "json")
    assert code == 0, out
    assert actions(out) == {
        "glia-cni": "create",
        "glia-cni-python": "create",
        "10-pods.conflist": "create",
    }
    fast = bin_dir / "glia-cni"
    assert fast.read_bytes() == native.cni_fastpath().read_bytes()
    assert os.access(fast, os.X_OK) and not fast.is_symlink()
    assert os.readlink(bin_dir / "glia-cni-python") == str(install.python_plugin())
    written = json.loads((conf_dir / "10-pods.conflist").read_text())
    assert written == conflist("/run/glia/agent.sock", "pods", 1400)
    assert sorted(p.name for p in bin_dir.iterdir()) == ["glia-cni", "glia-cni-python"]


def test_the_installed_plugin_runs_as_a_runtime_runs_it(dirs: tuple[Path, Path]) -> None:
    bin_dir, conf_dir = dirs
    sock = "/nonexistent/glia.sock"
    assert cni_install(bin_dir, conf_dir, "--agent-socket", sock)[0] == 0
    config = json.loads((conf_dir / "10-glia.conflist").read_text())
    net = {**config["plugins"][0], "name": "glia", "cniVersion": "1.0.0", "agentWaitSeconds": 0}
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "f00dcafe",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bin_dir),
        "PATH": "/usr/bin:/bin",
    }
    p = subprocess.run(
        [str(bin_dir / "glia-cni")],
        env=env,
        input=json.dumps(net).encode(),
        capture_output=True,
        timeout=60,
    )
    # No agent behind the socket: the Python plugin says so, as a CNI error.
    assert p.returncode == 1
    error = json.loads(p.stdout)
    assert error["code"] == 11 and sock in error["msg"] + error.get("details", "")
    version = subprocess.run(
        [str(bin_dir / "glia-cni")], env={"CNI_COMMAND": "VERSION"}, capture_output=True
    )
    assert "1.1.0" in json.loads(version.stdout)["supportedVersions"]


def test_installing_again_changes_nothing(dirs: tuple[Path, Path]) -> None:
    bin_dir, conf_dir = dirs
    assert cni_install(bin_dir, conf_dir)[0] == 0
    before = {p: p.lstat().st_mtime_ns for p in [*bin_dir.iterdir(), *conf_dir.iterdir()]}
    code, out = cni_install(bin_dir, conf_dir, "-o", "json")
    assert code == 0
    assert set(actions(out).values()) == {"unchanged"}
    assert {p: p.lstat().st_mtime_ns for p in before} == before


def test_a_different_file_is_refused_and_nothing_is_written(dirs: tuple[Path, Path]) -> None:
    bin_dir, conf_dir = dirs
    conf_dir.mkdir()
    theirs = conf_dir / "10-glia.conflist"
    theirs.write_text('{"name": "someone else"}\n')
    code, out = cni_install(bin_dir, conf_dir)
    assert code == 1
    assert f"{theirs}: exists and differs" in out and "--force" in out
    assert theirs.read_text() == '{"name": "someone else"}\n'
    assert not bin_dir.exists()

    code, out = cni_install(bin_dir, conf_dir, "--force", "-o", "json")
    assert code == 0, out
    assert actions(out)["10-glia.conflist"] == "replace"
    assert json.loads(theirs.read_text()) == conflist()
    assert not [p for p in conf_dir.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_a_plain_file_where_the_symlink_goes_is_a_conflict(dirs: tuple[Path, Path]) -> None:
    bin_dir, conf_dir = dirs
    bin_dir.mkdir()
    (bin_dir / "glia-cni-python").write_text("#!/bin/sh\n")
    code, out = cni_install(bin_dir, conf_dir)
    assert code == 1 and "glia-cni-python: exists and differs" in out
    assert cni_install(bin_dir, conf_dir, "--force")[0] == 0
    assert (bin_dir / "glia-cni-python").is_symlink()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--name", "a b", "network name 'a b'"),
        ("--mtu", "100", "mtu 100 must be in 576..65535"),
        ("--agent-socket", "run/agent.sock", "must be an absolute path"),
    ],
)
def test_bad_options_are_usage_errors(
    dirs: tuple[Path, Path], option: str, value: str, message: str
) -> None:
    bin_dir, conf_dir = dirs
    code, out = cni_install(bin_dir, conf_dir, option, value)
    assert code == 2 and message in out
    assert not bin_dir.exists() and not conf_dir.exists()


def test_a_missing_fast_path_is_said_plainly(tmp_path: Path) -> None:
    files = tmp_path / "bin"
    with pytest.raises(install.InstallError, match=r"fast path is not at .*make bpf"):
        install.wanted_files(files, tmp_path, tmp_path / "nope", install.python_plugin(), "g", "")
