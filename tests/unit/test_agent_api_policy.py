"""``POST /v1/policy/trace`` and ``GET /v1/policy`` on a real ApiServer whose agent has no
kvstore connection yet: bad requests are named (400), a trace that needs no policy is
answered, and one whose side cannot be read says so (503) instead of guessing.
(The routes with etcd behind them: tests/e2e/test_policy_trace_mesh.py.)"""

from __future__ import annotations

import json

from test_agent_api import api, request

__all__ = ["api"]  # the fixture, used by name


async def test_a_trace_between_reserved_ends_needs_no_policy(api: str) -> None:
    body = {"src": "reserved:host", "dst": "ip:192.0.2.1", "proto": "icmp"}
    status, _, answer = await request(api, "POST", "/v1/policy/trace", json.dumps(body).encode())
    assert status == 200, answer
    assert answer["allowed"] is True and answer["verdict"] == "ALLOWED"
    assert answer["proto"] == "ICMP"
    assert answer["egress"]["reason"] == answer["ingress"]["reason"] == "not-an-endpoint"
    assert answer["resolved"]["dst"]["address"] == "192.0.2.1"
    assert answer["policies"] == {} and answer["warnings"] == []


async def test_bad_requests_name_the_field(api: str) -> None:
    cases = [
        ({"src": "app", "dst": "a=b", "dport": "80"}, "src: 'app' is not k=v"),
        ({"src": "a=b", "dst": "a=b", "dport": "80/SCTP"}, "dport: protocol 'SCTP'"),
        ({"src_identity": 70000, "dst": "a=b", "dport": "80"}, "src_identity: no identity 70000"),
        (
            {"src": "a=b", "dst": "a=b,io.cilium.k8s.policy.cluster=c2", "dport": "80"},
            "dst: cluster 'c2' (io.cilium.k8s.policy.cluster) is not in this agent's mesh "
            "(known: c1)",
        ),
    ]
    for body, msg in cases:
        status, _, answer = await request(
            api, "POST", "/v1/policy/trace", json.dumps(body).encode()
        )
        assert status == 400, (body, answer)
        assert answer["error"]["code"] == 7
        assert answer["error"]["msg"].startswith(msg), answer


async def test_a_side_that_cannot_be_read_is_not_judged(api: str) -> None:
    body = {"src": "reserved:world", "dst": "app=web", "dport": "80"}
    status, _, answer = await request(api, "POST", "/v1/policy/trace", json.dumps(body).encode())
    assert status == 503, answer
    assert answer["error"]["code"] == 11
    assert answer["error"]["msg"] == (
        "cannot judge the ingress at the destination: the policies of cluster c1 cannot be "
        "read: glia agent is not connected to the kvstore yet"
    )
    status, _, answer = await request(api, "GET", "/v1/policy")
    assert status == 503 and answer["error"]["code"] == 11
    status, _, answer = await request(api, "GET", "/v1/policy?name=a/b")
    assert status == 400 and answer["error"]["msg"] == "invalid name 'a/b'"
