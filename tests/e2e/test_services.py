"""Services end to end: real podman backends on both lab nodes, real traffic to the VIP.

Shows what issue 3 asks to see with the lab: requests spread over backends on
two nodes; a long-lived TCP connection keeps its backend while the backend set
changes; UDP with reverse NAT; ClientIP affinity; Maglev; a backend whose
server stops is withdrawn from every node within interval x threshold + 1 s and
comes back; deleting a Service removes every map entry it made; a Service
without backends refuses at once. Backends are busybox containers whose
servers are not PID 1 (``labhelpers.backend_command``), so a test can stop a
server without removing its container. Each test removes what it made
(``Workload``), so the maps are back to empty between tests.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from labhelpers import (
    FAILED,
    HTTP_FROM_PORTS,
    NODES,
    STREAM_PORT,
    TCP_CONNECT,
    UDP_CLIENT,
    UDP_PORT,
    UDP_SERVER,
    LineReader,
    Workload,
    backend_command,
    children,
    container_pid,
    http_names,
    lb_frontend,
    lb_maps,
    metric_delta,
    metrics,
    netns_python,
    service_manifest,
    slotted,
    tuple_hash,
    wait_backends,
    wait_for,
)
from labhelpers import (
    glia_ok as glia,
)

from glia.lab.lab import Lab
from glia.lab.podman import Container

IPPROTO_TCP = 6
MAGLEV_M = 16381  # GLIA_LB_MAGLEV_M
FAST_HEALTH = {
    "service.glia.io/health-check-interval": "0.5",
    "service.glia.io/health-check-failure-threshold": "2",
}
WITHDRAW_LIMIT = 0.5 * 2 + 1.0  # interval x failure threshold + 1 s
HTTP = [{"port": 80}]


@pytest.fixture(scope="module")
def clients(lab: Lab) -> Iterator[tuple[Container, Container]]:
    """One client container per node (they back no Service)."""
    work = Workload(lab)
    try:
        yield (
            work.container(NODES[0], "glia-client1", {"app": "client"}),
            work.container(NODES[1], "glia-client2", {"app": "client"}),
        )
    finally:
        work.close()


def backends(work: Workload, app: str, *nodes: str) -> list[Container]:
    """One backend per entry of ``nodes``, labelled ``app=<app>``, named ``glia-<app><i>``."""
    out = []
    for i, node in enumerate(nodes, 1):
        name = f"glia-{app}{i}"
        out.append(work.container(node, name, {"app": app}, backend_command(name)))
    return out


def test_requests_spread_over_backends_on_both_nodes(
    lab: Lab, work: Workload, clients: tuple[Container, Container]
) -> None:
    web = backends(work, "spread", NODES[0], NODES[1], NODES[1])
    (vip,) = work.apply(service_manifest("spread", {"app": "spread"}, HTTP))
    wait_backends(lab, vip, 80, {str(c.ip) for c in web})

    before = metrics(lab, clients[0].node)
    counts = http_names(lab, clients[0], vip, 300)

    assert counts[FAILED] == 0, counts
    assert set(counts) == {c.name for c in web}, counts
    assert min(counts.values()) >= 0.15 * 300, counts
    # Every one balanced at connect() by the client node's socket LB (the lab
    # puts containers, `podman exec`'s processes too, in the node's cgroup).
    xlated = metric_delta(before, metrics(lab, clients[0].node), "SOCK_XLATE", "egress")
    assert xlated >= 300, xlated


def test_long_lived_connection_keeps_its_backend_while_the_set_changes(
    lab: Lab, work: Workload, clients: tuple[Container, Container]
) -> None:
    first = backends(work, "stream", NODES[0], NODES[1])
    ports = [{"port": STREAM_PORT}]
    (vip,) = work.apply(
        service_manifest("stream", {"app": "stream"}, ports, annotations=FAST_HEALTH)
    )
    wait_backends(lab, vip, STREAM_PORT, {str(c.ip) for c in first})
    client = clients[0]
    # One connection, a line every 0.1 s until /tmp/stop appears; each answer names the backend.
    loop = f"while [ ! -e /tmp/stop ]; do echo hi; sleep 0.1; done | nc {vip} {STREAM_PORT}"
    lab.exec(f"{client.node}/{client.name}", ["rm", "-f", "/tmp/stop"], check=True)
    reader = LineReader(work.exec_bg(client, ["sh", "-c", loop]))
    owner_name = reader.wait_more(0.0, 3)[0]
    owner = next(c for c in first if c.name == owner_name)
    other = next(c for c in first if c is not owner)

    # A backend joins...
    t = time.monotonic()
    added = work.container(
        NODES[1], "glia-stream3", {"app": "stream"}, backend_command("glia-stream3")
    )
    wait_backends(lab, vip, STREAM_PORT, {str(owner.ip), str(other.ip), str(added.ip)})
    reader.wait_more(t, 3)
    # ...another leaves...
    t = time.monotonic()
    work.remove(other)
    wait_backends(lab, vip, STREAM_PORT, {str(owner.ip), str(added.ip)})
    reader.wait_more(t, 3)
    # ...and the connection's own backend is withdrawn (its listener stops; the
    # process serving this connection lives on): withdrawn is not cut.
    t = time.monotonic()
    lab.exec(f"{owner.node}/{owner.name}", ["killall", "nc"], check=True)
    wait_backends(lab, vip, STREAM_PORT, {str(added.ip)})
    after = reader.wait_more(t, 3)

    # The lab's agents balance at the socket: the client's socket is connected
    # to the withdrawn backend itself (netstat reads the kernel's sockets, not
    # getpeername), and no conntrack entry was needed. The per-packet path's
    # version of this (conntrack holds the backend) is in
    # tests/integration/test_datapath_lb_traffic.py.
    held = lab.exec(f"{client.node}/{client.name}", ["netstat", "-tn"], check=True).stdout
    peers = [line.split()[4] for line in held.splitlines() if "ESTABLISHED" in line]
    assert peers == [f"{owner.ip}:{STREAM_PORT}"], held
    ct = json.loads(glia(lab, "bpf", "ct", "list", "-o", "json", "--node", client.node))
    assert [e for e in ct if e["dst"] == f"{vip}:{STREAM_PORT}"] == [], ct

    lab.exec(f"{client.node}/{client.name}", ["touch", "/tmp/stop"], check=True)
    lines = reader.all()
    assert set(lines) == {owner.name}, Counter(lines)
    assert len(after) >= 3 and len(lines) >= 12, (len(after), len(lines))


def test_udp_service_with_reverse_nat(
    lab: Lab, work: Workload, clients: tuple[Container, Container]
) -> None:
    udp = [work.container(node, f"glia-udp{i}", {"app": "udp"}) for i, node in enumerate(NODES, 1)]
    for ctr in udp:
        work.spawn(ctr, UDP_SERVER, ctr.name, str(UDP_PORT))
    ports = [{"port": 53, "targetPort": UDP_PORT, "protocol": "UDP"}]
    (vip,) = work.apply(service_manifest("udp", {"app": "udp"}, ports))
    # UDP has no handshake to probe: a UDP backend is ready once its endpoint is.
    wait_backends(lab, vip, 53, {str(c.ip) for c in udp}, proto="UDP")

    for client in clients:
        out = netns_python(client, UDP_CLIENT, vip, "53", "40").splitlines()
        answers = Counter(tuple(line.split()) for line in out)
        # Every answer comes back from the VIP (a connected socket takes nothing else).
        assert answers.keys() <= {("reply", c.name, f"{vip}:53") for c in udp}, answers
        assert len(answers) == 2 and sum(answers.values()) == 40, answers


def test_client_ip_affinity_keeps_a_client_on_one_backend(
    lab: Lab, work: Workload, clients: tuple[Container, Container]
) -> None:
    web = backends(work, "aff", NODES[0], NODES[1], NODES[1])
    sticky, loose = work.apply(
        service_manifest("sticky", {"app": "aff"}, HTTP, client_ip_affinity=True),
        service_manifest("loose", {"app": "aff"}, HTTP),
    )
    for vip in (sticky, loose):
        wait_backends(lab, vip, 80, {str(c.ip) for c in web})

    for client in clients:
        stuck = http_names(lab, client, sticky, 30)
        assert len(stuck) == 1 and FAILED not in stuck, stuck
        random = http_names(lab, client, loose, 30)
        assert len(random) >= 2 and FAILED not in random, random
    row = lb_frontend(lab, clients[0].node, sticky, 80)
    assert row["affinity_timeout"] == 10800, row
    _, affinity = lb_maps(lab, clients[0].node)
    assert any(a[0] == clients[0].ip and a[1] == row["svc_id"] for a in affinity), affinity


def test_maglev_spreads_and_follows_its_table(
    lab: Lab, work: Workload, clients: tuple[Container, Container]
) -> None:
    web = backends(work, "mag", NODES[0], NODES[1], NODES[1])
    ann = {"service.glia.io/lb-algorithm": "maglev"}
    (vip,) = work.apply(service_manifest("mag", {"app": "mag"}, HTTP, annotations=ann))
    wait_backends(lab, vip, 80, {str(c.ip) for c in web})
    client = clients[0]
    row = lb_frontend(lab, client.node, vip, 80)
    assert row["algorithm"] == "maglev", row

    counts = http_names(lab, client, vip, 90)
    assert counts[FAILED] == 0 and set(counts) == {c.name for c in web}, counts

    # The backend of a connection is the table's entry at hash(5-tuple) % M.
    contents, _ = lb_maps(lab, client.node)
    table = contents.maglev[row["svc_id"]]
    name_of = {str(c.ip): c.name for c in web}
    by_id = {i: name_of[addr.ip] for i, addr in contents.backends.items() if addr.ip in name_of}
    sports = list(range(21000, 21040))
    got = dict(
        line.split()
        for line in netns_python(
            client, HTTP_FROM_PORTS, vip, ",".join(map(str, sports))
        ).splitlines()
    )
    want = {
        str(p): by_id[table[tuple_hash(str(client.ip), vip, p, 80, IPPROTO_TCP) % MAGLEV_M]]
        for p in sports
    }
    assert got == want
    assert len(set(want.values())) == 3, Counter(want.values())


def _kill_httpd(lab: Lab, ctr: Container) -> float:
    """Stop the backend's httpd (not the container); the moment it died."""
    pids = children(container_pid(lab, ctr), "httpd")
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    return time.monotonic()


