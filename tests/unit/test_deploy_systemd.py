"""The shipped systemd units: valid for systemd, run the glia console script, are package data."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glia.cli.main import app
from glia.deploy import systemd

ROOT = Path(__file__).resolve().parents[2]
GLIA = str(Path(sys.executable).parent / "glia")


def parse(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    cp.read_string(text)
    return cp


@pytest.mark.parametrize(
    ("unit", "daemon"), [("glia-agent.service", "agent"), ("glia-operator.service", "operator")]
)
def test_unit_keys(unit: str, daemon: str) -> None:
    cp = parse(systemd.render(unit, GLIA))
    svc = cp["Service"]
    assert svc["ExecStart"] == f"{GLIA} {daemon} --config /etc/glia/{daemon}.yaml"
    assert svc["Restart"] == "on-failure"
    assert cp["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in cp["Unit"]["After"]


def test_agent_unit_provides_for_bpf() -> None:
    text = systemd.shipped("glia-agent.service")
    cp = parse(text)
    assert cp["Unit"]["RequiresMountsFor"] == "/sys/fs/bpf"
    assert cp["Service"]["LimitMEMLOCK"] == "infinity"
    for cap in ("CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"):
        assert cap in text  # documented in the unit's comments


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    # systemd-analyze is part of systemd, which this machine and CI have.
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze not found"
    r = CliRunner().invoke(app, ["systemd", "units", "--out", str(tmp_path), "--glia-bin", GLIA])
    assert r.exit_code == 0, r.output
    units = sorted(tmp_path.glob("*.service"))
    assert [u.name for u in units] == sorted(systemd.UNITS)
    v = subprocess.run(
        [analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=60
    )
    assert (v.returncode, v.stderr.strip()) == (0, "")


def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    # The check above can fail: a misspelt key and a missing binary are reported.
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    bad = tmp_path / "glia-agent.service"
    bad.write_text(
        systemd.render("glia-agent.service", "/nonexistent/glia").replace("Restart=", "Restrt=")
    )
    v = subprocess.run([analyze, "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Restrt" in v.stderr and "/nonexistent/glia" in v.stderr


def test_cli_prints_units_and_refuses_a_relative_binary() -> None:
    r = CliRunner().invoke(app, ["systemd", "units", "--glia-bin", "/opt/glia/bin/glia"])
    assert r.exit_code == 0, r.output
    assert "ExecStart=/opt/glia/bin/glia agent --config /etc/glia/agent.yaml" in r.output
    r = CliRunner().invoke(app, ["systemd", "units", "--glia-bin", "glia"])
    assert r.exit_code == 1
    assert "absolute path" in r.output


def test_units_are_package_data() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["glia"]
    shipped = {p.name for p in (ROOT / "src" / "glia" / "systemd").iterdir()}
    assert shipped == set(systemd.UNITS)
    assert any(Path("systemd", name).match(p) for p in patterns for name in systemd.UNITS)
