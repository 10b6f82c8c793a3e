"""Docker containers with glia endpoints: a real dockerd per lab node (glia.lab.docker)
using glia as network and IPAM driver (docs/docker.md), next to podman containers."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from labhelpers import (
    NODES,
    Workload,
    glia_ok,
    http,
    restart_agents,
    service_manifest,
    wait_backends,
    wait_for,
)

from glia.lab.docker import NETWORK, PRIVATE_RUN, RUN_FS, DockerError, NodeDocker
from glia.lab.lab import Lab
from glia.lab.podman import default_command
from glia.lab.topology import IMAGE
from glia.model.identity import MIN_LOCAL


@dataclass
class DockerCtr:
    node: str
    name: str
    ip: str


class Docker:
    """Each node's dockerd, and the docker containers a test runs (removed afterwards)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.d = {n: NodeDocker(lab.topo.node(*n.split("/"))) for n in NODES}
        self.ctrs: list[DockerCtr] = []

    def run(
        self,
        node: str,
        name: str,
        labels: dict[str, str],
        network: str = NETWORK,
        extra: tuple[str, ...] = (),
    ) -> DockerCtr:
        args = ["run", "-d", "--name", name, "--network", network, *extra]
        for k, v in labels.items():
            args += ["--label", f"{k}={v}"]
        try:
            self.d[node].cli([*args, IMAGE, *default_command(name)])
        except DockerError:
            self.d[node].cli(["rm", "-f", name], check=False)  # created, not started
            raise
        ip = self.d[node].cli(
            [
                "inspect",
                "-f",
                f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                name,
            ]
        )
        ctr = DockerCtr(node, name, ip.strip())
        self.ctrs.append(ctr)
        return ctr

    def rm(self, ctr: DockerCtr) -> None:
        self.d[ctr.node].cli(["rm", "-f", ctr.name])
        self.ctrs.remove(ctr)

    def http(self, src: DockerCtr, ip: str) -> str:
        argv = ["exec", src.name, "timeout", "3", "wget", "-q", "-O", "-", f"http://{ip}/"]
        return self.d[src.node].cli(argv, check=False).strip()

    def exec(self, src: DockerCtr, *argv: str) -> str:
        """stdout and stderr of ``argv`` in ``src`` (timed out after 5 s), whatever its status."""
        cmd = ["exec", src.name, "sh", "-c", 'timeout 5 "$@" 2>&1', "-", *argv]
        return self.d[src.node].cli(cmd, check=False)

    def close(self) -> None:
        for ctr in list(self.ctrs):
            self.rm(ctr)


@pytest.fixture(scope="module")
def dockerds(lab: Lab) -> Iterator[dict[str, NodeDocker]]:
    ds = {n: NodeDocker(lab.topo.node(*n.split("/"))) for n in NODES}
    # dockerd's fixed /run directories are the holder's own: none is created on the host.
    absent = [p for p in (Path("/run") / name for name in PRIVATE_RUN) if not p.exists()]
    try:
        for d in ds.values():
            d.start(lab.topo.rootfs_dir)
        yield ds
    finally:
        for d in ds.values():
            d.remove_all()
            d.stop()
            d.stop_holder()
    assert not [p for p in absent if p.exists()], "dockerd created host paths"


@pytest.fixture
def docker(lab: Lab, dockerds: dict[str, NodeDocker]) -> Iterator[Docker]:
    dk = Docker(lab)
    try:
        yield dk
    finally:
        dk.close()


def endpoint_at(lab: Lab, node: str, ip: str) -> dict[str, Any] | None:
    for ep in lab.agent(node).endpoints():
        if ep.get("ip") == ip:
            return ep
    return None


def labelled(lab: Lab, ctr: DockerCtr) -> dict[str, Any] | None:
    ep = endpoint_at(lab, ctr.node, ctr.ip)
    return ep if ep and ep.get("identity", 0) >= MIN_LOCAL and ep.get("state") == "ready" else None


def ipam_holder(lab: Lab, node: str, ip: str) -> str | None:
    spec = lab.topo.node(*node.split("/"))
    data = json.loads((spec.state_dir / "ipam.json").read_text())
    holder = data["allocations"].get(ip)
    return str(holder) if holder is not None else None


