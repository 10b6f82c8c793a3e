"""The global-Service part of ``glia lab demo``: one Service over two clusters, failover and back.

Called by :mod:`glia.lab.demo` once its two-cluster lab is up and its client
container (on ``c1/n2``) runs. It starts a backend on every node of both
clusters, applies the same Service in both clusters, marked global
(``service.cilium.io/global: "true"``, fast health checks), and shows:

1. affinity none: requests from the cluster-1 client spread over the backends
   of both clusters (``glia service list`` shows each backend's cluster);
2. affinity local (the Service applied again in cluster 1 with
   ``service.cilium.io/affinity: local``): only cluster 1's backends answer,
   cluster 2's stand by;
3. the servers of cluster 1's backends stop (inside their containers, which
   keep running) while the client sends requests: the maps of cluster 1's
   nodes move to cluster 2's backends as soon as the backends' nodes notice
   (the first refused connection makes them probe at once:
   :mod:`glia.datapath.signals`), and the requests follow (how many failed in
   between, and how long it took);
4. the servers start again: the traffic comes back to cluster 1.

Then the Service is deleted in both clusters. :func:`run` returns the failures.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from glia.lab.demo_steps import (
    FAILED,
    WAIT,
    Steps,
    backend_command,
    requests,
    requests_for,
    show_cli,
    socket_xlated,
    wait_slotted,
)
from glia.lab.lab import Lab
from glia.lab.podman import Container
from glia.model import service as m

SERVICE = "shop"
APP = {"app": "shop"}
CLUSTERS = ("c1", "c2")
NODES = ("c1/n1", "c1/n2")  # cluster 1's nodes: the maps the demo watches
REQUESTS = 80
INTERVAL, FAILURES = 0.5, 2  # health checks: a stopped server is noticed in about a second
FAILOVER_LOAD = 6  # seconds of requests around the moment cluster 1's servers stop


def manifest(affinity: str = "") -> dict[str, Any]:
    annotations = {
        m.ANN_GLOBAL: "true",
        m.ANN_HEALTH_INTERVAL: str(INTERVAL),
        m.ANN_HEALTH_FAILURES: str(FAILURES),
    }
    if affinity:
        annotations[m.ANN_AFFINITY] = affinity
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "annotations": annotations},
        "spec": {"selector": APP, "ports": [{"name": "http", "port": 80}]},
    }


def run(lab: Lab, console: Console, client: Container) -> list[str]:
    step = Steps(console)
    step("a global Service over backends in both clusters (affinity none)")
    backends = [
        lab.run_container(n.ref, f"glia-shop-{n.key}", labels=APP, command=backend_command(n.key))
        for n in lab.topo.nodes
    ]
    local = [b for b in backends if b.node.startswith("c1/")]
    remote = [b for b in backends if b not in local]
    text = yaml.safe_dump(manifest(), sort_keys=False)
    console.print(Text(text.rstrip(), style="dim"))
    failures: list[str] = []
    for cluster in CLUSTERS:
        failures += show_cli(lab, console, _apply(cluster), stdin=text)
    if failures:
        return failures
    vip = str(lab.agent("c1/n1").config_services(name=SERVICE)[0]["spec"]["clusterIP"])
    every = {str(b.ip) for b in backends}
    if wait_slotted(lab, NODES, vip, every) is None:
        return [f"cluster 1's maps did not get the 4 backends {sorted(every)} in {WAIT:.0f} s"]
    failures += show_cli(lab, console, ["service", "list", "--node", client.node])
    xlated = socket_xlated(lab, client.node)
    failures += _spread(lab, console, client, vip, backends, want=backends)
    xlated = socket_xlated(lab, client.node) - xlated
    step.note(
        f"{xlated} connections balanced at connect() by the socket LB (no per-packet NAT), "
        "remote ones tunnelled to the other cluster's node (VXLAN, identity in the VNI)"
    )

    step(f"affinity local: {SERVICE} applied again in cluster 1 with {m.ANN_AFFINITY}: local")
    text = yaml.safe_dump(manifest("local"), sort_keys=False)
    failures += show_cli(lab, console, _apply("c1"), stdin=text)
    if wait_slotted(lab, NODES, vip, {str(b.ip) for b in local}) is None:
        return [*failures, f"cluster 1's maps did not keep only its own backends in {WAIT:.0f} s"]
    failures += show_cli(lab, console, ["service", "list", "--node", client.node])
    failures += _spread(lab, console, client, vip, backends, want=local)

    step(f"stopping the servers of cluster 1's backends while {client.name} sends requests")
    failures += _failover(lab, console, client, vip, backends, local, remote)

    step("starting them again: the traffic comes back to cluster 1")
    for b in local:
        lab.exec(f"{b.node}/{b.name}", ["httpd", "-p", "80", "-h", "/www"], check=True)
    took = wait_slotted(lab, NODES, vip, {str(b.ip) for b in local})
    if took is None:
        return [*failures, f"cluster 1's backends did not take the traffic back in {WAIT:.0f} s"]
    step.note(f"cluster 1's maps prefer their own backends again {took:.1f} s later")
    failures += _spread(lab, console, client, vip, backends, want=local)

    step("deleting the Service in both clusters")
    for cluster in CLUSTERS:
        failures += show_cli(lab, console, ["delete", "-f", "-", *_node(cluster)], stdin=text)
    if wait_slotted(lab, NODES, vip, None) is None:
        failures.append(f"{vip} stayed in cluster 1's maps after the delete")
    return failures


def _node(cluster: str) -> list[str]:
    return ["--node", f"{cluster}/n1"]


def _apply(cluster: str) -> list[str]:
    return ["apply", "-f", "-", *_node(cluster)]


def _spread(
    lab: Lab,
    console: Console,
    client: Container,
    vip: str,
    backends: list[Container],
    *,
    want: list[Container],
) -> list[str]:
    """Requests from ``client``: every one answered, by every backend of ``want`` and no other."""
    counts = requests(lab, client, f"http://{vip}/", REQUESTS)
    _show_counts(console, f"{REQUESTS} requests to http://{vip}/", backends, counts)
    names = {b.name.removeprefix("glia-shop-") for b in want}
    served = {k for k, v in counts.items() if v and k != FAILED}
    if counts[FAILED] or served != names:
        return [f"wanted answers from {sorted(names)} only, got {dict(counts)}"]
    return []


def _failover(
    lab: Lab,
    console: Console,
    client: Container,
    vip: str,
    backends: list[Container],
    local: list[Container],
    remote: list[Container],
) -> list[str]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        load = pool.submit(requests_for, lab, client, f"http://{vip}/", FAILOVER_LOAD)
        time.sleep(1.5)  # the load is running: some requests before the failure
        for b in local:
            lab.exec(f"{b.node}/{b.name}", ["killall", "httpd"], check=True)
        moved = wait_slotted(lab, NODES, vip, {str(b.ip) for b in remote})
        counts = load.result()
    if moved is None:
        return [f"cluster 1's maps did not move to cluster 2's backends in {WAIT:.0f} s"]
    console.print(
        Text(
            f"    cluster 1's maps moved to cluster 2's backends {moved:.1f} s after the servers "
            "stopped: the datapath saw a backend refuse a connection, so its node probed it at "
            f"once (else: health checks every {INTERVAL} s, {FAILURES} failures). "
            "The requests sent meanwhile:",
            style="dim",
        )
    )
    total = sum(counts.values())
    _show_counts(console, f"{total} requests in {FAILOVER_LOAD} s around it", backends, counts)
    if counts[FAILED]:
        console.print(
            Text(
                f"    {counts[FAILED]} of {total} failed: connections refused by a stopped "
                "server before every node's maps had moved",
                style="dim",
            )
        )
    after = requests(lab, client, f"http://{vip}/", REQUESTS)
    _show_counts(console, f"{REQUESTS} requests after it", backends, after)
    names = {b.name.removeprefix("glia-shop-") for b in remote}
    served = {k for k, v in after.items() if v and k != FAILED}
    if after[FAILED] or served != names:
        return [f"after the failover wanted answers from {sorted(names)} only, got {dict(after)}"]
    return []


def _show_counts(
    console: Console, title: str, backends: list[Container], counts: Counter[str]
) -> None:
    table = Table("backend", "cluster/node", "IP", "requests", title=title, title_justify="left")
    for b in backends:
        table.add_row(b.name, b.node, b.ip or "-", str(counts[b.name.removeprefix("glia-shop-")]))
    if counts[FAILED]:
        table.add_row(FAILED, "", "", str(counts[FAILED]))
    console.print(table)
