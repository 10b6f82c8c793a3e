"""A dead agent's keys vanish with its lease; the other node stops routing to it.

Uses a lab of its own ("glial", one cluster of two nodes), because its agent
stays dead for a while: the session lab stays healthy for the other tests.
The agent of c1/n1 runs with a 5 s lease and is killed with SIGKILL (no
revoke, no clean-up). Shown here:

- within the lease's TTL plus a margin, etcd holds none of its node,
  endpoint, ipcache or identity-reference keys, and c1/n2 has dropped its
  endpoints and its node from its BPF ipcache and its node list (after the
  grace period in which a revoked key's owner may still put it back,
  glia.kvstore.grace);
- started again, the agent adopts its endpoint and publishes it anew, and the
  two nodes' containers reach each other again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from labhelpers import etcd_keys, lab_dir, leftovers, ping, wait_for

from glia.kvstore import keys
from glia.kvstore.grace import DEFAULT_GRACE
from glia.lab.lab import Lab
from glia.lab.podman import Container

pytestmark = [pytest.mark.e2e, pytest.mark.root]

LAB = "glial"
TTL = 5  # the killed agent's lease, seconds
MARGIN = 4.0  # etcd checks expiry every 500 ms; the watch then reaches c1/n2


@pytest.fixture(scope="module")
def own_lab() -> Iterator[Lab]:
    lab = Lab.open(LAB, lab_dir(LAB), clusters=1, nodes=2)
    try:
        lab.up(recreate=True)
        lab.reconfigure_agent("c1/n1", lease_ttl=TTL)
        yield lab
    finally:
        report = lab.down()
        left = leftovers(lab)
        assert not left and not report.problems, (left, report.problems)


def _ip(ctr: Container) -> str:
    assert ctr.ip, f"{ctr.name} has no IP"
    return ctr.ip


def _n1_keys(lab: Lab) -> list[str]:
    """c1/n1's leased keys in etcd (node, endpoints, ipcache, identity references)."""
    stored = etcd_keys(lab, "c1", keys.STATE)
    own = (
        keys.identity_refs("c1", "n1"),
        keys.endpoints("c1", "n1"),
        keys.ipcaches("c1", "n1"),
    )
    return sorted(k for k in stored if k == keys.node("c1", "n1") or k.startswith(own))


def _n2_ipcache(lab: Lab) -> set[str]:
    return {str(e["prefix"]) for e in lab.agent("c1/n2").bpf_ipcache()}


def test_a_killed_agents_keys_expire_with_its_lease(own_lab: Lab) -> None:
    lab = own_lab
    a = lab.run_container("c1/n1", "glia-le-a", labels={"app": "a"})
    b = lab.run_container("c1/n2", "glia-le-b", labels={"app": "b"})
    for src, dst in [(a, b), (b, a)]:
        wait_for(f"ping {src.name} -> {dst.name}", lambda s=src, d=dst: ping(lab, s, _ip(d)))
    n1_ip = f"{lab.node('c1/n1').ip}/32"
    wait_for("a's identity reference", lambda: len(_n1_keys(lab)) == 4)
    before = _n1_keys(lab)
    assert {f"{_ip(a)}/32", n1_ip} <= _n2_ipcache(lab)

    lab.stop_agent("c1/n1", kill=True, stay_down=True)  # dead until started below
    killed = time.monotonic()
    assert _n1_keys(lab) == before  # nothing withdrew them: only the lease can

    wait_for("c1/n1's keys to expire", lambda: _n1_keys(lab) == [], timeout=TTL + MARGIN)
    assert time.monotonic() - killed <= TTL + MARGIN
    wait_for(
        "c1/n2 to drop c1/n1 from its ipcache",
        lambda: not {f"{_ip(a)}/32", n1_ip} & _n2_ipcache(lab),
        timeout=MARGIN + DEFAULT_GRACE,
    )
    assert [n["name"] for n in lab.agent("c1/n2").nodes()] == ["n2"]
    assert not ping(lab, b, _ip(a))  # no route to a node that is gone

    # Back again: the endpoint is adopted and published on a new lease.
    lab.start_agent("c1/n1", wait=True)
    wait_for("c1/n1's keys again", lambda: _n1_keys(lab) == before)
    for src, dst in [(a, b), (b, a)]:
        wait_for(f"ping {src.name} -> {dst.name}", lambda s=src, d=dst: ping(lab, s, _ip(d)))