def _withdrawn_everywhere(lab: Lab, vip: str, ip: str, since: float) -> dict[str, float]:
    """Seconds from ``since`` until each node's maps stop giving ``ip`` a slot."""
    seen: dict[str, float] = {}
    deadline = since + 10.0
    while len(seen) < len(NODES) and time.monotonic() < deadline:
        for node in NODES:
            if node not in seen:
                row = lb_frontend(lab, node, vip, 80)
                if row is not None and ip not in slotted(row):
                    seen[node] = time.monotonic() - since
        time.sleep(0.01)
    return seen


def test_unhealthy_backend_is_withdrawn_everywhere_and_returns(
    lab: Lab, work: Workload, clients: tuple[Container, Container]
) -> None:
    web = backends(work, "health", NODES[0], NODES[1], NODES[1])
    (vip,) = work.apply(
        service_manifest("health", {"app": "health"}, HTTP, annotations=FAST_HEALTH)
    )
    all_ips = {str(c.ip) for c in web}
    wait_backends(lab, vip, 80, all_ips)
    sick = web[0]  # on n1: withdrawn on its own node and on the other one

    killed = _kill_httpd(lab, sick)
    took = _withdrawn_everywhere(lab, vip, str(sick.ip), killed)
    print(f"withdrawal after the server stopped: {took}")
    assert set(took) == set(NODES) and max(took.values()) <= WITHDRAW_LIMIT, took
    wait_backends(lab, vip, 80, all_ips - {str(sick.ip)})

    # Shown as not ready, with its node, by `glia service list` and `glia bpf lb list`.
    listed = json.loads(glia(lab, "service", "list", "-o", "json", "--node", NODES[1]))
    svc = next(s for s in listed if s["name"] == "health")
    states = {(b["ip"], b["node"], b["ready"]) for b in svc["backends"]}
    assert states == {(str(c.ip), c.node.split("/")[1], c is not sick) for c in web}, states
    rows = json.loads(glia(lab, "bpf", "lb", "list", "-o", "json", "--node", NODES[1]))
    row = next(r for r in rows if r["vip"] == vip)
    assert {(b["ip"], b["state"], b["slot"] is None) for b in row["backends"]} == {
        (str(c.ip), "ready" if c is not sick else "not-ready", c is sick) for c in web
    }, row
    assert "not-ready" in glia(lab, "service", "list", "--node", NODES[0])

    # New connections never reach it (a request there would fail: nothing listens).
    for client in clients:
        counts = http_names(lab, client, vip, 60)
        assert set(counts) == {c.name for c in web if c is not sick}, counts

    # Its server back: ready again on every node, and used again.
    lab.exec(f"{sick.node}/{sick.name}", ["httpd", "-p", "80", "-h", "/www"], check=True)
    wait_backends(lab, vip, 80, all_ips, timeout=5.0)
    counts = http_names(lab, clients[1], vip, 60)
    assert set(counts) == {c.name for c in web}, counts


