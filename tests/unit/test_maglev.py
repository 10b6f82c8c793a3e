"""Maglev lookup tables (glia.service.maglev): balance, disruption, determinism."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glia.service.maglev import DEFAULT_M, is_prime, maglev_table, preferred_slots

M = DEFAULT_M

addresses = st.builds(
    lambda a, b, c, port: f"10.{a}.{b}.{c}:{port}",
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(1, 254),
    st.integers(1, 65535),
)


def backend_sets(lo: int, hi: int) -> st.SearchStrategy[list[str]]:
    return st.lists(addresses, min_size=lo, max_size=hi, unique=True)


slow = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_default_size_is_the_datapaths_and_prime() -> None:
    assert M == 16381 and is_prime(M)


@slow
@given(backend_sets(1, 100))
def test_every_backend_gets_its_share_within_one_percent(names: list[str]) -> None:
    table = maglev_table(names)
    assert len(table) == M
    counts = Counter(table)
    assert set(counts) == set(names)
    share = M / len(names)
    for name in names:
        # Round-robin fill: floor or ceil of M/N, so within one slot of the share.
        assert counts[name] in (M // len(names), -(-M // len(names)))
        assert abs(counts[name] - share) <= 0.01 * share


@slow
@given(backend_sets(2, 100), st.data())
def test_removing_a_backend_moves_its_slots_and_few_others(
    names: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(names))
    before = maglev_table(names)
    after = maglev_table([n for n in names if n != gone])
    others = [(a, b) for a, b in zip(before, after, strict=True) if a != gone]
    moved = sum(1 for a, b in others if a != b)
    assert gone not in after
    assert moved < 0.02 * len(others), f"{moved} of {len(others)} slots of others moved"


@settings(max_examples=30, deadline=None)
@given(backend_sets(1, 40), st.randoms())
def test_the_table_depends_on_the_set_only(names: list[str], rnd: random.Random) -> None:
    shuffled = list(names)
    rnd.shuffle(shuffled)
    assert maglev_table(shuffled, 251) == maglev_table(names, 251)
    assert maglev_table(names + names[:1], 251) == maglev_table(names, 251)  # duplicates


def test_tables_are_the_same_in_every_process() -> None:
    # Fixed answer: nodes running separately built glias must agree.
    assert maglev_table(["10.0.0.3:80", "10.0.0.1:80", "10.0.0.2:80"], 13) == [
        "10.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.1:80",
        "10.0.0.3:80", "10.0.0.1:80", "10.0.0.3:80", "10.0.0.1:80", "10.0.0.3:80",
        "10.0.0.2:80", "10.0.0.2:80", "10.0.0.2:80",
    ]  # fmt: skip


@given(st.text(min_size=1, max_size=30), st.sampled_from([2, 3, 13, 251, 16381]))
def test_preference_lists_are_permutations(name: str, m: int) -> None:
    assert sorted(preferred_slots(name, m, m)) == list(range(m))


@pytest.mark.parametrize(
    ("names", "m", "message"),
    [
        ([], 13, "at least one backend"),
        (["a"], 12, "not a prime"),
        ([str(i) for i in range(14)], 13, "do not fit"),
    ],
)
def test_bad_input_is_refused(names: list[str], m: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        maglev_table(names, m)


def test_a_single_backend_owns_every_slot() -> None:
    assert set(maglev_table(["10.1.1.1:80"])) == {"10.1.1.1:80"}
