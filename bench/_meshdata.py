"""Pure parts of ``bench/mesh.py``: synthetic remote-cluster state and the report's figures.

Imported by ``bench/mesh.py`` (the orchestration), ``bench/_meshtool.py`` (the
helper that runs inside the lab's namespaces and writes these records into
etcd) and ``tests/unit/test_bench_mesh.py``. No I/O.

- :func:`synthetic_records`: what a remote cluster of many pods holds in its
  etcd, record for record as its operator and agents would write it (pod CIDR
  allocations and blocks, node records, identities with their label index and
  a reference, one ipcache entry per pod). The records pass the checks every
  importing agent makes (:mod:`glia.validate`); the unit test feeds them
  through the agent's own table to prove it.
- :func:`propagation_record`: the ClusterService of the propagation runs, a
  global Service whose backends are addresses of one node of cluster B.
- :func:`latency_summary`, :func:`target`, :func:`failover_figures`: how the
  report turns samples into figures and verdicts.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import percentile  # bench/ is a folder of scripts
from glia.kvstore import keys
from glia.model import codec
from glia.model.identity import CLUSTER_LABEL, Identity, labels_key, make_cluster_identity
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node, PodCIDRAllocation
from glia.model.service import Backend, ClusterService, HealthCheck, Protocol, ServicePort

NAMESPACE = "default"
SYN_NODE = "syn-{:04d}"  # synthetic node names
FIRST_POD_HOST = 2  # .1 of a node's block is its gateway, as on a real node


# --- synthetic remote state ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyntheticCluster:
    """The pods one remote cluster holds: ``nodes`` x ``pods_per_node`` endpoints."""

    cluster: str
    cluster_id: int
    nodes: int
    pods_per_node: int
    identities: int
    blocks: tuple[str, ...]  # one pod CIDR per node, inside the cluster's pod pool, unused
    node_ip_base: str  # node i gets node_ip_base + i (outside pod pool and service CIDR)

    def __post_init__(self) -> None:
        if len(self.blocks) < self.nodes:
            raise ValueError(f"{self.cluster}: {self.nodes} nodes but {len(self.blocks)} blocks")
        if self.identities < 1:
            raise ValueError("at least one identity")
        for block in self.blocks[: self.nodes]:
            hosts = ipaddress.IPv4Network(block).num_addresses - FIRST_POD_HOST - 1
            if self.pods_per_node > hosts:
                raise ValueError(f"{block} holds {hosts} pods, not {self.pods_per_node}")

    @property
    def endpoints(self) -> int:
        return self.nodes * self.pods_per_node


def node_name(i: int) -> str:
    return SYN_NODE.format(i)


def pod_ips(block: str, count: int) -> list[str]:
    net = ipaddress.IPv4Network(block)
    first = int(net.network_address) + FIRST_POD_HOST
    return [str(ipaddress.IPv4Address(first + j)) for j in range(count)]


def free_blocks(pool: str, used: Sequence[str], prefixlen: int, count: int) -> list[str]:
    """``count`` blocks of ``pool`` overlapping none of ``used`` (lowest first)."""
    taken = [ipaddress.IPv4Network(u) for u in used]
    out: list[str] = []
    for block in ipaddress.IPv4Network(pool).subnets(new_prefix=prefixlen):
        if not any(block.overlaps(t) for t in taken):
            out.append(str(block))
            if len(out) == count:
                return out
    raise ValueError(f"pool {pool} has {len(out)} free /{prefixlen} blocks, {count} wanted")


def identity_numbers(spec: SyntheticCluster) -> list[int]:
    # The top of the cluster's range: real agents allocate from the bottom.
    return [make_cluster_identity(spec.cluster_id, 0xFFFF - i) for i in range(spec.identities)]


def synthetic_records(spec: SyntheticCluster) -> Iterator[tuple[str, bytes]]:
    """Every record of ``spec``, in the order a cluster grows: allocations before the
    nodes that hold them, identities before the entries that carry them."""
    c, cid = spec.cluster, spec.cluster_id
    base = int(ipaddress.IPv4Address(spec.node_ip_base))
    for i in range(spec.nodes):
        name, block = node_name(i), spec.blocks[i]
        yield keys.podcidr_node(c, name), codec.encode(PodCIDRAllocation(name, block))
        yield keys.podcidr_block(c, block), name.encode()
    for i in range(spec.nodes):
        name = node_name(i)
        node = Node(
            name=name,
            cluster=c,
            cluster_id=cid,
            node_ip=str(ipaddress.IPv4Address(base + i)),
            pod_cidr=spec.blocks[i],
            boot_id="glia-bench",
        )
        yield keys.node(c, name), codec.encode(node)
    numbers = identity_numbers(spec)
    for n in numbers:
        labels = {"app": f"syn-{n & 0xFFFF}", CLUSTER_LABEL: c}
        yield keys.identity_id(c, n), codec.encode(Identity(n, labels))
        yield keys.identity_labels(c, labels_key(labels)), str(n).encode()
        yield keys.identity_ref(c, n, node_name(0)), b""
    k = 0
    for i in range(spec.nodes):
        name, node_ip = node_name(i), str(ipaddress.IPv4Address(base + i))
        for ip in pod_ips(spec.blocks[i], spec.pods_per_node):
            entry = IPCacheEntry(ip, numbers[k % len(numbers)], node_ip, cid, name)
            k += 1
            yield keys.ipcache(c, name, ip), codec.encode(entry)


def batches(
    records: Iterator[tuple[str, bytes]], ops: int, size: int
) -> Iterator[list[tuple[str, bytes]]]:
    """Records grouped for etcd transactions of at most ``ops`` puts and ``size`` bytes."""
    batch: list[tuple[str, bytes]] = []
    used = 0
    for key, value in records:
        cost = len(key) + len(value) + 16
        if batch and (len(batch) >= ops or used + cost > size):
            yield batch
            batch, used = [], 0
        batch.append((key, value))
        used += cost
    if batch:
        yield batch


# --- the failover's backends ----------------------------------------------------------

WWW = "/www"


def backend_command(name: str) -> list[str]:
    """busybox httpd on port 80 answering ``name``, started by a shell that stays PID 1,
    so the server can be killed (and started again) while the container runs."""
    script = (
        f"mkdir -p {WWW} && echo {name} > {WWW}/index.html && httpd -p 80 -h {WWW}"
        " && while true; do sleep 1; done"
    )
    return ["sh", "-c", script]


# --- the propagation Service ------------------------------------------------------


def propagation_record(
    cluster: str,
    cluster_id: int,
    name: str,
    vip: str,
    port: int,
    node: str,
    ips: Sequence[str],
    ready: Sequence[bool],
) -> ClusterService:
    """Cluster B's record of the global Service ``name``: backends ``ips`` on ``node``."""
    if len(ips) != len(ready):
        raise ValueError("one readiness per backend")
    backends = [
        Backend(
            ip=ip,
            port=8080,
            protocol=Protocol.TCP,
            port_name="http",
            frontend_port=port,
            node=node,
            cluster=cluster,
            endpoint=f"{NAMESPACE}/{name}-{i}",
            ready=r,
        )
        for i, (ip, r) in enumerate(zip(ips, ready, strict=True))
    ]
    return ClusterService(
        namespace=NAMESPACE,
        name=name,
        cluster=cluster,
        cluster_id=cluster_id,
        cluster_ip=vip,
        ports=[ServicePort(port=port, target_port=8080, protocol=Protocol.TCP, name="http")],
        backends=backends,
        health=HealthCheck(),
        global_=True,
    )


