"""Helpers shared by the end-to-end tests (imported as ``labhelpers``; no package here)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from glia.datapath.netlink import HOST_PREFIX, VXLAN_NAME
from glia.lab import netns, processes, topology
from glia.lab.lab import Lab
from glia.lab.podman import Container
from glia.model.identity import MIN_LOCAL

E2E_LAB = "gliat"
T = TypeVar("T")


def lab_dir(name: str) -> Path:
    """Explicit, so a GLIA_LAB_DIR set for someone's own lab is never used by tests."""
    return topology.DEFAULT_LAB_DIR.with_name(f"lab-{name}")


def leftovers(lab: Lab, extra_netns: list[str] | None = None) -> list[str]:
    """Everything of ``lab`` still on the machine (empty after a clean ``down``)."""
    found = [f"namespace {n}" for n in netns.list_names() if topology.is_lab_netns(lab.name, n)]
    found += [f"namespace {p}" for p in extra_netns or [] if Path(p).exists()]
    if lab.topo.bpf_dir.exists():
        found.append(f"pins {lab.topo.bpf_dir}")
    if lab.dir.exists():
        found.append(f"directory {lab.dir}")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            line = processes.cmdline(int(proc.name))
            if line is not None and str(lab.dir) + "/" in line:
                found.append(f"process {proc.name}: {line[:120]}")
    return found


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


# --- traffic -------------------------------------------------------------------


def ping(lab: Lab, src: Container, ip: str, count: int = 1) -> bool:
    """Whether ``count`` pings from ``src`` to ``ip`` all get an answer (1 s each at most)."""
    argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "1", ip]
    r = lab.exec(f"{src.node}/{src.name}", argv)
    return r.returncode == 0 and f"{count} packets received" in r.stdout


def http(lab: Lab, src: Container, ip: str, timeout: int = 3) -> str:
    """The body the busybox httpd at ``ip`` answers to ``src`` ("" on failure)."""
    # `timeout`, not wget's -T: Debian's static busybox 1.35 wget segfaults with -T.
    r = lab.exec(
        f"{src.node}/{src.name}",
        ["timeout", str(timeout), "wget", "-q", "-O", "-", f"http://{ip}/"],
    )
    return r.stdout.strip() if r.returncode == 0 else ""


def all_of(probes: dict[str, Callable[[], T]]) -> dict[str, T]:
    """Run independent probes (each a few seconds of waiting) at once; results by name."""
    with ThreadPoolExecutor(max_workers=len(probes) or 1) as pool:
        futures = {name: pool.submit(fn) for name, fn in probes.items()}
        return {name: f.result() for name, f in futures.items()}


RECORDER_PORT = 7001


def recorder_command(name: str) -> list[str]:
    """The default httpd plus a TCP listener on :data:`RECORDER_PORT` that appends a line
    to /tmp/hits for every connection it accepts (see :func:`recorded_hits`)."""
    script = (
        f"mkdir -p /www && echo {name} > /www/index.html"
        " && printf '#!/bin/sh\\necho hit >> /tmp/hits\\n' > /tmp/record && chmod +x /tmp/record"
        f" && (nc -ll -p {RECORDER_PORT} -e /tmp/record &)"
        " && exec httpd -f -p 80 -h /www"
    )
    return ["sh", "-c", script]


def recorded_hits(lab: Lab, ctr: Container) -> int:
    r = lab.exec(f"{ctr.node}/{ctr.name}", ["sh", "-c", "cat /tmp/hits 2>/dev/null; true"])
    return r.stdout.count("hit")


def tcp_send(lab: Lab, src: Container, ip: str, port: int = RECORDER_PORT) -> bool:
    """Whether ``src`` could open a TCP connection to ``ip:port`` (1 s connect timeout)."""
    r = lab.exec(f"{src.node}/{src.name}", ["sh", "-c", f"echo x | nc -w 1 {ip} {port}"])
    return r.returncode == 0


def snmp(lab: Lab, ctr: Container) -> dict[str, int]:
    """The container's own IP stack counters (/proc/net/snmp), as ``{"Icmp.InEchos": n}``."""
    out = lab.exec(f"{ctr.node}/{ctr.name}", ["cat", "/proc/net/snmp"], check=True).stdout
    lines = out.splitlines()
    counters: dict[str, int] = {}
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        proto, names = header.split(":", 1)
        for k, v in zip(names.split(), values.split(":", 1)[1].split(), strict=False):
            counters[f"{proto}.{k}"] = int(v)
    return counters


# --- datapath ------------------------------------------------------------------