def test_deleting_a_service_removes_every_map_entry_it_made(
    lab: Lab, work: Workload, clients: tuple[Container, Container], tmp_path: Path
) -> None:
    web = backends(work, "gone", NODES[0], NODES[1])
    work.endpoint_ready(*web)
    before = {node: lb_maps(lab, node) for node in NODES}
    manifests = [
        service_manifest(
            "del-mag",
            {"app": "gone"},
            [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}],
            annotations={"service.glia.io/lb-algorithm": "maglev"},
        ),
        service_manifest("del-aff", {"app": "gone"}, HTTP, client_ip_affinity=True),
    ]
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    for m in manifests:  # so the test's clean-up deletes them should the test fail
        work.services[("default", m["metadata"]["name"])] = m
    glia(lab, "apply", "-f", str(path), "--node", NODES[1])
    mag, aff = (
        work.api.config_services(name=m["metadata"]["name"])[0]["spec"]["clusterIP"]
        for m in manifests
    )
    work.vips.update({mag, aff})
    for vip in (mag, aff):
        wait_backends(lab, vip, 80, {str(c.ip) for c in web})
    wait_backends(lab, mag, 53, {str(c.ip) for c in web}, proto="UDP")
    for client in clients:
        assert FAILED not in http_names(lab, client, aff, 3)
    made = {node: lb_maps(lab, node) for node in NODES}
    for node in NODES:
        (contents, affinity), (old, old_affinity) = made[node], before[node]
        assert len(contents.services) == len(old.services) + 3, contents.services
        assert len(contents.maglev) == len(old.maglev) + 2, node
        assert len(affinity) > len(old_affinity), node  # the clients' affinity entries

    glia(lab, "delete", "-f", str(path), "--node", NODES[0])

    for node in NODES:

        def as_before(n: str = node) -> bool:
            return lb_maps(lab, n) == before[n]

        wait_for(f"{node}: the lb4 maps as before the apply", as_before)
        rows = json.loads(glia(lab, "bpf", "lb", "list", "-o", "json", "--node", node))
        assert not [r for r in rows if r["vip"] in (mag, aff)], rows