def service_manifest(
    name: str,
    cluster_ip: str,
    *,
    selector: dict[str, str],
    affinity: str = "",
    interval: float | None = None,
    failures: int | None = None,
) -> dict[str, Any]:
    """A Kubernetes Service marked global, for ``glia apply``."""
    annotations = {"service.cilium.io/global": "true"}
    if affinity:
        annotations["service.cilium.io/affinity"] = affinity
    if interval is not None:
        annotations["service.glia.io/health-check-interval"] = str(interval)
    if failures is not None:
        annotations["service.glia.io/health-check-failure-threshold"] = str(failures)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations},
        "spec": {
            "selector": selector,
            "clusterIP": cluster_ip,
            "ports": [{"name": "http", "port": 80, "targetPort": 80}],
        },
    }


# --- the report -----------------------------------------------------------------


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int]:
    """n, p50, p90, p99, max and mean in ms (rounded to 0.1 ms)."""
    if not values_ms:
        raise ValueError("no samples")
    stats = {
        "p50": percentile(values_ms, 50),
        "p90": percentile(values_ms, 90),
        "p99": percentile(values_ms, 99),
        "max": max(values_ms),
        "mean": sum(values_ms) / len(values_ms),
    }
    return {"n": len(values_ms), **{k: round(v, 1) for k, v in stats.items()}}


