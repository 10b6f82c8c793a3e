"""Typed handles on glia's pinned BPF maps.

:class:`BPFMap` is the generic handle (lookup, update, delete, iterate, batch
update) over ctypes keys and values, checked against its
:class:`~glia.datapath.mapspecs.MapSpec` when opened. The typed maps on top
speak in strings and small frozen dataclasses, converting to the C structs
inside. Created by glia.datapath.loader.Datapath (from the loaded objects) or
with ``open_pinned`` by readers such as the CLI; written by the agent.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Sequence
from ctypes import Array, c_uint8, c_uint32
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

from glia.datapath import libbpf
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
from glia.datapath.mapspecs import CONFIG, ENDPOINTS, IPCACHE, METRICS, MapSpec
from glia.datapath.structs import (
    MacBytes,
    glia_config,
    glia_endpoint,
    glia_endpoint_key,
    glia_ipcache_entry,
    glia_ipcache_key,
    glia_metrics,
)

K = TypeVar("K", bound="ctypes._SimpleCData[Any] | ctypes.Structure")
V = TypeVar("V", bound=ctypes.Structure)

_ENOENT = 2
_ENOSPC = 28
_EOPNOTSUPP = 95
_ENOTSUPP = 524  # kernel-internal "not supported" for batch ops
_BATCH = 8192
_BATCH_BYTES = 4 << 20  # bound on the buffers of one batch syscall


def _order(be32: int) -> bytes:
    """Sort key of a be32 address: its network-order bytes sort numerically."""
    return struct.pack("=I", be32)


class BPFMap(Generic[K, V]):
    """An open map: owns its fd; sizes, type and capacity checked at open."""

    def __init__(self, fd: int, spec: MapSpec, key: type[K], value: type[V]) -> None:
        self.fd = fd
        self.spec = spec
        self._key = key
        self._value = value
        try:
            check_spec(fd, spec)
        except BaseException:
            os.close(fd)
            raise
        self._ncpus = libbpf.num_possible_cpus() if spec.percpu else 1
        # Per-CPU values come as one slot per possible CPU, each 8-byte aligned.
        self._slot = (ctypes.sizeof(value) + 7) & ~7

    @classmethod
    def open_pinned(cls, pin_dir: Path, spec: MapSpec, key: type[K], value: type[V]) -> Self:
        return cls(libbpf.obj_get(str(pin_dir / spec.name)), spec, key, value)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _fd(self) -> int:
        if self.fd < 0:
            raise DatapathError(f"map {self.spec.name} is closed")
        return self.fd

    def _writable(self) -> None:
        # A per-CPU write takes one value per CPU; glia only reads its counters.
        if self.spec.percpu:
            raise DatapathError(f"{self.spec.name} is per-CPU: glia does not write it")

    def _value_buffer(self) -> Array[c_uint8]:
        return (c_uint8 * (self._slot * self._ncpus))()

    def lookup(self, key: K) -> V | None:
        """The value (CPU 0's for per-CPU maps: use lookup_percpu there)."""
        values = self.lookup_percpu(key)
        return None if values is None else values[0]

    def lookup_percpu(self, key: K) -> list[V] | None:
        buf = self._value_buffer()
        ret = libbpf.lib().bpf_map_lookup_elem(self._fd(), ctypes.byref(key), buf)
        if ret == -_ENOENT:
            return None
        libbpf.check(ret, f"lookup in {self.spec.name}")
        raw = bytes(buf)
        return [self._value.from_buffer_copy(raw, cpu * self._slot) for cpu in range(self._ncpus)]

    def update(self, key: K, value: V, flags: int = libbpf.BPF_ANY) -> None:
        self._writable()
        ret = libbpf.lib().bpf_map_update_elem(
            self._fd(), ctypes.byref(key), ctypes.byref(value), flags
        )
        libbpf.check(ret, f"update of {self.spec.name}")

    def delete(self, key: K) -> bool:
        ret = libbpf.lib().bpf_map_delete_elem(self._fd(), ctypes.byref(key))
        if ret == -_ENOENT:
            return False
        libbpf.check(ret, f"delete from {self.spec.name}")
        return True

    def keys(self) -> list[K]:
        found: list[K] = []
        nxt = self._key()
        prev: Any = None  # NULL asks for the first key
        while True:
            ret = libbpf.lib().bpf_map_get_next_key(self._fd(), prev, ctypes.byref(nxt))
            if ret == -_ENOENT:
                return found
            libbpf.check(ret, f"iterating {self.spec.name}")
            found.append(nxt)
            prev = ctypes.byref(nxt)
            nxt = self._key()

    def items(self) -> list[tuple[K, V]]:
        out = []
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:  # deleted while iterating
                out.append((key, value))
        return out

    # --- batch operations -------------------------------------------------
    # The raw forms take and give packed keys and values (C layout, back to
    # back): typed maps with many entries pack with struct, much faster than
    # building one ctypes object per entry.

    def _chunk(self) -> int:
        """Entries per syscall: _BATCH, fewer for big values (Maglev tables)."""
        return max(1, min(_BATCH, _BATCH_BYTES // (self._slot * self._ncpus)))

    def items_raw(self) -> tuple[bytes, bytes]:
        """(keys, values) of every entry, packed, read with BPF_MAP_LOOKUP_BATCH."""
        if self.spec.percpu:
            raise DatapathError(f"{self.spec.name} is per-CPU: read it with lookup_percpu")
        lib = libbpf.lib()
        ksize, vsize = self.spec.key_size, self.spec.value_size
        token_size = max(ksize, 8)
        in_token = (c_uint8 * token_size)()
        out_token = (c_uint8 * token_size)()
        keys_out: list[bytes] = []
        values_out: list[bytes] = []
        chunk = self._chunk()
        first = True
        while True:
            keys = (c_uint8 * (ksize * chunk))()
            values = (c_uint8 * (vsize * chunk))()
            count = c_uint32(chunk)
            opts = libbpf.new_opts(libbpf.bpf_map_batch_opts)
            ret = lib.bpf_map_lookup_batch(
                self._fd(),
                None if first else in_token,
                out_token,
                keys,
                values,
                ctypes.byref(count),
                ctypes.byref(opts),
            )
            if ret == -_ENOSPC and chunk < 16 * _BATCH:
                chunk *= 2  # one hash bucket holds more than a chunk: retry wider
                continue
            if ret in (-_ENOTSUPP, -_EOPNOTSUPP) and first:
                pairs = self.items()
                return b"".join(bytes(k) for k, _ in pairs), b"".join(bytes(v) for _, v in pairs)
            if ret < 0 and ret != -_ENOENT:
                libbpf.check(ret, f"batch lookup in {self.spec.name}")
            n = count.value
            keys_out.append(bytes(keys)[: n * ksize])
            values_out.append(bytes(values)[: n * vsize])
            if ret == -_ENOENT:
                return b"".join(keys_out), b"".join(values_out)
            ctypes.memmove(in_token, out_token, token_size)
            first = False

    def items_batch(self) -> list[tuple[K, V]]:
        """Every entry, typed; like :meth:`items` but one syscall per chunk."""
        raw_keys, raw_values = self.items_raw()
        ksize, vsize = self.spec.key_size, self.spec.value_size
        out: list[tuple[K, V]] = []
        for i in range(len(raw_keys) // ksize if ksize else 0):
            key: K = self._key.from_buffer_copy(raw_keys, i * ksize)  # type: ignore[assignment]
            out.append((key, self._value.from_buffer_copy(raw_values, i * vsize)))
        return out

    def update_raw(self, keys: bytes, values: bytes) -> None:
        """Batch update from packed keys and values."""
        self._writable()
        ksize, vsize = self.spec.key_size, self.spec.value_size
        n = len(keys) // ksize
        if len(keys) != n * ksize or len(values) != n * vsize:
            raise DatapathError(f"batch update of {self.spec.name}: keys and values do not pair up")
        chunk = self._chunk()
        lib = libbpf.lib()
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            kbuf = (c_uint8 * (m * ksize)).from_buffer_copy(keys, start * ksize)
            vbuf = (c_uint8 * (m * vsize)).from_buffer_copy(values, start * vsize)
            count = c_uint32(m)
            opts = libbpf.new_opts(libbpf.bpf_map_batch_opts)
            ret = lib.bpf_map_update_batch(
                self._fd(), kbuf, vbuf, ctypes.byref(count), ctypes.byref(opts)
            )
            if ret in (-_ENOTSUPP, -_EOPNOTSUPP):  # map type without batch ops: one by one
                # Pointers into the chunk's buffers: no copy, no object per entry.
                kaddr, vaddr, fd = ctypes.addressof(kbuf), ctypes.addressof(vbuf), self._fd()
                update = lib.bpf_map_update_elem
                for i in range(m):
                    ret = update(fd, kaddr + i * ksize, vaddr + i * vsize, libbpf.BPF_ANY)
                    if ret < 0:
                        libbpf.check(ret, f"update of {self.spec.name}")
                continue
            libbpf.check(ret, f"batch update of {self.spec.name} ({count.value}/{m} done)")

    def delete_raw(self, keys: bytes) -> int:
        """Batch delete of packed keys; absent keys are skipped. Number deleted."""
        ksize = self.spec.key_size
        n = len(keys) // ksize
        lib = libbpf.lib()
        deleted = pos = 0
        while pos < n:
            m = min(self._chunk(), n - pos)
            kbuf = (c_uint8 * (m * ksize)).from_buffer_copy(keys, pos * ksize)
            count = c_uint32(m)
            opts = libbpf.new_opts(libbpf.bpf_map_batch_opts)
            ret = lib.bpf_map_delete_batch(
                self._fd(), kbuf, ctypes.byref(count), ctypes.byref(opts)
            )
            if ret in (-_ENOTSUPP, -_EOPNOTSUPP):
                kaddr, fd = ctypes.addressof(kbuf), self._fd()
                for i in range(m):
                    r = lib.bpf_map_delete_elem(fd, kaddr + i * ksize)
                    if r != -_ENOENT:
                        libbpf.check(r, f"delete from {self.spec.name}")
                        deleted += 1
                pos += m
                continue
            deleted += count.value
            pos += count.value
            if ret == -_ENOENT:
                pos += 1  # the kernel stopped at an absent key: skip it
            elif ret < 0:
                libbpf.check(ret, f"batch delete from {self.spec.name}")
        return deleted

    def delete_batch(self, keys: Sequence[K]) -> int:
        """Delete ``keys`` in batches; absent keys are skipped. Number deleted."""
        return self.delete_raw(b"".join(bytes(k) for k in keys))

    def update_batch(self, entries: Sequence[tuple[K, V]]) -> None:
        """One syscall per chunk instead of one per entry."""
        self.update_raw(
            b"".join(bytes(k) for k, _ in entries), b"".join(bytes(v) for _, v in entries)
        )


def check_spec(fd: int, spec: MapSpec) -> None:
    """Refuse a map whose kernel shape differs from ``spec`` (stale or foreign pin)."""
    info = libbpf.map_info(fd)
    have = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags)
    want = (spec.map_type, spec.key_size, spec.value_size, spec.max_entries, spec.flags)
    if have != want:
        raise DatapathError(
            f"map {spec.name} has (type, key size, value size, entries, flags) {have}, this "
            f"glia expects {want}: stale pins from another version; remove them (glia lab down)"
        )


def memlock_bytes(fd: int) -> int:
    """Memory the kernel charges for a map (``memlock`` of its fdinfo)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("memlock:"):
                    return int(line.split()[1])
    except OSError as e:
        raise DatapathError(f"reading fdinfo of map fd {fd}: {e.strerror}") from None
    raise DatapathError(f"fd {fd} has no memlock in its fdinfo (not a BPF map?)")


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
