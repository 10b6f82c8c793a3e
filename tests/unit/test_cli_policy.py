"""``glia policy trace`` and ``glia policy get`` against the fake agent: the request sent,
bad flags named before any agent is asked, the table, JSON, and the exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import typer
import yaml
from test_agent_client import FakeAgent, error, running_fake_agent
from test_policy_trace import ALLOW_C1_CLIENTS, DENY_8080, _trace
from typer.testing import CliRunner

from glia.cli import main
from glia.cli.policy import EXIT_DENIED, render

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
POLICIES = {"c1": [], "c2": [ALLOW_C1_CLIENTS, DENY_8080]}
ALLOWED = _trace(80, POLICIES)
DENIED = _trace(8080, POLICIES)
DST = "app=web,io.cilium.k8s.policy.cluster=c2"


@pytest.fixture
def app() -> typer.Typer:
    return main.app  # the real root: plain usage errors, as users see them


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with running_fake_agent() as a:
        yield a


def run(app: typer.Typer, *args: str) -> Any:
    return runner.invoke(app, list(args))


def test_trace_sends_the_request_and_prints_each_side(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("POST", "/v1/policy/trace", (200, DENIED))
    r = run(
        app,
        "policy",
        "trace",
        "--src",
        "app=client",
        "--dst",
        DST,
        "--dport",
        "8080",
        "--socket",
        agent.path,
    )
    assert r.exit_code == EXIT_DENIED, r.output
    assert agent.bodies("/v1/policy/trace") == [{"src": "app=client", "dst": DST, "dport": "8080"}]
    out = r.stdout.splitlines()
    assert out[0].startswith("From: endpoint 65836 of cluster c1 (app=client, ")
    assert out[1].startswith("To:   endpoint 131372 of cluster c2 (app=web, ")
    assert out[2] == "Port: 8080/TCP"
    assert "Egress (at the source, cluster c1): allowed" in out
    assert "Ingress (at the destination, cluster c2): DENIED" in out
    assert "  decided by: default/no-8080: spec.ingressDeny[0] (cluster c2)" in out
    assert out[-1] == "Final verdict: DENIED (decided at ingress)"
    assert "io.cilium.k8s.policy.cluster" not in r.stdout  # shown as "of cluster c2"


def test_trace_json_and_exit_codes(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("POST", "/v1/policy/trace", (200, ALLOWED))
    r = run(
        app,
        "policy",
        "trace",
        "--src-identity",
        "65836",
        "--dst-identity",
        "131372",
        "--dport",
        "80/tcp",
        "-o",
        "json",
        "--socket",
        agent.path,
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == ALLOWED
    assert agent.bodies("/v1/policy/trace")[-1] == {
        "src_identity": 65836,
        "dst_identity": 131372,
        "dport": "80/tcp",
    }
    agent.answer("POST", "/v1/policy/trace", (200, DENIED))
    r = run(
        app,
        "policy",
        "trace",
        "-s",
        "app=client",
        "-d",
        DST,
        "--dport",
        "8080",
        "-o",
        "yaml",
        "--socket",
        agent.path,
    )
    assert r.exit_code == EXIT_DENIED
    assert yaml.safe_load(r.stdout)["ingress"]["rule"]["id"] == (
        "default/no-8080: spec.ingressDeny[0]"
    )


@pytest.mark.parametrize(
    ("args", "flag", "says"),
    [
        (["--dst", "a=b", "--dport", "80"], "--src", "required"),
        (["--src", "app", "--dst", "a=b", "--dport", "80"], "--src", "'app' is not k=v"),
        (["--src", "a=b", "--dst", "reserved:nobody", "--dport", "80"], "--dst", "nobody"),
        (["--src", "a=b", "--dst", "ip:1.2.3", "--dport", "80"], "--dst", "IPv4"),
        (["--src", "a=b", "--dst", "c=d"], "--dport", "required"),
        (["--src", "a=b", "--dst", "c=d", "--dport", "80/sctp"], "--dport", "TCP or UDP"),
        (["--src", "a=b", "--dst", "c=d", "--dport", "99999"], "--dport", "1..65535"),
        (
            ["--src", "a=b", "--dst", "c=d", "--dport", "80", "--proto", "icmp"],
            "--dport",
            "ICMP has no port",
        ),
        (["--src", "a=b", "--dst", "c=d", "--proto", "gre"], "--proto", "TCP, UDP, ICMP"),
        (
            ["--src", "a=b", "--src-identity", "300", "--dst", "c=d", "--dport", "1"],
            "--src",
            "give --src or --src-identity, not both",
        ),
        (
            ["--src", "a=b", "--dst-identity", "9", "--dport", "1"],
            "--dst-identity",
            "9 is no identity",
        ),
    ],
)
def test_bad_flags_are_named_before_asking_the_agent(
    app: typer.Typer, agent: FakeAgent, args: list[str], flag: str, says: str
) -> None:
    r = run(app, "policy", "trace", *args, "--socket", agent.path)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for {flag}: " in r.stderr and says in r.stderr, r.stderr
    assert "Traceback" not in r.output
    assert agent.bodies("/v1/policy/trace") == []


def test_no_verdict_is_an_error_not_a_guess(app: typer.Typer, agent: FakeAgent) -> None:
    msg = "cannot judge the ingress at the destination: the policies of cluster c2 cannot be read"
    agent.answer("POST", "/v1/policy/trace", error(503, 11, msg + ": cluster c2 is connecting"))
    r = run(
        app,
        "policy",
        "trace",
        "--src",
        "app=client",
        "--dst",
        DST,
        "--dport",
        "80",
        "--socket",
        agent.path,
    )
    assert r.exit_code == 1
    assert msg in r.stderr and r.stdout == ""
    agent.answer("POST", "/v1/policy/trace", (200, {"nothing": True}))
    r = run(
        app,
        "policy",
        "trace",
        "--src",
        "a=b",
        "--dst",
        "c=d",
        "--dport",
        "80",
        "--socket",
        agent.path,
    )
    assert r.exit_code == 1 and "without a verdict" in r.stderr


def test_render_of_icmp_reserved_ends_and_warnings() -> None:
    answer = {
        **ALLOWED,
        "proto": "ICMP",
        "dport": 0,
        "resolved": {
            "src": {"kind": "reserved", "identity": 1, "name": "host", "address": None},
            "dst": {"kind": "reserved", "identity": 2, "name": "world", "address": "192.0.2.9"},
        },
        "warnings": ["cluster c2: skipped invalid record x: bad"],
    }
    lines = render(answer)
    assert lines[:3] == [
        "From: reserved:host",
        "To:   reserved:world (address 192.0.2.9)",
        "Port: ICMP",
    ]
    assert lines[-1] == "warning: cluster c2: skipped invalid record x: bad"
    assert "Egress (at the source): allowed" in lines


# -- glia policy get -----------------------------------------------------------------

WEB = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]},
    "status": {"cluster": "c1", "revision": 17, "endpoints": 2},
}


def test_policy_get_reuses_the_listing_with_revision_and_endpoints(
    app: typer.Typer, agent: FakeAgent
) -> None:
    view = {"cluster": "c1", "revision": 20, "policies": [WEB], "skipped": ["k: damaged"]}
    agent.answer("GET", "/v1/policy?namespace=default", (200, view))
    r = run(app, "policy", "get", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "NAME  RULES  ENDPOINT-SELECTOR  SECTIONS  ENDPOINTS  REVISION",
        "web   1      app=web            ingress           2        17",
    ]
    assert r.stderr == "warning: left out: k: damaged\n"
    agent.answer("GET", "/v1/policy?namespace=default&name=web", (200, view))
    r = run(app, "policy", "get", "web", "-o", "json", "--socket", agent.path)
    assert json.loads(r.stdout) == WEB
    agent.answer("GET", "/v1/policy", (200, {**view, "skipped": []}))
    r = run(app, "policy", "get", "-A", "-o", "yaml", "--socket", agent.path)
    assert yaml.safe_load(r.stdout) == {"apiVersion": "v1", "kind": "List", "items": [WEB]}
    agent.answer("GET", "/v1/policy?namespace=default&name=nope", (200, {**view, "policies": []}))
    r = run(app, "policy", "get", "nope", "--socket", agent.path)
    assert r.exit_code == 1 and 'ciliumnetworkpolicy "nope" not found' in r.stderr
    agent.answer("GET", "/v1/policy?namespace=shop", (200, {"policies": "x"}))
    r = run(app, "policy", "get", "-n", "shop", "--socket", agent.path)
    assert r.exit_code == 1 and "without a list of policies" in r.stderr