def test_docker_containers_on_two_nodes_and_podman(
    lab: Lab, work: Workload, docker: Docker
) -> None:
    a = docker.run(NODES[0], "glia-dka", {"app": "dka", "tier": "front"})
    b = docker.run(NODES[1], "glia-dkb", {"app": "dkb"})
    pod = work.container(NODES[1], "glia-dkpod", {"app": "dkpod"})
    near = work.container(NODES[0], "glia-dknear", {"app": "dkpod"})
    # The endpoint carries the labels of `docker run --label`, and an identity.
    ep = wait_for("glia-dka's endpoint with its labels", lambda: labelled(lab, a))
    assert ep["labels"]["app"] == "dka" and ep["labels"]["tier"] == "front"
    assert ipam_holder(lab, a.node, a.ip) == f"{ep['container_id']}/eth0"
    wait_for("glia-dkb's endpoint", lambda: labelled(lab, b))
    # docker -> docker across nodes, docker -> podman, podman -> docker.
    assert wait_for("glia-dka reaching glia-dkb", lambda: docker.http(a, b.ip)) == "glia-dkb"
    assert (
        wait_for("glia-dka reaching the pod", lambda: docker.http(a, str(pod.ip))) == "glia-dkpod"
    )
    assert wait_for("the pod reaching glia-dka", lambda: http(lab, pod, a.ip)) == "glia-dka"
    # The same node: docker <-> podman.
    assert docker.http(a, str(near.ip)) == "glia-dknear"
    assert http(lab, near, a.ip) == "glia-dka"
    # `glia lab docker NODE -- ARGS` reaches the same dockerd.
    names = glia_ok(lab, "lab", "docker", a.node, "--", "ps", "--format", "{{.Names}}")
    assert names.split() == ["glia-dka"]


def test_network_create_without_subnet_next_to_pods_fails_fast_with_advice(
    lab: Lab, work: Workload, dockerds: dict[str, NodeDocker]
) -> None:
    # A running pod puts a /32 route inside the pod CIDR: dockerd's overlap check
    # would ask glia for a pool forever; the driver ends that with what to do.
    node = NODES[0]
    work.container(node, "glia-dknosub", {"app": "dknosub"})
    d = dockerds[node]
    started = time.monotonic()
    create = ["network", "create", "-d", "glia", "--ipam-driver", "glia", "glia-nosub"]
    with pytest.raises(DockerError) as err:
        d.cli(create)
    assert time.monotonic() - started < 20, "dockerd looped on RequestPool"
    assert f"create the network with --subnet {d.pod_cidr()}" in str(err.value), err.value
    assert "glia-nosub" not in d.cli(["network", "ls", "--format", "{{.Name}}"]).split()


def test_docker_container_in_a_service_with_a_pod(lab: Lab, work: Workload, docker: Docker) -> None:
    backend = docker.run(NODES[0], "glia-dksvc1", {"app": "dkmixed"})
    pod = work.container(NODES[1], "glia-dksvc2", {"app": "dkmixed"})
    client = docker.run(NODES[1], "glia-dkclient", {"app": "dkclient"})
    wait_for("the docker backend's identity", lambda: labelled(lab, backend))
    work.endpoint_ready(pod)
    (vip,) = work.apply(service_manifest("dkmixed", {"app": "dkmixed"}, [{"port": 80}]))
    wait_backends(lab, vip, 80, {backend.ip, str(pod.ip)})
    wait_for("the docker client's endpoint", lambda: labelled(lab, client))
    seen: Counter[str] = Counter(docker.http(client, vip) for _ in range(30))
    assert set(seen) == {"glia-dksvc1", "glia-dksvc2"}, seen
    # A podman client gets the same Service, the docker backend included.
    other = work.container(NODES[0], "glia-dkpodclient", {"app": "dkclient"})
    names = Counter(http(lab, other, vip) for _ in range(30))
    assert set(names) == {"glia-dksvc1", "glia-dksvc2"}, names


