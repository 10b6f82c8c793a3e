"""Timing of the pure policy core (no kernel): computing entries for N endpoints and R rules.

Not a test. Run ``python bench/policy_core.py [--endpoints N] [--rules R] [--seed S]``;
prints one JSON object. It builds a synthetic cluster (identities shared by two
endpoints each, a quarter as many again from a second cluster, ten
namespaces) and R single-rule policies (ingress from an app or a tier on one or
two ports, some egress to CIDRs, some denies, some ``cluster`` entities), then
times, with :class:`glia.policy.engine.PolicyEngine`:

- ``full_s``: identities, then all policies at once, then every endpoint computed
  (``_cpu_s``: the process's CPU time, which a loaded machine does not inflate);
- ``one_by_one_s``: endpoints known first, then policies added one at a time,
  recomputing after each the subjects the engine reports (an agent that does
  not batch);
- ``policy_change_ms`` / ``identity_change_ms``: one policy replaced / one new
  identity, and the reported subjects recomputed (the median of 20).

The full benchmark of issue 9 (programming the BPF map too) is ``bench/policy.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from typing import Any

from glia.model.identity import NAMESPACE_LABEL
from glia.policy.cidr import CidrIdentities, policy_prefixes
from glia.policy.engine import PolicyEngine
from glia.policy.model import (
    CIDRRule,
    Entity,
    L4Proto,
    LabelSelector,
    PeerRule,
    Policy,
    PortProtocol,
    PortRule,
    Rule,
)

CLUSTER = "c1"


def identities(n_endpoints: int, rnd: random.Random) -> list[tuple[int, dict[str, str], str]]:
    out = []
    local = max(1, n_endpoints // 2)
    for i in range(local + local // 4):
        cluster = CLUSTER if i < local else "c2"
        labels = {
            "app": f"a{i}",
            "tier": f"t{i % 7}",
            "env": rnd.choice(["prod", "dev"]),
            NAMESPACE_LABEL: f"ns{i % 10}",
        }
        number = (2 if cluster == "c2" else 1) << 16 | (256 + i)
        out.append((number, labels, cluster))
    return out


def policies(
    n_rules: int, ids: list[tuple[int, dict[str, str], str]], rnd: random.Random
) -> list[Policy]:
    local = [labels for _, labels, c in ids if c == CLUSTER]
    out = []
    for i in range(n_rules):
        subject = rnd.choice(local)
        ns = subject[NAMESPACE_LABEL]
        peer = rnd.choice(ids)[1]
        ports = [PortProtocol(rnd.choice([80, 443, 8080, 5432]), 0, L4Proto.TCP)]
        if rnd.random() < 0.3:
            ports.append(PortProtocol(9000, 9100, L4Proto.ANY))
        if rnd.random() < 0.3:
            src = LabelSelector({"tier": peer["tier"]})  # broad: a seventh of the namespace
        else:
            src = LabelSelector({"app": peer["app"], NAMESPACE_LABEL: peer[NAMESPACE_LABEL]})
        ingress = [PeerRule(endpoints=[src], to_ports=[PortRule(ports)])]
        if rnd.random() < 0.05:
            ingress.append(PeerRule(entities=[Entity.CLUSTER], to_ports=[PortRule(ports[:1])]))
        egress: list[PeerRule] = []
        if rnd.random() < 0.1:
            egress.append(
                PeerRule(cidr_set=[CIDRRule(f"192.0.{i % 250}.0/24", [f"192.0.{i % 250}.128/25"])])
            )
        deny: list[PeerRule] = []
        if rnd.random() < 0.1:
            deny.append(PeerRule(to_ports=[PortRule([PortProtocol(22, 0, L4Proto.TCP)])]))
        rule = Rule(
            endpoint_selector=LabelSelector({"app": subject["app"]}),
            ingress=ingress,
            egress=egress,
            ingress_deny=deny,
        )
        out.append(Policy(namespace=ns, name=f"p{i}", cluster=CLUSTER, spec=rule))
    return out


def endpoint_labels(ids: list[tuple[int, dict[str, str], str]]) -> list[dict[str, str]]:
    # two endpoints per local identity: the same labels (they share entries)
    return [labels for _, labels, c in ids if c == CLUSTER for _ in range(2)]


def feed_cidrs(engine: PolicyEngine, cidrs: CidrIdentities, pols: list[Policy]) -> None:
    for prefix, n in cidrs.sync(policy_prefixes(pols)).added.items():
        engine.upsert_cidr_identity(n, prefix)


def run(n_endpoints: int, n_rules: int, seed: int) -> dict[str, Any]:
    rnd = random.Random(seed)
    ids = identities(n_endpoints, rnd)
    pols = policies(n_rules, ids, rnd)
    eps = endpoint_labels(ids)

    t0, c0 = time.perf_counter(), time.process_time()
    engine = PolicyEngine(CLUSTER)
    for number, labels, cluster in ids:
        engine.upsert_identity(number, labels, cluster)
    feed_cidrs(engine, CidrIdentities(), pols)
    engine.set_policies(pols)
    entries = sum(len(engine.compute(labels).entries) for labels in eps)
    full, full_cpu = time.perf_counter() - t0, time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    inc = PolicyEngine(CLUSTER)
    for number, labels, cluster in ids:
        inc.upsert_identity(number, labels, cluster)
    by_key = {}
    for labels in eps:
        inc.compute(labels)
        by_key[frozenset({**labels, "io.cilium.k8s.policy.cluster": CLUSTER}.items())] = labels
    cidrs = CidrIdentities()
    prefixes: set[str] = set()
    for p in pols:
        prefixes |= policy_prefixes([p])
        for prefix, n in cidrs.sync(prefixes).added.items():
            inc.upsert_cidr_identity(n, prefix)
        for key in inc.upsert_policy(p):
            inc.compute(by_key[key])
    one_by_one, one_by_one_cpu = time.perf_counter() - t0, time.process_time() - c0

    policy_ms = []
    for i in range(20):
        p = pols[rnd.randrange(len(pols))]
        changed = replace(p, spec=replace(p.spec, description=f"v{i}")) if p.spec else p
        t0 = time.perf_counter()
        for key in inc.upsert_policy(changed):
            inc.compute(by_key[key])
        policy_ms.append((time.perf_counter() - t0) * 1000)
    identity_ms = []
    for i in range(20):
        peer = rnd.choice(ids)[1]
        t0 = time.perf_counter()
        for key in inc.upsert_identity(0x10000 | (60000 + i), {**peer, "v": str(i)}, CLUSTER):
            inc.compute(by_key[key])
        identity_ms.append((time.perf_counter() - t0) * 1000)

    return {
        "endpoints": len(eps),
        "identities": len(ids),
        "rules": n_rules,
        "entries": entries,
        "full_s": round(full, 3),
        "full_cpu_s": round(full_cpu, 3),
        "one_by_one_s": round(one_by_one, 3),
        "one_by_one_cpu_s": round(one_by_one_cpu, 3),
        "policy_change_ms": round(statistics.median(policy_ms), 3),
        "identity_change_ms": round(statistics.median(identity_ms), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(json.dumps(run(args.endpoints, args.rules, args.seed)))


if __name__ == "__main__":
    main()
