"""The lab's naming and addressing rules (glia.lab.topology): pure, no kernel."""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glia.lab import topology
from glia.lab.topology import TopologyError


def test_names_addresses_and_paths_of_one_node() -> None:
    topo = topology.build("gliat", 2, 3, Path("/run/glia/lab-gliat"))
    n = topo.node("c2", "n3")
    assert n.netns == "gliat-c2-n3"
    assert n.ip == ipaddress.IPv4Address("198.18.2.3")
    assert n.ref == "c2/n3" and n.key == "c2-n3"
    assert n.socket == Path("/run/glia/lab-gliat/nodes/c2-n3/agent.sock")
    assert n.state_dir == Path("/run/glia/lab-gliat/nodes/c2-n3/state")
    assert n.bpf_pin_dir == Path("/sys/fs/bpf/glia/lab-gliat/c2-n3")
    assert len(n.underlay_veth) <= 15
    c = topo.cluster("c2")
    assert c.id == 2
    assert c.etcd_netns == "gliat-c2-etcd"
    assert c.etcd_endpoint == "https://198.18.2.254:2379"
    assert c.pod_pool == ipaddress.IPv4Network("10.2.0.0/16")
    assert c.operator_node.name == "n1"
    assert c.etcd_data_dir.name.startswith("glia")
    assert topo.netns_names[-1] == "gliat-underlay"
    assert len(set(topo.netns_names)) == 2 * 3 + 2 + 2
    assert topo.world_netns == "gliat-world" and topo.world_netns in topo.netns_names
    assert topo.world_url == "http://203.0.113.10:80/"


def test_the_world_is_outside_every_pool_service_cidr_and_the_underlay() -> None:
    assert topology.WORLD_IP in topology.WORLD_NET
    assert topology.WORLD_UNDERLAY_IP in topology.UNDERLAY
    assert not topology.WORLD_NET.overlaps(topology.UNDERLAY)
    assert not topology.WORLD_NET.overlaps(topology.SERVICE_SUPERNET)
    assert not any(topology.WORLD_NET.overlaps(topology.pod_pool(i)) for i in range(1, 256))
    topo = topology.build("glia", 4, 5, Path("/run/glia/lab"))
    taken = [n.ip for n in topo.nodes] + [c.etcd_ip for c in topo.clusters]
    assert topology.WORLD_UNDERLAY_IP not in taken


def test_every_address_is_in_the_underlay_and_unique() -> None:
    topo = topology.build("glia", 4, 5, Path("/run/glia/lab"))
    ips = [n.ip for n in topo.nodes] + [c.etcd_ip for c in topo.clusters]
    assert len(set(ips)) == len(ips)
    assert all(ip in topology.UNDERLAY for ip in ips)
    veths = [n.underlay_veth for n in topo.nodes] + [c.etcd_veth for c in topo.clusters]
    assert len(set(veths)) == len(veths)
    assert all(len(v) <= 15 for v in veths)


def test_service_cidrs_hold_100k_and_overlap_nothing() -> None:
    ids = range(1, topology.MAX_CLUSTERS + 1)
    services = [topology.service_cidr(i) for i in ids]
    pools = [topology.pod_pool(i) for i in range(1, 256)]
    for s in services:
        assert s.num_addresses >= 100_000
        assert s.subnet_of(topology.SERVICE_SUPERNET)
        assert not s.overlaps(topology.UNDERLAY)
        assert not any(s.overlaps(p) for p in pools)
    for a, b in itertools.combinations(services, 2):
        assert not a.overlaps(b)
    assert topology.service_cidr(1) == ipaddress.IPv4Network("100.64.0.0/15")
    with pytest.raises(TopologyError):
        topology.service_cidr(topology.MAX_CLUSTERS + 1)


@pytest.mark.parametrize("name", ["glia", "gliat", "glia2", "gliademo"])
def test_lab_names_accepted(name: str) -> None:
    assert topology.validate_lab_name(name) == name


@pytest.mark.parametrize("name", ["", "lab", "glia-x", "Glia", "gliaverylong1", "glia_x"])
def test_lab_names_refused(name: str) -> None:
    with pytest.raises(TopologyError, match="lab name"):
        topology.validate_lab_name(name)


@pytest.mark.parametrize(
    ("clusters", "nodes"), [(0, 1), (1, 0), (topology.MAX_CLUSTERS + 1, 1), (1, 201)]
)
def test_shapes_refused(clusters: int, nodes: int) -> None:
    with pytest.raises(TopologyError):
        topology.build("glia", clusters, nodes, Path("/run/glia/lab"))