def test_docker_rm_releases_the_address_and_endpoint(lab: Lab, docker: Docker) -> None:
    ctr = docker.run(NODES[0], "glia-dkgone", {"app": "dkgone"})
    ep = wait_for("glia-dkgone's endpoint", lambda: labelled(lab, ctr))
    host_if = ep["host_ifname"]
    # A CNI GC (a CNI runtime listing its own attachments) leaves Docker's alone.
    lab.agent(ctr.node).cni_gc({"valid_attachments": []})
    assert endpoint_at(lab, ctr.node, ctr.ip) == ep
    docker.rm(ctr)
    assert endpoint_at(lab, ctr.node, ctr.ip) is None
    assert ipam_holder(lab, ctr.node, ctr.ip) is None
    links = lab.node_exec(ctr.node, ["ip", "-o", "link", "show"]).stdout
    wait_for(
        f"{host_if} to go",
        lambda: host_if not in lab.node_exec(ctr.node, ["ip", "-o", "link"]).stdout,
    )
    assert "gliap" not in links


def test_dockerd_restart_keeps_endpoints(
    lab: Lab, docker: Docker, dockerds: dict[str, NodeDocker]
) -> None:
    a = docker.run(NODES[0], "glia-dkstay", {"app": "dkstay"})
    b = docker.run(NODES[1], "glia-dkpeer", {"app": "dkpeer"})
    ep = wait_for("glia-dkstay's endpoint", lambda: labelled(lab, a))
    wait_for("glia-dkpeer's endpoint", lambda: labelled(lab, b))
    assert wait_for("reachable", lambda: docker.http(b, a.ip)) == "glia-dkstay"
    d = dockerds[NODES[0]]
    assert d.stop()
    # dockerd down (live restore keeps the container): the endpoint stays, traffic flows.
    assert endpoint_at(lab, a.node, a.ip) == ep
    assert docker.http(b, a.ip) == "glia-dkstay"
    d.start(lab.topo.rootfs_dir)
    assert endpoint_at(lab, a.node, a.ip) == ep
    assert ipam_holder(lab, a.node, a.ip) == f"{ep['container_id']}/eth0"
    assert docker.http(b, a.ip) == "glia-dkstay"
    assert docker.http(a, b.ip) == "glia-dkpeer"
    # The restarted dockerd still removes through glia.
    docker.rm(a)
    assert endpoint_at(lab, a.node, a.ip) is None
    assert ipam_holder(lab, a.node, a.ip) is None


def test_policy_selects_docker_containers_by_label(
    lab: Lab, work: Workload, docker: Docker, tmp_path: Path
) -> None:
    web = docker.run(NODES[0], "glia-dkpolweb", {"app": "dkpolweb"})
    allowed = docker.run(NODES[1], "glia-dkpolok", {"app": "dkpolclient"})
    refused = docker.run(NODES[0], "glia-dkpolno", {"app": "dkpolother"})
    pod = work.container(NODES[1], "glia-dkpolpod", {"app": "dkpolother"})
    for ctr in (web, allowed, refused):
        wait_for(f"{ctr.name}'s identity", lambda c=ctr: labelled(lab, c))
    work.endpoint_ready(pod)
    assert wait_for("open before the policy", lambda: docker.http(refused, web.ip)) == web.name
    policy = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "dkpol"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "dkpolweb"}},
            "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "dkpolclient"}}]}],
        },
    }
    path = tmp_path / "dkpol.yaml"
    path.write_text(yaml.safe_dump(policy))
    glia_ok(lab, "apply", "-f", str(path), "--node", NODES[0])
    try:
        wait_for("the docker client refused", lambda: docker.http(refused, web.ip) == "")
        assert docker.http(allowed, web.ip) == web.name
        assert http(lab, pod, web.ip) == ""
    finally:
        glia_ok(lab, "delete", "-f", str(path), "--node", NODES[0])
    assert wait_for("open again", lambda: docker.http(refused, web.ip)) == web.name


def test_agent_restart_keeps_docker_endpoints(lab: Lab, docker: Docker) -> None:
    a = docker.run(NODES[0], "glia-dkagent", {"app": "dkagent"})
    b = docker.run(NODES[1], "glia-dkagentpeer", {"app": "dkagentpeer"})
    ep = wait_for("glia-dkagent's endpoint", lambda: labelled(lab, a))
    wait_for("the peer's endpoint", lambda: labelled(lab, b))
    restart_agents(lab, [a.node])
    again = endpoint_at(lab, a.node, a.ip)
    assert again is not None
    assert again["identity"] == ep["identity"] and again["labels"] == ep["labels"]
    # The container's name, an alias read from dockerd, stays in the record.
    assert "glia-dkagent" in ep["aliases"] and again["aliases"] == ep["aliases"]
    assert wait_for("reachable after the restart", lambda: docker.http(b, a.ip)) == a.name
    # The restarted agent's driver still removes it (its state was on disk).
    docker.rm(a)
    assert endpoint_at(lab, a.node, a.ip) is None
    assert ipam_holder(lab, a.node, a.ip) is None