def test_get_services_yaml_round_trips(
    lab: Lab, work: Workload, clients: tuple[Container, Container]
) -> None:
    manifest = service_manifest(
        "trip",
        {"app": "trip"},
        [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ],
        annotations={"service.glia.io/health-check": "http", "team": "blue"},
        client_ip_affinity=True,
    )
    (vip,) = work.apply(manifest)
    shown = glia(lab, "get", "services", "trip", "-o", "yaml", "--node", NODES[1])
    doc = yaml.safe_load(shown)
    assert doc["spec"]["clusterIP"] == vip
    assert doc["spec"]["selector"] == {"app": "trip"}
    assert doc["metadata"]["annotations"] == manifest["metadata"]["annotations"]
    assert doc["spec"]["sessionAffinity"] == "ClientIP"
    assert [
        (p["name"], p["port"], p["targetPort"], p["protocol"]) for p in doc["spec"]["ports"]
    ] == [
        ("http", 80, 8080, "TCP"),
        ("dns", 53, 53, "UDP"),
    ]
    # Applied back as it was shown: nothing changes, not even the ClusterIP.
    assert "unchanged" in glia(lab, "apply", "-f", "-", "--node", NODES[0], stdin=shown)
    again = glia(lab, "get", "services", "trip", "-o", "yaml", "--node", NODES[0])
    assert yaml.safe_load(again) == doc


def test_service_without_backends_refuses_at_once(
    lab: Lab, work: Workload, clients: tuple[Container, Container]
) -> None:
    both = [
        work.container(node, f"glia-none{i}", {"app": "none"}) for i, node in enumerate(NODES, 1)
    ]
    for ctr in both:
        work.spawn(ctr, UDP_SERVER, ctr.name, str(UDP_PORT))
    ports = [
        {"name": "http", "port": 80},
        {"name": "dns", "port": 53, "targetPort": UDP_PORT, "protocol": "UDP"},
    ]
    (vip,) = work.apply(service_manifest("none", {"app": "none"}, ports, annotations=FAST_HEALTH))
    wait_backends(lab, vip, 80, {str(c.ip) for c in both})
    wait_backends(lab, vip, 53, {str(c.ip) for c in both}, proto="UDP")
    client = clients[0]
    assert netns_python(client, TCP_CONNECT, vip, "80").split()[0] == "connected"
    assert netns_python(client, UDP_CLIENT, vip, "53", "1").split()[0] == "reply"

    for ctr in both:
        work.remove(ctr)
    wait_backends(lab, vip, 80, set())
    wait_backends(lab, vip, 53, set(), proto="UDP")
    drops = metrics(lab, client.node)

    for client in clients:
        tcp = [netns_python(client, TCP_CONNECT, vip, "80").split() for _ in range(3)]
        assert all(verdict == "refused" and float(s) < 1.0 for verdict, s in tcp), tcp
        udp = [
            line.split() for line in netns_python(client, UDP_CLIENT, vip, "53", "3").splitlines()
        ]
        assert all(verdict == "refused" and float(s) < 1.0 for verdict, s in udp), udp
        print(f"{client.name}: refused after TCP {tcp}, UDP {udp}")
        r = lab.exec(
            f"{client.node}/{client.name}",
            ["timeout", "3", "wget", "-q", "-O", "-", f"http://{vip}/"],
        )
        assert r.returncode != 0 and "refused" in r.stderr, r
    counted = metrics(lab, clients[0].node).get(("DROP_NO_SERVICE", "egress"), 0)
    assert counted - drops.get(("DROP_NO_SERVICE", "egress"), 0) >= 7
