"""The CLI's contract against a real lab: --lab/GLIA_LAB_NAME find it, pipes get plain rows.

Also the agent API's error contract on a running agent (unknown route, wrong
method). Uses the session ``lab``; runs the installed ``glia`` with its stdout
a pipe and without ``GLIA_LAB_DIR``, as a user's script would.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from glia.agent.client import AgentError
from glia.lab.lab import Lab, bin_dir

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def glia(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("GLIA_LAB_DIR", "GLIA_LAB_NAME")}
    return subprocess.run(
        [str(bin_dir() / "glia"), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_lab_option_and_env_find_the_lab(lab: Lab) -> None:
    r = glia("status", "--node", "c1/n2", "--lab", lab.name, "-o", "yaml")
    assert r.returncode == 0, r.stderr
    st = yaml.safe_load(r.stdout)
    assert st["healthy"] is True and st["node"]["name"] == "n2"
    r = glia("node", "list", "--node", "c1/n1", "-o", "JSON", env={"GLIA_LAB_NAME": lab.name})
    assert r.returncode == 0, r.stderr
    assert sorted(n["name"] for n in json.loads(r.stdout)) == ["n1", "n2"]


def test_a_missing_node_or_lab_is_said_plainly(lab: Lab) -> None:
    r = glia("status", "--node", "c1/n9", "--lab", lab.name)
    assert r.returncode == 1
    assert r.stderr.startswith(f"lab {lab.name!r} has no node c1/n9 ")
    r = glia("status", "--node", "c1/n1", "--lab", "gliaabsent")
    assert r.returncode == 1
    assert r.stderr.startswith("lab 'gliaabsent' is not up: ")


def test_piped_tables_are_plain_rows(lab: Lab) -> None:
    r = glia("node", "list", "--node", "c1/n1", "--lab", lab.name)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == [
        "CLUSTER", "NAME", "CLUSTER", "ID", "NODE", "IP", "POD", "CIDR", "HEALTH", "IP"
    ]  # fmt: skip
    assert [line.split()[:2] for line in lines[1:]] == [["c1", "n1"], ["c1", "n2"]]
    assert all(line == line.rstrip() and "\x1b" not in line for line in lines)


def test_a_running_agent_answers_the_documented_errors(lab: Lab) -> None:
    client = lab.agent("c1/n1")
    with pytest.raises(AgentError) as ei:
        client.get("/v1/nope")
    assert (ei.value.http_status, ei.value.code) == (404, 7)
    with pytest.raises(AgentError) as ei:
        client.post("/v1/status", {})
    assert (ei.value.http_status, ei.value.code) == (405, 7)
    assert ei.value.msg == "method POST is not allowed on /v1/status (allowed: GET)"
