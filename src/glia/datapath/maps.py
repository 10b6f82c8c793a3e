"""The generic handle on a pinned BPF map: :class:`BPFMap`, checked against its spec.

:class:`BPFMap` does lookup, update, delete, iterate and batch operations over
ctypes keys and values, checked against its
:class:`~glia.datapath.mapspecs.MapSpec` when opened (:func:`check_spec`,
also used by the ring buffers). The typed handles on top of it, which speak in
strings and small frozen dataclasses, are glia.datapath.nodemaps (endpoints,
ipcache, metrics, config), lbmaps, policymap and ct. Created by
glia.datapath.loader.Datapath (from the loaded objects) or with
``open_pinned`` by readers such as the CLI and the benchmarks.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from ctypes import Array, c_uint8, c_uint32
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

from glia.datapath import libbpf
from glia.datapath.errors import DatapathError
from glia.datapath.mapspecs import MapSpec

K = TypeVar("K", bound="ctypes._SimpleCData[Any] | ctypes.Structure")
V = TypeVar("V", bound=ctypes.Structure)

_ENOENT = 2
_ENOSPC = 28
_EOPNOTSUPP = 95
_ENOTSUPP = 524  # kernel-internal "not supported" for batch ops
_BATCH = 8192
_BATCH_BYTES = 4 << 20  # bound on the buffers of one batch syscall


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
