"""Maglev consistent hashing (Eisenbud et al., NSDI 2016): the lookup table.

Pure. Called by glia.service.lbplan for services that ask for Maglev
(``service.glia.io/lb-algorithm: maglev``); the table, mapped to backend ids,
goes into the glia_lb4_mgl_v1 map, and the datapath picks
``table[hash(5-tuple) % M]`` for a new connection.

Properties (tests/unit/test_maglev.py):
- every backend gets floor(M/N) or ceil(M/N) slots (the fill is round-robin);
- removing a backend moves its own slots and only a small share of the
  others' (about 1.4% at 100 backends with M = 16381);
- the table depends only on the set of backend names, never on their order
  or on the process: names are hashed with BLAKE2b (Python's ``hash`` is
  salted per process), so every node computes the same table.

Preference lists: the paper's ``offset + j * skip`` progressions make two
backends with the same ``skip`` (a birthday collision among M - 1 values:
about one 100-backend set in three) walk the same sequence shifted, so they
contend slot after slot, and removing one moves most of the other's slots
(2.5-3% disruption seen here). Each backend's list is instead
``j -> (a * inv(j + b) + c) mod M``, ``inv`` the inverse modulo the prime M
(0 -> 0): still a permutation of all M slots, as cheap with a precomputed
inverse table, and two lists are shifts of each other only if both ``a`` and
``c`` collide.

Backends are named by a stable string, by convention ``"ip:port"``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

DEFAULT_M = 16381  # prime; the datapath's table size (GLIA_LB_MAGLEV_M)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


@functools.cache
def _inverses(m: int) -> tuple[int, ...]:
    """inv[x] = x^-1 mod m (m prime), inv[0] = 0; linear-time recurrence."""
    inv = [0, 1] + [0] * (m - 2)
    for i in range(2, m):
        inv[i] = (m - (m // i) * inv[m % i] % m) % m
    return tuple(inv)


def preference(name: str, m: int) -> tuple[int, int, int]:
    """(a, b, c) of a backend's preference list: slot j is (a * inv(j + b) + c) % m."""
    digest = hashlib.blake2b(name.encode(), digest_size=24, person=b"glia-maglev").digest()
    a = int.from_bytes(digest[:8], "little") % (m - 1) + 1
    b = int.from_bytes(digest[8:16], "little") % m
    c = int.from_bytes(digest[16:], "little") % m
    return a, b, c


def preferred_slots(name: str, m: int, count: int) -> list[int]:
    """The first ``count`` slots of a backend's preference list (for tests and tools)."""
    inv = _inverses(m)
    a, b, c = preference(name, m)
    return [(a * inv[(j + b) % m] + c) % m for j in range(count)]


def maglev_table(names: Iterable[str], m: int = DEFAULT_M) -> list[str]:
    """The lookup table: slot -> backend name, ``m`` slots.

    ``m`` must be a prime (so the inverse, hence every preference list, is a
    permutation) at least the number of distinct backends.
    """
    backends = sorted(set(names))
    n = len(backends)
    if n == 0:
        raise ValueError("a Maglev table needs at least one backend")
    if not is_prime(m):
        raise ValueError(f"Maglev table size {m} is not a prime")
    if n > m:
        raise ValueError(f"{n} backends do not fit a Maglev table of {m} slots")
    inv = _inverses(m)
    prefs = [preference(name, m) for name in backends]
    muls = [a for a, _, _ in prefs]
    adds = [c for _, _, c in prefs]
    nexts = [b for _, b, _ in prefs]  # position in inv of each backend's next candidate
    entry = [-1] * m
    filled = 0
    # Round-robin: each backend in turn takes its next preferred free slot.
    while True:
        for i in range(n):
            a, c, j = muls[i], adds[i], nexts[i]
            while True:
                slot = (a * inv[j] + c) % m
                j += 1
                if j == m:
                    j = 0
                if entry[slot] < 0:
                    break
            nexts[i] = j
            entry[slot] = i
            filled += 1
            if filled == m:
                return [backends[k] for k in entry]