def target(
    what: str, value: float | None, limit: float, unit: str, *, below: bool = True
) -> dict[str, Any]:
    """One target's verdict: ``met`` is None when it was not measured (``value`` None)."""
    met = None if value is None else (value < limit if below else value >= limit)
    return {"what": what, "value": value, "limit": limit, "unit": unit, "met": met}


@dataclass(frozen=True, slots=True)
class Request:
    """One request of the failover load: when it ran, and who answered (None: it failed)."""

    start: float  # time.monotonic()
    end: float
    backend: str | None
    error: str = ""


def parse_requests(doc: dict[str, Any]) -> list[Request]:
    return [Request(r[0], r[1], r[2], r[3] if len(r) > 3 else "") for r in doc["requests"]]


def failover_figures(
    requests: Sequence[Request],
    stopped: float,
    local: set[str],
    remote: set[str],
) -> dict[str, Any]:
    """What the load saw when the local backends stopped at ``stopped`` (monotonic).

    ``recovered_s``: from the stop until the end of the last failed request (no
    request fails after it); ``first_remote_s``: until the first answer from a
    remote backend; ``error_window_s``: from the start of the first failed
    request to the end of the last. Requests that began before the stop are
    counted before; ``after_stop`` counts the answers by side.
    """
    failed = [r for r in requests if r.backend is None]
    after = [r for r in requests if r.start >= stopped]
    first_remote = next((r.end for r in after if r.backend in remote), None)
    last_failed = max((r.end for r in failed), default=None)
    first_failed = min((r.start for r in failed), default=None)
    errors: dict[str, int] = {}
    for r in failed:
        errors[r.error or "failed"] = errors.get(r.error or "failed", 0) + 1
    late_local = [r for r in after if r.backend in local and r.start > (last_failed or stopped)]
    return {
        "requests": len(requests),
        "failed": len(failed),
        "failed_fraction": round(len(failed) / len(requests), 5) if requests else None,
        "failed_before_stop": sum(1 for r in failed if r.start < stopped),
        "errors": errors,
        "recovered_s": round(last_failed - stopped, 3) if last_failed is not None else 0.0,
        "first_remote_s": round(first_remote - stopped, 3) if first_remote is not None else None,
        "error_window_s": (
            round(last_failed - first_failed, 3)
            if last_failed is not None and first_failed is not None
            else 0.0
        ),
        "after_stop": {
            "local": sum(1 for r in after if r.backend in local),
            "remote": sum(1 for r in after if r.backend in remote),
            "failed": sum(1 for r in after if r.backend is None),
            "local_after_recovery": len(late_local),
        },
    }


def return_figures(
    requests: Sequence[Request], restarted: float, local: set[str]
) -> dict[str, Any]:
    """After the local servers start again at ``restarted``: until the first local answer,
    and how many requests failed from then on."""
    after = [r for r in requests if r.start >= restarted]
    first_local = next((r.end for r in after if r.backend in local), None)
    return {
        "first_local_s": round(first_local - restarted, 3) if first_local is not None else None,
        "failed": sum(1 for r in after if r.backend is None),
        "requests": len(after),
    }
