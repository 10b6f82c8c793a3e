"""The part of ``bench/mesh.py`` that runs inside the lab's namespaces.

``bench/mesh.py`` starts it with ``nsenter --net=<a lab node's namespace>``
(etcd listens on the lab's underlay; ``nsenter`` keeps the host's bpffs in
view, so the pinned maps of every node can be read from there), hands it a
JSON spec on stdin and reads one JSON document from its stdout. Commands:

- ``propagate``: as cluster B's operator would, write B's ClusterService
  record of the propagation Service, flipping one backend's readiness each
  time, and time until the Service's entry in the lb4 map of every observer
  node (the nodes of the other clusters) holds the new number of ready
  backends. One process writes and reads the maps, so both ends of every
  sample are taken on one clock, with no hop in between.
- ``write``: write a remote cluster's synthetic state
  (:func:`_meshdata.synthetic_records`) into its etcd in large transactions,
  in blocks of its pod pool that no node holds.
- ``ipcache-wait``: poll a node's pinned ipcache until the given addresses are
  all there; the time each appeared.
- ``http-load``: a steady stream of short HTTP requests (a fresh connection
  each, ``GET /``, the answer read until the server closes) at a fixed rate,
  from the namespace (and cgroup) it was started in; each request's start, end
  and answer (the backend's name) or error.

Times are ``time.monotonic()``, which is one clock for every process of the
machine, so ``bench/mesh.py`` can compare them with its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _meshdata import (
    SyntheticCluster,
    batches,
    free_blocks,
    propagation_record,
    synthetic_records,
)
from glia.datapath.maps import BPFMap
from glia.datapath.mapspecs import LB_SERVICES
from glia.datapath.nodemaps import IPCacheMap
from glia.datapath.structs import glia_lb4_key, glia_lb4_service
from glia.kvstore import keys
from glia.kvstore.client import KVClient, Put
from glia.kvstore.config import EtcdConfig
from glia.model import codec
from glia.model.node import PodCIDRAllocation

POLL = 0.001  # seconds between two looks at the maps: fine enough, leaves the CPU to agents
IPPROTO_TCP = 6


class ToolError(RuntimeError):
    pass


def _etcd(spec: dict[str, Any]) -> EtcdConfig:
    # Generous: a big transaction on a loaded machine takes seconds.
    return EtcdConfig(**spec, dial_timeout=30.0)


# --- propagate --------------------------------------------------------------------


class Observer:
    """One node's lb4 service entry of the propagation Service (its own VIP)."""

    def __init__(self, name: str, pin_dir: str, vip: str, port: int) -> None:
        self.name = name
        self.map = BPFMap.open_pinned(Path(pin_dir), LB_SERVICES, glia_lb4_key, glia_lb4_service)
        (vip_raw,) = struct.unpack("=I", socket.inet_aton(vip))
        self.key = glia_lb4_key(vip=vip_raw, port=socket.htons(port), proto=IPPROTO_TCP)

    def count(self) -> int | None:
        v = self.map.lookup(self.key)
        return None if v is None else int(v.count)

    def close(self) -> None:
        self.map.close()


