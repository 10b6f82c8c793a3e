"""ClusterIP arithmetic (pure): usable addresses of a service CIDR, and allocation."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glia.service.clusterip import (
    ClusterIPError,
    ClusterIPExhausted,
    allocate,
    capacity,
    check,
    parse_cidr,
)


def test_check() -> None:
    assert check("100.64.0.1", "100.64.0.0/24") is None  # the first usable one is allocatable
    assert check("100.64.0.254", "100.64.0.0/24") is None
    assert check("100.64.0.0", "100.64.0.0/24") == (
        "100.64.0.0 is the network address of the service CIDR 100.64.0.0/24"
    )
    assert check("100.64.0.255", "100.64.0.0/24") == (
        "100.64.0.255 is the broadcast address of the service CIDR 100.64.0.0/24"
    )
    assert check("100.64.1.0", "100.64.0.0/24") == (
        "100.64.1.0 is outside the service CIDR 100.64.0.0/24"
    )
    assert check("nope", "100.64.0.0/24") == "expected an IPv4 address, got 'nope'"


def test_bad_cidrs() -> None:
    for bad, why in [
        ("100.64.0.1/24", "not a network"),
        ("fd00::/64", "not IPv4"),
        ("100.64.0.0/31", "too small"),
        ("x", "not a network"),
    ]:
        with pytest.raises(ClusterIPError, match=why):
            parse_cidr(bad)
    assert capacity("100.64.0.0/30") == 2
    assert capacity("100.64.0.0/15") == 131070


def test_allocate_skips_used_and_fills_the_range() -> None:
    cidr = "100.64.0.0/29"
    rng = random.Random(1)
    used = ["100.64.0.3", "10.0.0.1", "garbage"]
    got = allocate(cidr, used, 5, rng=rng)
    assert sorted(got, key=ipaddress.IPv4Address) == [
        "100.64.0.1",
        "100.64.0.2",
        "100.64.0.4",
        "100.64.0.5",
        "100.64.0.6",
    ]
    with pytest.raises(ClusterIPExhausted, match="has 0 free ClusterIPs, 1 needed"):
        allocate(cidr, [*used, *got], 1)


@given(
    st.integers(24, 30),
    st.lists(st.integers(0, 255), max_size=40),
    st.integers(1, 10),
    st.integers(0, 2**32),
)
@settings(max_examples=200, deadline=None)
def test_allocate_never_hands_out_used_or_unusable(
    prefix: int, used_offsets: list[int], count: int, seed: int
) -> None:
    net = ipaddress.IPv4Network(f"100.64.0.0/{prefix}")
    used = [str(net.network_address + (o % net.num_addresses)) for o in used_offsets]
    free = [str(h) for h in net.hosts() if str(h) not in used]
    try:
        got = allocate(str(net), used, count, rng=random.Random(seed))
    except ClusterIPExhausted:
        assert len(free) < count
        return
    assert len(got) == count == len(set(got))
    assert set(got) <= set(free)