@pytest.mark.parametrize("path", ["/", "/tmp", "/var/lib/x", "relative/glia", "/glia"])
def test_unsafe_lab_dirs_refused(path: str) -> None:
    with pytest.raises(TopologyError, match="lab directory"):
        topology.build("glia", 1, 1, Path(path))


def test_default_lab_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(topology.LAB_DIR_ENV, raising=False)
    assert topology.default_lab_dir("glia") == Path("/run/glia/lab")
    assert topology.default_lab_dir("gliat") == Path("/run/glia/lab-gliat")
    monkeypatch.setenv(topology.LAB_DIR_ENV, "/tmp/glia-x")
    assert topology.default_lab_dir("gliat") == Path("/tmp/glia-x")


def test_own_namespaces_are_recognised_and_others_are_not() -> None:
    topo = topology.build("glia", 1, 1, Path("/run/glia/lab"))
    for name in ("glia-underlay", "glia-world", "glia-c1-n1", "glia-c12-n40", "glia-c3-etcd"):
        assert topo.is_own_netns(name), name
    for name in (
        "gliat-c1-n1",  # another lab
        "glia-dev-n",
        "glia-c1-n1x",
        "glia-c1",
        "netns-1234",
        "glia-underlay2",
        "glia-world2",
        "gliat-world",
        "xglia-c1-n1",
    ):
        assert not topo.is_own_netns(name), name


@given(st.text(alphabet="gliatc0123456789-nuderlyxwo", max_size=20))
def test_recognised_names_are_exactly_the_ones_build_makes(name: str) -> None:
    topo = topology.build("glia", 3, 4, Path("/run/glia/lab"))
    if name in topo.netns_names:
        assert topo.is_own_netns(name)
    if topo.is_own_netns(name):
        assert name.startswith("glia-")


def test_node_cgroups_are_glia_named_and_per_lab() -> None:
    topo = topology.build("gliat", 2, 2, Path("/run/glia/lab-gliat"))
    n = topo.node("c2", "n1")
    assert n.cgroup_name == "glia-lab-gliat-c2-n1"
    root = Path("/sys/fs/cgroup/unified")
    assert n.cgroup(root) == root / "glia-lab-gliat-c2-n1"
    assert n.hooks_dir == Path("/run/glia/lab-gliat/nodes/c2-n1/hooks.d")
    assert n.oci_hook_log.parent == n.dir
    names = [m.cgroup_name for m in topo.nodes]
    assert len(set(names)) == 4 and all(topo.is_own_cgroup(x) for x in names)
    # The default lab "glia" is a prefix of "gliat": neither claims the other's cgroups.
    other = topology.build("glia", 1, 1, Path("/run/glia/lab"))
    assert other.nodes[0].cgroup_name == "glia-lab-glia-c1-n1"
    assert not other.is_own_cgroup(n.cgroup_name)
    assert not topo.is_own_cgroup(other.nodes[0].cgroup_name)
    for name in ("glia-lab-gliat", "glia-lab-gliat-c1", "glia-lab-gliat-c1-n1-x", "libpod_parent"):
        assert not topo.is_own_cgroup(name), name


def test_discover_shape() -> None:
    assert topology.discover_shape("glia", [], []) == (0, 0)
    names = ["glia-c1-n1", "glia-c2-etcd", "glia-c1-n3", "gliat-c9-n9", "glia-underlay"]
    assert topology.discover_shape("glia", names, []) == (2, 3)
    assert topology.discover_shape("glia", ["glia-c1-etcd"], []) == (1, 1)
    assert topology.discover_shape("glia", [], ["c3-n2", "junk", "c1-n4"]) == (3, 4)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("c1/n1", topology.Target("c1", "n1")),
        ("c2/n3/web", topology.Target("c2", "n3", "web")),
    ],
)
def test_parse_target(text: str, want: topology.Target) -> None:
    assert topology.parse_target(text) == want


@pytest.mark.parametrize("text", ["c1", "c1/", "/n1", "c1/n1/", "a/b/c/d", ""])
def test_parse_target_refuses(text: str) -> None:
    with pytest.raises(TopologyError, match="CLUSTER/NODE"):
        topology.parse_target(text)


def test_parse_target_without_container() -> None:
    with pytest.raises(TopologyError, match="CLUSTER/NODE"):
        topology.parse_target("c1/n1/web", allow_container=False)


def test_unknown_cluster_and_node_named_in_error() -> None:
    topo = topology.build("glia", 1, 2, Path("/run/glia/lab"))
    with pytest.raises(TopologyError, match=r"no cluster 'c2'.*c1"):
        topo.node("c2", "n1")
    with pytest.raises(TopologyError, match=r"no node 'n3'.*n1, n2"):
        topo.node("c1", "n3")