def _wait_counts(observers: Sequence[Observer], want: int, timeout: float) -> dict[str, float]:
    """Until every observer's count is ``want``: the monotonic time each first was."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        for o in observers:
            if o.name not in seen and o.count() == want:
                seen[o.name] = now
        if len(seen) == len(observers) or now > deadline:
            return seen
        time.sleep(POLL)


async def propagate(spec: dict[str, Any]) -> dict[str, Any]:
    observers = [Observer(o["name"], o["pin_dir"], o["vip"], o["port"]) for o in spec["observers"]]
    kv = await KVClient.connect(_etcd(spec["etcd"]))
    try:
        c = spec["cluster"]
        alloc = await kv.get(keys.podcidr_node(c, spec["node"]))
        if alloc is None:
            raise ToolError(f"{c}/{spec['node']} has no pod CIDR allocation")
        block = codec.decode(PodCIDRAllocation, alloc.value).cidr
        base = int.from_bytes(socket.inet_aton(block.split("/")[0]), "big")
        n = spec["backends"]
        # The top of the node's block: far from the addresses its agent gives pods.
        ips = [socket.inet_ntoa((base + 250 - i).to_bytes(4, "big")) for i in range(n)]
        key = keys.service(c, spec["namespace"], spec["name"])

        def record(ready: list[bool]) -> bytes:
            svc = propagation_record(
                c, spec["cluster_id"], spec["name"], spec["vip"], 80, spec["node"], ips, ready
            )
            return codec.encode(svc)

        ready = [True] * n
        await kv.put(key, record(ready))
        settled = _wait_counts(observers, n, spec["settle_timeout"])
        if len(settled) != len(observers):
            missing = sorted({o.name for o in observers} - set(settled))
            got = {o.name: o.count() for o in observers}
            raise ToolError(
                f"the maps of {', '.join(missing)} never held {n} ready backends of "
                f"{spec['name']} (counts now: {got})"
            )
        samples: list[dict[str, Any]] = []
        rng = random.Random(spec.get("seed", 1))
        gap_lo, gap_hi = spec["gap_s"]
        for i in range(spec["changes"]):
            ready = [True] * n
            flipped = i % 2 == 0
            ready[0] = not flipped  # odd changes make it ready again
            want = n - 1 if flipped else n
            value = record(ready)
            t0 = time.monotonic()
            await kv.put(key, value)
            t_put = time.monotonic()
            seen = _wait_counts(observers, want, spec["change_timeout"])
            samples.append(
                {
                    "put_ms": round((t_put - t0) * 1000, 3),
                    "ms": {name: round((t - t0) * 1000, 3) for name, t in seen.items()},
                    "timed_out": sorted({o.name for o in observers} - set(seen)),
                }
            )
            await asyncio.sleep(rng.uniform(gap_lo, gap_hi))
        # Leave every backend ready, as found.
        await kv.put(key, record([True] * n))
        return {"samples": samples, "backends": ips, "key": key}
    finally:
        await kv.close()
        for o in observers:
            o.close()


# --- write ----------------------------------------------------------------------------


async def write(spec: dict[str, Any]) -> dict[str, Any]:
    kv = await KVClient.connect(_etcd(spec["etcd"]))
    try:
        out: dict[str, Any] = {"clusters": {}}
        for s in spec["clusters"]:
            c = s["cluster"]
            items, _ = await kv.list(keys.podcidr_nodes(c))
            used = [codec.decode(PodCIDRAllocation, it.value).cidr for it in items]
            blocks = free_blocks(s["pool"], used, s["prefixlen"], s["nodes"])
            syn = SyntheticCluster(
                cluster=c,
                cluster_id=s["cluster_id"],
                nodes=s["nodes"],
                pods_per_node=s["pods_per_node"],
                identities=s["identities"],
                blocks=tuple(blocks),
                node_ip_base=s["node_ip_base"],
            )
            t0 = time.monotonic()
            records = txns = 0
            for batch in batches(synthetic_records(syn), spec["max_ops"], spec["max_bytes"]):
                await kv.txn([], [Put(k, v) for k, v in batch])
                records += len(batch)
                txns += 1
            out["clusters"][c] = {
                "records": records,
                "transactions": txns,
                "seconds": round(time.monotonic() - t0, 3),
                "spec": dataclasses.asdict(syn),
            }
        return out
    finally:
        await kv.close()


# --- ipcache-wait --------------------------------------------------------------------------


def ipcache_wait(spec: dict[str, Any]) -> dict[str, Any]:
    """Until every address of ``ips`` is in the node's ipcache: when each was first seen.

    Each pass stops at the first address still missing, so waiting costs one lookup
    per pass, not one per address: the CPU stays with the agent being measured."""
    m = IPCacheMap.open_pinned(Path(spec["pin_dir"]))
    try:
        seen: dict[str, float] = {}
        missing = list(spec["ips"])
        deadline = time.monotonic() + spec["timeout"]
        while missing and time.monotonic() < deadline:
            now = time.monotonic()
            while missing and m.lookup(missing[-1]) is not None:
                seen[missing.pop()] = now
            if missing:
                time.sleep(spec.get("every", 0.005))
        entries = len(m.items()) if spec.get("count") else None
        return {"seen": seen, "entries": entries}
    finally:
        m.close()


# --- http-load ----------------------------------------------------------------------------


def _request(host: str, port: int, timeout: float) -> tuple[str | None, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            got = b""
            while chunk := sock.recv(4096):
                got += chunk
    except TimeoutError:
        return None, "timeout"
    except ConnectionRefusedError:
        return None, "refused"
    except ConnectionResetError:
        return None, "reset"
    except OSError as e:
        return None, type(e).__name__
    head, _, body = got.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0] + b" ":
        return None, "bad answer"
    return body.decode(errors="replace").strip() or None, "" if body.strip() else "empty"


def http_load(spec: dict[str, Any]) -> dict[str, Any]:
    """``rate`` requests a second for ``seconds`` (one at a time: a request that takes
    longer than the interval delays the next, never bursts)."""
    interval = 1.0 / spec["rate"]
    end = time.monotonic() + spec["seconds"]
    out: list[list[Any]] = []
    nxt = time.monotonic()
    while (now := time.monotonic()) < end:
        if now < nxt:
            time.sleep(nxt - now)
        t0 = time.monotonic()
        backend, err = _request(spec["host"], spec["port"], spec["timeout"])
        out.append([round(t0, 6), round(time.monotonic(), 6), backend, err])
        nxt = max(nxt + interval, t0)
    return {"requests": out}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("propagate", "write", "ipcache-wait", "http-load"))
    args = parser.parse_args(argv)
    spec = json.load(sys.stdin)
    try:
        if args.command == "propagate":
            doc = asyncio.run(propagate(spec))
        elif args.command == "write":
            doc = asyncio.run(write(spec))
        elif args.command == "ipcache-wait":
            doc = ipcache_wait(spec)
        else:
            doc = http_load(spec)
    except (ToolError, OSError, ValueError) as e:
        print(f"{args.command}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a kvstore or datapath error: its message is what matters
        print(f"{args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    with contextlib.suppress(BrokenPipeError):
        json.dump(doc, sys.stdout)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
