"""PolicyMap.apply_many (many subjects in a few syscalls) against the real maps.

It must leave the maps exactly as :meth:`PolicyMap.apply` one subject at a
time does: new subjects, changed ones (blocks added, replaced, removed) and
subjects turned off; and BPFMap.update_raw / delete_raw must give the same
result through their one-by-one fallback (a map type without batch ops).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import netns_util as nu
import pytest

from glia.datapath import libbpf
from glia.datapath.loader import Datapath, unpin
from glia.datapath.policymap import PolicyMap, PolicyMapRow
from glia.model.identity import NAMESPACE_LABEL
from glia.policy.engine import PolicyEngine
from glia.policy.entries import EndpointPolicy
from glia.policy.manifest import parse_policy
from glia.policy.model import Policy

APPS = ("a", "b", "c", "d")
IDS = {app: 0x10100 + i for i, app in enumerate(APPS)}


def labels(app: str) -> dict[str, str]:
    return {"app": app, NAMESPACE_LABEL: "default"}


def port_spec(port: str) -> dict[str, object]:
    lo, _, hi = port.partition("-")
    return {"port": lo, "endPort": int(hi)} if hi else {"port": lo}


def policy(name: str, subject: str, peers: list[str], ports: list[str]) -> Policy:
    return parse_policy(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": subject}},
                "ingress": [
                    {
                        "fromEndpoints": [{"matchLabels": {"app": p}} for p in peers],
                        "toPorts": [{"ports": [port_spec(port) for port in ports]}],
                    }
                ],
                "egress": [{"toEndpoints": [{"matchLabels": {"app": peers[0]}}]}],
            },
        },
        cluster="c1",
    )


def compute(specs: list[Policy]) -> dict[int, EndpointPolicy]:
    engine = PolicyEngine("c1")
    for app, n in IDS.items():
        engine.upsert_identity(n, labels(app), "c1")
    engine.set_policies(specs)
    return {IDS[app]: engine.compute(labels(app)) for app in APPS}


BEFORE = [
    policy("pa", "a", ["b", "c"], ["80", "8000-8100"]),
    policy("pb", "b", ["a"], ["443"]),
    policy("pc", "c", ["d"], ["53"]),
]
# a: ports change (blocks replaced and removed); b: unchanged; c: no policy any
# more (turned off); d: newly selected.
AFTER = [
    policy("pa", "a", ["b", "d"], ["80", "8000-8063"]),
    policy("pb", "b", ["a"], ["443"]),
    policy("pd", "d", ["a"], ["9000-9999"]),
]


@pytest.fixture
def pins() -> Iterator[Path]:
    nu.require_bpffs()
    nu.cleanup_stale()
    path = nu.pin_dir("polbulk")
    unpin(path)
    try:
        yield path
    finally:
        unpin(path)


def snapshot(pm: PolicyMap) -> tuple[list[PolicyMapRow], dict[int, tuple[bool, bool]]]:
    return list(pm.rows()), pm.enforced()


def one_by_one(
    pm: PolicyMap, old: dict[int, EndpointPolicy], new: dict[int, EndpointPolicy]
) -> int:
    return sum(pm.apply(s, old.get(s), new.get(s)) for s in sorted(set(old) | set(new)))


def changes(
    old: dict[int, EndpointPolicy], new: dict[int, EndpointPolicy]
) -> list[tuple[int, EndpointPolicy | None, EndpointPolicy | None]]:
    return [(s, old.get(s), new.get(s)) for s in sorted(set(old) | set(new))]


def test_apply_many_matches_apply_one_by_one(pins: Path) -> None:
    before, after = compute(BEFORE), compute(AFTER)
    assert before[IDS["c"]].ingress_enforced and not after[IDS["c"]].ingress_enforced
    with Datapath(pins, nu.bpf_objects()) as dp:
        dp.load()
        pm = dp.policy
        n1 = one_by_one(pm, {}, before)
        want_before = snapshot(pm)
        n2 = one_by_one(pm, before, after)
        want_after = snapshot(pm)
        one_by_one(pm, after, {})
        assert snapshot(pm) == ([], {})

        assert pm.apply_many(changes({}, before)) == n1 > 0
        assert snapshot(pm) == want_before
        assert pm.apply_many(changes(before, after)) == n2 > 0
        assert snapshot(pm) == want_after
        assert pm.apply_many(changes(after, after)) == 0
        pm.apply_many(changes(after, {}))
        assert snapshot(pm) == ([], {})


def test_raw_writes_fall_back_to_one_by_one(pins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels without batch ops on a map type answer ENOTSUPP: same result."""
    before, after = compute(BEFORE), compute(AFTER)
    with Datapath(pins, nu.bpf_objects()) as dp:
        dp.load()
        pm = dp.policy
        pm.apply_many(changes({}, before))
        want_before = snapshot(pm)
        pm.apply_many(changes(before, after))
        want_after = snapshot(pm)
        pm.apply_many(changes(after, {}))

        lib = libbpf.lib()
        refused: list[int] = []

        def unsupported(*_args: object) -> int:
            refused.append(1)
            return -524  # ENOTSUPP

        monkeypatch.setattr(lib, "bpf_map_update_batch", unsupported)
        monkeypatch.setattr(lib, "bpf_map_delete_batch", unsupported)
        pm.apply_many(changes({}, before))
        assert refused
        assert snapshot(pm) == want_before
        pm.apply_many(changes(before, after))
        assert snapshot(pm) == want_after
        pm.apply_many(changes(after, {}))
        assert snapshot(pm) == ([], {})
