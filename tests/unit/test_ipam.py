"""IPAM: pure allocation rules and the persisted per-node allocator."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glia.ipam.local import LocalIPAM
from glia.ipam.pool import PoolExhausted, gateway_ip, next_block, next_ip


def test_gateway_is_first_host() -> None:
    assert gateway_ip("10.1.2.0/24") == "10.1.2.1"


def test_next_ip_skips_network_gateway_broadcast() -> None:
    assert next_ip("10.1.2.0/30", []) == "10.1.2.2"
    with pytest.raises(PoolExhausted):
        next_ip("10.1.2.0/30", ["10.1.2.2"])


def test_next_ip_round_robin_after_last() -> None:
    assert next_ip("10.1.2.0/24", ["10.1.2.2"], after="10.1.2.9") == "10.1.2.10"
    assert next_ip("10.1.2.0/24", [], after="10.1.2.254") == "10.1.2.2"


@settings(max_examples=50)
@given(st.sets(st.integers(min_value=2, max_value=13), max_size=11))
def test_next_ip_never_returns_used(used_hosts: set[int]) -> None:
    used = [f"10.0.0.{h}" for h in used_hosts]
    ip = next_ip("10.0.0.0/28", used)
    assert ip not in used
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.0.0.0/28")
    assert ip not in ("10.0.0.0", "10.0.0.1", "10.0.0.15")


def test_next_block() -> None:
    assert next_block("10.1.0.0/16", 24, []) == "10.1.0.0/24"
    assert next_block("10.1.0.0/16", 24, ["10.1.0.0/24", "10.1.2.0/24"]) == "10.1.1.0/24"
    with pytest.raises(PoolExhausted):
        next_block("10.1.0.0/23", 24, ["10.1.0.0/24", "10.1.1.0/24"])
    with pytest.raises(ValueError, match="node mask"):
        next_block("10.1.0.0/16", 8, [])


def test_local_ipam_persists_and_never_reuses(tmp_path: Path) -> None:
    f = tmp_path / "ipam.json"
    a = LocalIPAM(f, "10.1.1.0/24")
    ip1 = a.allocate("c1/eth0")
    ip2 = a.allocate("c2/eth0")
    assert ip1 != ip2
    assert a.allocate("c1/eth0") == ip1  # idempotent per owner
    b = LocalIPAM(f, "10.1.1.0/24")  # "restarted agent"
    assert b.allocations() == {ip1: "c1/eth0", ip2: "c2/eth0"}
    ip3 = b.allocate("c3/eth0")
    assert ip3 not in (ip1, ip2)
    assert b.release(ip1)
    assert not b.release(ip1)
    # a just-released IP is not handed out next
    assert b.allocate("c4/eth0") != ip1


def test_local_ipam_cidr_change_discards(tmp_path: Path) -> None:
    f = tmp_path / "ipam.json"
    LocalIPAM(f, "10.1.1.0/24").allocate("x")
    assert LocalIPAM(f, "10.1.2.0/24").allocations() == {}
