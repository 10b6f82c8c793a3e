"""Typed handles on the node's own maps: endpoints, ipcache, metrics and config.

Each speaks in strings and small frozen dataclasses and converts to the C
structs (glia.datapath.structs) inside, over a generic
:class:`~glia.datapath.maps.BPFMap`. Created by glia.datapath.loader.Datapath
(from the loaded objects) or with ``open_pinned`` by readers such as the CLI;
written by the agent (endpoints by glia.endpoint, the ipcache by
glia.agent.ipcache).
"""

from __future__ import annotations

import struct
from ctypes import c_uint32
from dataclasses import dataclass
from pathlib import Path

from glia.datapath.addrs import (
    be16_to_int,
    be32_to_ip,
    int_to_be16,
    ip_to_be32,
    mac_to_bytes,
    mac_to_str,
    prefix_to_key,
)
from glia.datapath.drop import REASON_MAX, Direction, Reason
from glia.datapath.errors import DatapathError
from glia.datapath.maps import BPFMap
from glia.datapath.mapspecs import CONFIG, ENDPOINTS, IPCACHE, METRICS
from glia.datapath.structs import (
    MacBytes,
    glia_config,
    glia_endpoint,
    glia_endpoint_key,
    glia_ipcache_entry,
    glia_ipcache_key,
    glia_metrics,
)


def _order(be32: int) -> bytes:
    """Sort key of a be32 address: its network-order bytes sort numerically."""
    return struct.pack("=I", be32)


# --- endpoints ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """A local endpoint as the datapath needs it (glia_endpoint)."""

    ifindex: int  # host-side veth
    identity: int
    mac: str  # the pod's MAC
    node_mac: str  # host-side veth MAC (the pod's gateway)
    flags: int = 0

    def __post_init__(self) -> None:
        mac_to_bytes(self.mac)
        mac_to_bytes(self.node_mac)
        if self.ifindex <= 0:
            raise ValueError(f"endpoint ifindex must be positive, not {self.ifindex}")


def _endpoint_key(ip: str) -> glia_endpoint_key:
    return glia_endpoint_key(ip=ip_to_be32(ip))


def _endpoint_value(info: EndpointInfo) -> glia_endpoint:
    return glia_endpoint(
        ifindex=info.ifindex,
        identity=info.identity,
        mac=MacBytes(*mac_to_bytes(info.mac)),
        node_mac=MacBytes(*mac_to_bytes(info.node_mac)),
        flags=info.flags,
    )


def _endpoint_info(v: glia_endpoint) -> EndpointInfo:
    return EndpointInfo(
        ifindex=v.ifindex,
        identity=v.identity,
        mac=mac_to_str(bytes(v.mac)),
        node_mac=mac_to_str(bytes(v.node_mac)),
        flags=v.flags,
    )


class EndpointMap:
    """glia_endpts_v1: endpoint IP -> EndpointInfo."""

    def __init__(self, m: BPFMap[glia_endpoint_key, glia_endpoint]) -> None:
        self.map = m

    @classmethod
    def open_pinned(cls, pin_dir: Path) -> EndpointMap:
        return cls(BPFMap.open_pinned(pin_dir, ENDPOINTS, glia_endpoint_key, glia_endpoint))

    def upsert(self, ip: str, info: EndpointInfo) -> None:
        self.map.update(_endpoint_key(ip), _endpoint_value(info))

    def delete(self, ip: str) -> bool:
        return self.map.delete(_endpoint_key(ip))

    def get(self, ip: str) -> EndpointInfo | None:
        v = self.map.lookup(_endpoint_key(ip))
        return None if v is None else _endpoint_info(v)

    def upsert_many(self, entries: dict[str, EndpointInfo]) -> None:
        """Batch form of upsert (agent start-up restoring many endpoints)."""
        self.map.update_batch(
            [(_endpoint_key(ip), _endpoint_value(i)) for ip, i in entries.items()]
        )

    def items(self) -> list[tuple[str, EndpointInfo]]:
        rows = [(_order(k.ip), be32_to_ip(k.ip), _endpoint_info(v)) for k, v in self.map.items()]
        return [(ip, info) for _, ip, info in sorted(rows, key=lambda r: r[0])]

    def close(self) -> None:
        self.map.close()


# --- ipcache -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IPCacheInfo:
    """Where an IP or prefix lives (glia_ipcache_entry)."""

    identity: int
    tunnel_endpoint: str | None  # node IP hosting it; None when not tunnelled
    cluster_id: int
    flags: int = 0

    def __post_init__(self) -> None:
        if self.tunnel_endpoint is not None:
            ip_to_be32(self.tunnel_endpoint)
        if not 0 <= self.cluster_id <= 255:
            raise ValueError(f"cluster id {self.cluster_id} does not fit the ipcache (0..255)")


def _ipcache_key(prefix: str) -> glia_ipcache_key:
    prefixlen, ip = prefix_to_key(prefix)
    return glia_ipcache_key(prefixlen=prefixlen, ip=ip)


def _ipcache_value(info: IPCacheInfo) -> glia_ipcache_entry:
    tunnel = 0 if info.tunnel_endpoint is None else ip_to_be32(info.tunnel_endpoint)
    return glia_ipcache_entry(
        identity=info.identity, tunnel_endpoint=tunnel, cluster_id=info.cluster_id, flags=info.flags
    )


