"""IPAM address rules of issue 10: requested addresses, restart keeps its IP, cool-down."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from glia.ipam.local import AddressInUse, AddressRefused, LocalIPAM
from glia.ipam.pool import AddressNotAssignable, PoolExhausted, check_assignable, next_ip

CIDR = "10.1.1.0/24"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("10.1.2.5", "outside this node's pod CIDR 10.1.1.0/24"),
        ("10.1.1.0", "network address"),
        ("10.1.1.1", "gateway"),
        ("10.1.1.255", "broadcast"),
        ("nonsense", "not an IP address"),
        ("fd00::5", "not an IPv4 address"),
    ],
)
def test_check_assignable_names_the_reason(ip: str, reason: str) -> None:
    with pytest.raises(AddressNotAssignable, match=re.escape(reason)):
        check_assignable(CIDR, ip)


def test_check_assignable_canonical() -> None:
    assert check_assignable(CIDR, " 10.1.1.7 ") == "10.1.1.7"


def test_next_ip_skips_cooling_until_nothing_else_is_free() -> None:
    assert next_ip("10.0.0.0/29", [], cooling={"10.0.0.2": 5.0}) == "10.0.0.3"
    used = ["10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    # only cooling ones left: the one released longest ago
    assert next_ip("10.0.0.0/29", used[1:], cooling={"10.0.0.2": 9.0, "10.0.0.3": 2.0}) == (
        "10.0.0.3"
    )
    with pytest.raises(PoolExhausted):
        next_ip("10.0.0.0/29", [*used, "10.0.0.2"], cooling={"10.0.0.2": 1.0})


def test_requested_address(tmp_path: Path) -> None:
    ipam = LocalIPAM(tmp_path / "ipam.json", CIDR)
    assert ipam.allocate("a/eth0", "10.1.1.77") == "10.1.1.77"
    assert ipam.allocate("a/eth0", "10.1.1.77") == "10.1.1.77"  # ADD retried
    assert ipam.allocate("a/eth0") == "10.1.1.77"
    with pytest.raises(AddressInUse) as e:
        ipam.allocate("b/eth0", "10.1.1.77")
    assert e.value.owner == "a/eth0" and e.value.ip == "10.1.1.77"
    with pytest.raises(AddressRefused, match=re.escape("outside this node's pod CIDR 10.1.1.0/24")):
        ipam.allocate("b/eth0", "10.1.2.77")
    with pytest.raises(AddressRefused, match=re.escape("holds 10.1.1.77 already")):
        ipam.allocate("a/eth0", "10.1.1.78")
    assert ipam.allocations() == {"10.1.1.77": "a/eth0"}  # refusals changed nothing


def test_same_owner_gets_its_address_back(tmp_path: Path) -> None:
    """podman restart: DEL then ADD with the same container id."""
    clock = Clock()
    ipam = LocalIPAM(tmp_path / "ipam.json", CIDR, clock=clock)
    ip = ipam.allocate("c1/eth0")
    ipam.allocate("c2/eth0")
    assert ipam.release_owner("c1/eth0") == [ip]
    clock.now += 10_000  # long after the cool-down: still its own address
    assert ipam.allocate("c1/eth0") == ip


def test_released_address_cools_down_across_restarts(tmp_path: Path) -> None:
    clock = Clock()
    f = tmp_path / "ipam.json"
    ipam = LocalIPAM(f, "10.0.0.0/29", cooldown=60, clock=clock)  # 10.0.0.2 .. .6
    first = ipam.allocate("a/eth0")
    assert first == "10.0.0.2"
    assert ipam.release(first)
    # a restarted agent reads the release time from the file
    again = LocalIPAM(f, "10.0.0.0/29", cooldown=60, clock=clock)
    assert again.cooling() == {first: 1000.0}
    got = [again.allocate(f"n{i}/eth0") for i in range(4)]
    assert first not in got  # .3 .. .6 first, round robin
    clock.now += 61  # cool-down over: the address is free for anyone
    assert again.cooling() == {}
    assert again.allocate("x/eth0") == first


def test_requested_cooling_address_is_given(tmp_path: Path) -> None:
    clock = Clock()
    ipam = LocalIPAM(tmp_path / "ipam.json", CIDR, clock=clock)
    ip = ipam.allocate("a/eth0")
    ipam.release(ip)
    assert ipam.allocate("b/eth0", ip) == ip  # asked for explicitly
    assert ipam.cooling() == {}


def test_old_state_file_without_released_loads(tmp_path: Path) -> None:
    f = tmp_path / "ipam.json"
    f.write_text('{"cidr": "10.1.1.0/24", "allocations": {"10.1.1.2": "a/eth0"}, "last": null}')
    ipam = LocalIPAM(f, CIDR)
    assert ipam.allocations() == {"10.1.1.2": "a/eth0"} and ipam.cooling() == {}
    assert ipam.holder("10.1.1.2") == "a/eth0"