def test_docker_containers_resolve_glia_services(lab: Lab, work: Workload, docker: Docker) -> None:
    """dockerd's daemon.json names the node's glia DNS (docs/docker.md): Docker's
    embedded DNS forwards Service names there and still answers container names."""
    web = work.container(NODES[0], "glia-dkdnsweb", {"app": "dkdnsweb"})
    client = docker.run(NODES[1], "glia-dkdnscli", {"app": "dkdnscli"})
    peer = docker.run(NODES[1], "glia-dkdnspeer", {"app": "dkdnspeer"})
    work.endpoint_ready(web)
    wait_for("the docker client's endpoint", lambda: labelled(lab, client))
    (vip,) = work.apply(service_manifest("dkweb", {"app": "dkdnsweb"}, [{"port": 80}]))
    wait_backends(lab, vip, 80, {str(web.ip)})
    resolv = docker.exec(client, "cat", "/etc/resolv.conf")
    assert "nameserver 127.0.0.11" in resolv, resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv, resolv
    assert "ndots:5" in resolv, resolv
    # The full name, and the short one through the search list (busybox
    # nslookup searches names without a dot; its status is 1 when any searched
    # form is unknown, so its output tells).
    for name in ("dkweb.default.svc.cluster.local", "dkweb"):
        out = wait_for(
            name, lambda n=name: (o := docker.exec(client, "nslookup", n)) and vip in o and o
        )
        assert re.search(rf"Name:\s+dkweb\.default\.svc\.cluster\.local\s+Address:\s+{vip}\b", out)
    # Reached by those names (wget resolves through the C library: search list, ndots).
    for url in ("http://dkweb.default.svc.cluster.local/", "http://dkweb/"):
        got = docker.exec(client, "wget", "-q", "-O", "-", url).strip()
        assert got == "glia-dkdnsweb", (url, got)
    # Docker's own container names still resolve (embedded DNS, same dockerd).
    # (ping: the C library's search, ending with the bare name Docker answers.)
    out = docker.exec(client, "ping", "-c", "1", "-W", "1", "glia-dkdnspeer")
    assert f"PING glia-dkdnspeer ({peer.ip})" in out, out
    assert docker.exec(client, "wget", "-q", "-O", "-", "http://glia-dkdnspeer/").strip() == (
        "glia-dkdnspeer"
    )


def test_podman_pods_resolve_docker_containers_by_name_and_alias(
    lab: Lab, work: Workload, docker: Docker
) -> None:
    """After Join the agent reads the container's name and --network-alias from
    dockerd: they become the endpoint's DNS aliases, answered in every pod."""
    ctr = docker.run(
        NODES[0], "glia-dkname", {"app": "dkname"}, extra=("--network-alias", "DkName-DB")
    )
    pod = work.container(NODES[1], "glia-dknamepod", {"app": "dknamepod"})
    ep = wait_for("glia-dkname's endpoint", lambda: labelled(lab, ctr))
    assert ep["name"] == ep["container_id"][:12]  # the key stays the endpoint id's
    assert {"glia-dkname", "dkname-db"} <= set(ep["aliases"]), ep["aliases"]

    def lookup(name: str) -> str:
        r = lab.exec(f"{pod.node}/{pod.name}", ["timeout", "5", "nslookup", name])
        return r.stdout + r.stderr

    # busybox nslookup exits 1 when any searched form is unknown: its output tells.
    for name in ("glia-dkname", "dkname-db"):
        want = rf"Name:\s+{name}\.cluster\.local\s+Address:\s+{re.escape(ctr.ip)}\b"
        assert wait_for(f"{name} in DNS", lambda n=name, w=want: re.search(w, lookup(n)))
    assert wait_for("reached by name", lambda: http(lab, pod, "glia-dkname")) == "glia-dkname"
    docker.rm(ctr)
    assert wait_for("the name gone", lambda: "NXDOMAIN" in lookup("glia-dkname.cluster.local"))