def metrics(lab: Lab, node: str) -> dict[tuple[str, str], int]:
    """``glia bpf metrics`` of ``node``: packets by (reason, direction)."""
    return {
        (str(m["reason"]), str(m["direction"])): int(m["packets"])
        for m in lab.agent(node).bpf_metrics()
    }


def metric_delta(
    before: dict[tuple[str, str], int],
    after: dict[tuple[str, str], int],
    reason: str,
    direction: str,
) -> int:
    return after.get((reason, direction), 0) - before.get((reason, direction), 0)


def glia_devices(lab: Lab, node: str) -> dict[str, int]:
    """glia's devices in the node's namespace (glia_vxlan and the gliae* endpoint veths)."""
    out = lab.node_exec(node, ["ip", "-o", "link", "show"], check=True).stdout
    found = {}
    for line in out.splitlines():
        index, name = line.split(":", 2)[:2]
        name = name.strip().split("@", 1)[0]
        if name == VXLAN_NAME or name.startswith(HOST_PREFIX):
            found[name] = int(index)
    return found


def host_veths(lab: Lab, node: str) -> dict[str, int]:
    return {n: i for n, i in glia_devices(lab, node).items() if n.startswith(HOST_PREFIX)}


def ingress_program(lab: Lab, node: str, dev: str) -> str | None:
    """Name of the BPF program on the device's tc ingress, None when there is none."""
    out = lab.node_exec(node, ["tc", "filter", "show", "dev", dev, "ingress"], check=True).stdout
    for word in out.split():
        if word.startswith(("from_endpoint", "from_overlay")):
            return word.split(":", 1)[0]
    return None


def detach_all(lab: Lab, node: str) -> list[str]:
    """Remove every tc ingress filter from glia's devices on ``node``; the devices touched."""
    devices = sorted(glia_devices(lab, node))
    for dev in devices:
        lab.node_exec(node, ["tc", "filter", "del", "dev", dev, "ingress"], check=True)
    return devices


def restart_agents(lab: Lab, nodes: list[str]) -> None:
    """Restart several agents at once (SIGTERM, start, wait until healthy)."""
    for node in nodes:
        lab.stop_agent(node)
    for node in nodes:
        lab.start_agent(node, wait=False)
    lab.wait_agents(nodes)


# --- kvstore -------------------------------------------------------------------


@dataclass(frozen=True)
class StoredKey:
    value: bytes
    lease: int  # 0: not on a lease


def etcd_keys(lab: Lab, cluster: str, prefix: str) -> dict[str, StoredKey]:
    """Every key under ``prefix`` in ``cluster``'s etcd, read with etcdctl from a node
    (etcd listens on the underlay, which the test's own namespace cannot reach)."""
    c = lab.topo.cluster(cluster)
    cfg = lab.etcd_config(cluster)
    argv = [
        "etcdctl",
        f"--endpoints={c.etcd_endpoint}",
        f"--cacert={cfg.ca_file}",
        f"--cert={cfg.cert_file}",
        f"--key={cfg.key_file}",
        "--dial-timeout=3s",
        "-w",
        "json",
        "get",
        "--prefix",
        prefix,
    ]
    r = lab.node_exec(c.nodes[0].ref, argv, timeout=20, check=True)
    out = {}
    for kv in json.loads(r.stdout).get("kvs") or []:
        key = base64.b64decode(kv["key"]).decode()
        out[key] = StoredKey(base64.b64decode(kv.get("value", "")), int(kv.get("lease", 0)))
    return out


def etcd_delete(lab: Lab, cluster: str, *keys: str) -> None:
    """Delete ``keys`` in one transaction (as the operator's GC does), with etcdctl."""
    c = lab.topo.cluster(cluster)
    cfg = lab.etcd_config(cluster)
    argv = [
        "etcdctl",
        f"--endpoints={c.etcd_endpoint}",
        f"--cacert={cfg.ca_file}",
        f"--cert={cfg.cert_file}",
        f"--key={cfg.key_file}",
        "--dial-timeout=3s",
        "txn",
    ]
    # No compares, then the requests if they hold, then none if they do not.
    script = "\n" + "".join(f"del {key}\n" for key in keys) + "\n\n"
    r = lab.node_exec(c.nodes[0].ref, argv, input=script, timeout=20, check=True)
    assert r.stdout.startswith("SUCCESS"), r.stdout


def endpoint_named(lab: Lab, ctr: Container) -> dict[str, Any] | None:
    """The agent's endpoint for ``ctr`` once it has its labels' identity (else None)."""
    for ep in lab.agent(ctr.node).endpoints():
        if ep.get("name") == ctr.name and ep.get("identity", 0) >= MIN_LOCAL:
            return ep
    return None