def _ipcache_info(v: glia_ipcache_entry) -> IPCacheInfo:
    tunnel = None if v.tunnel_endpoint == 0 else be32_to_ip(v.tunnel_endpoint)
    return IPCacheInfo(
        identity=v.identity, tunnel_endpoint=tunnel, cluster_id=v.cluster_id, flags=v.flags
    )


class IPCacheMap:
    """glia_ipcache_v1: prefix ("10.1.1.5" or "10.2.0.0/16") -> IPCacheInfo."""

    def __init__(self, m: BPFMap[glia_ipcache_key, glia_ipcache_entry]) -> None:
        self.map = m

    @classmethod
    def open_pinned(cls, pin_dir: Path) -> IPCacheMap:
        return cls(BPFMap.open_pinned(pin_dir, IPCACHE, glia_ipcache_key, glia_ipcache_entry))

    def upsert(self, prefix: str, info: IPCacheInfo) -> None:
        self.map.update(_ipcache_key(prefix), _ipcache_value(info))

    def upsert_many(self, entries: dict[str, IPCacheInfo]) -> None:
        self.map.update_batch([(_ipcache_key(p), _ipcache_value(i)) for p, i in entries.items()])

    def delete(self, prefix: str) -> bool:
        return self.map.delete(_ipcache_key(prefix))

    def lookup(self, ip: str) -> IPCacheInfo | None:
        """Longest-prefix match for one address, as the datapath sees it."""
        v = self.map.lookup(glia_ipcache_key(prefixlen=32, ip=ip_to_be32(ip)))
        return None if v is None else _ipcache_info(v)

    def items(self) -> list[tuple[str, IPCacheInfo]]:
        rows = [
            ((_order(k.ip), k.prefixlen), f"{be32_to_ip(k.ip)}/{k.prefixlen}", _ipcache_info(v))
            for k, v in self.map.items()
        ]
        return [(prefix, info) for _, prefix, info in sorted(rows, key=lambda r: r[0])]

    def close(self) -> None:
        self.map.close()


# --- metrics -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricRow:
    reason: Reason
    direction: str  # "ingress" | "egress"
    packets: int
    bytes: int


class MetricsMap:
    """glia_metrics_v1: per-CPU counters per (reason, direction), summed here."""

    def __init__(self, m: BPFMap[c_uint32, glia_metrics]) -> None:
        self.map = m

    @classmethod
    def open_pinned(cls, pin_dir: Path) -> MetricsMap:
        return cls(BPFMap.open_pinned(pin_dir, METRICS, c_uint32, glia_metrics))

    def read(self) -> list[MetricRow]:
        """Non-zero rows, by reason then direction."""
        rows = []
        for index in range(REASON_MAX * len(Direction)):
            per_cpu = self.map.lookup_percpu(c_uint32(index))
            if per_cpu is None:
                continue
            packets = sum(v.packets for v in per_cpu)
            nbytes = sum(v.bytes for v in per_cpu)
            if packets == 0 and nbytes == 0:
                continue
            code, direction = divmod(index, len(Direction))
            try:
                reason = Reason(code)
            except ValueError:
                raise DatapathError(
                    f"metrics map counts unknown reason {code}: the loaded programs are "
                    "from another glia version"
                ) from None
            rows.append(MetricRow(reason, Direction(direction).label, packets, nbytes))
        return rows

    def get(self, reason: Reason, direction: Direction) -> tuple[int, int]:
        """(packets, bytes) of one row."""
        per_cpu = self.map.lookup_percpu(c_uint32(reason * len(Direction) + direction))
        if per_cpu is None:
            return 0, 0
        return sum(v.packets for v in per_cpu), sum(v.bytes for v in per_cpu)

    def close(self) -> None:
        self.map.close()


# --- config ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """glia_config: what the programs know about their node."""

    node_ip: str
    vxlan_ifindex: int
    cluster_id: int
    vxlan_port: int = 0  # glia_vxlan's UDP port, which pods may not send to; 0 = no guard
    flags: int = 0

    def __post_init__(self) -> None:
        ip_to_be32(self.node_ip)
        if not 0 <= self.vxlan_port <= 0xFFFF:
            raise ValueError(f"VXLAN port {self.vxlan_port} is not a UDP port (0..65535)")


class ConfigMap:
    """glia_config_v2: one entry."""

    def __init__(self, m: BPFMap[c_uint32, glia_config]) -> None:
        self.map = m

    @classmethod
    def open_pinned(cls, pin_dir: Path) -> ConfigMap:
        return cls(BPFMap.open_pinned(pin_dir, CONFIG, c_uint32, glia_config))

    def set(self, config: NodeConfig) -> None:
        value = glia_config(
            node_ip=ip_to_be32(config.node_ip),
            vxlan_ifindex=config.vxlan_ifindex,
            cluster_id=config.cluster_id,
            flags=config.flags,
            vxlan_port=int_to_be16(config.vxlan_port),
        )
        self.map.update(c_uint32(0), value)

    def get(self) -> NodeConfig:
        v = self.map.lookup(c_uint32(0))
        if v is None:  # an array map always has its entries
            raise DatapathError(f"{self.map.spec.name} has no entry 0")
        return NodeConfig(
            be32_to_ip(v.node_ip),
            v.vxlan_ifindex,
            v.cluster_id,
            be16_to_int(v.vxlan_port),
            v.flags,
        )

    def close(self) -> None:
        self.map.close()