def _cidr(lab: Lab, node: str) -> ipaddress.IPv4Network:
    spec = lab.topo.node(*node.split("/"))
    return ipaddress.IPv4Network(json.loads((spec.state_dir / "ipam.json").read_text())["cidr"])


def _pending(lab: Lab, node: str) -> list[str]:
    spec = lab.topo.node(*node.split("/"))
    held = json.loads((spec.state_dir / "ipam.json").read_text())["allocations"]
    return [ip for ip, owner in held.items() if str(owner).startswith("docker:")]


def test_docker_run_ip_takes_a_free_address_and_refuses_others(
    lab: Lab, docker: Docker, dockerds: dict[str, NodeDocker]
) -> None:
    """`docker run --ip` (Docker allows it on a network created with --subnet: the
    node's pod CIDR) gets that address; one in use or outside the CIDR is refused,
    and the refusal reaches the `docker run` user."""
    node = NODES[0]
    d = dockerds[node]
    cidr = _cidr(lab, node)
    net = "glia-fixed"
    d.cli(["network", "create", "-d", "glia", "--ipam-driver", "glia", "--subnet", str(cidr), net])
    try:
        peer = docker.run(NODES[1], "glia-dkippeer", {"app": "dkippeer"})
        want = str(cidr.network_address + 100)  # below the chained plugin's range
        fixed = docker.run(node, "glia-dkfixed", {"app": "dkfixed"}, net, ("--ip", want))
        assert fixed.ip == want
        ep = wait_for("the fixed address' endpoint", lambda: labelled(lab, fixed))
        assert ipam_holder(lab, node, want) == f"{ep['container_id']}/eth0"
        wait_for("the peer's endpoint", lambda: labelled(lab, peer))
        assert wait_for("reachable at --ip", lambda: docker.http(peer, want)) == "glia-dkfixed"
        # In use, the node's gateway, outside the node's CIDR: refused, nothing held.
        refused = {
            want: f"--ip {want} refused: {want} is in use",
            str(cidr.network_address + 1): "gateway",
            str(cidr.broadcast_address + 2): str(cidr.broadcast_address + 2),
        }
        for ip, why in refused.items():
            with pytest.raises(DockerError) as e:
                docker.run(node, "glia-dkiptaken", {"app": "dkiptaken"}, net, ("--ip", ip))
            assert why in str(e.value), str(e.value)
            assert ipam_holder(lab, node, want) == f"{ep['container_id']}/eth0"
            assert _pending(lab, node) == []
        docker.rm(fixed)
        assert ipam_holder(lab, node, want) is None
    finally:
        for ctr in [c for c in docker.ctrs if c.node == node]:
            docker.rm(ctr)
        d.cli(["network", "rm", net], check=False)


def test_dockerd_run_dirs_are_its_own(
    lab: Lab, docker: Docker, dockerds: dict[str, NodeDocker]
) -> None:
    """dockerd's /run/docker and /run/containerd are on the holder's private /run,
    which shows the host's other /run entries (the lab's own dir among them)."""
    docker.run(NODES[0], "glia-dkrun", {"app": "dkrun"})  # a shim: /run/containerd/s
    for d in dockerds.values():
        pid = d.pid()
        holder = d.holder_pid()
        assert pid is not None and holder is not None
        for p in (pid, holder):
            assert os.readlink(f"/proc/{p}/ns/mnt") == os.readlink(f"/proc/{holder}/ns/mnt")
        root = Path(f"/proc/{pid}/root")
        run = os.stat(root / "run").st_dev
        assert run != os.stat("/run").st_dev
        for name in PRIVATE_RUN:
            assert os.stat(root / "run" / name).st_dev == run, name
        assert (root / "run" / "docker" / "plugins").is_dir()
        mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        assert any(m.split()[4] == "/run" and RUN_FS in m.split(" - ")[1] for m in mounts)
        assert (root / str(lab.dir).lstrip("/")).is_dir()
    shims = dockerds[NODES[0]]
    assert (Path(f"/proc/{shims.pid()}/root/run/containerd/s")).is_dir()
