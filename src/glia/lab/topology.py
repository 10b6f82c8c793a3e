"""The lab's topology as pure data: names, addresses and paths, no I/O.

Called by :mod:`glia.lab.lab` (to build and tear down a lab), by
:mod:`glia.lab.cleanup` (to recognise what belongs to a lab from its name
alone, after a crash) and by tests. Every rule about how a lab is laid out
lives here, so the builder, the cleaner and the tests cannot disagree:

- namespaces ``<lab>-underlay`` (a bridge), ``<lab>-c<i>-n<j>`` (node ``n<j>`` of
  cluster ``c<i>``), ``<lab>-c<i>-etcd`` (that cluster's etcd), ``<lab>-world``
  ("the world": an HTTP server outside every pool, for egress);
- node address ``198.18.<i>.<j>/15``, etcd ``198.18.<i>.254``; the world
  ``198.18.0.253/15`` on the underlay and ``203.0.113.10/24`` (a documentation
  range, TEST-NET-3) behind it, which every node routes via ``198.18.0.253``;
- pod pool ``10.<i>.0.0/16`` (a /24 per node, allocated by the operator); the
  last /26 of each node's /24 is left to the chained plugins (docs/chaining.md):
  its first /27 to the ``glia-chained`` network's ``ptp``, its second to the
  ``glia-bridge`` network's ``bridge``; glia's own pods get addresses below it;
- service CIDR: the ``i``-th /15 of ``100.64.0.0/10`` (131072 addresses; overlaps
  no pod pool, no underlay address, no other cluster's services);
- files under the lab directory (each agent's remote cluster directory under
  its node's: ``nodes/c1-n1/clustermesh/c2.yaml``), bpffs pins under
  ``/sys/fs/bpf/glia/lab-<lab>``;
- a cgroup per node, ``glia-lab-<lab>-c<i>-n<j>``, at the top of the cgroup2
  hierarchy (whose mount point is only known at run time: see
  :mod:`glia.datapath.cgroup`), and of each cgroup v1 hierarchy that podman's
  ``--cgroup-parent`` fills.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LAB = "glia"
DEFAULT_LAB_DIR = Path("/run/glia/lab")
LAB_DIR_ENV = "GLIA_LAB_DIR"
LAB_NAME_ENV = "GLIA_LAB_NAME"

# Every name the lab creates starts with "glia" (the machine's safety rule); no
# "-" inside, so one lab's prefix never matches another lab's names.
_LAB_NAME_RE = re.compile(r"^glia[a-z0-9]{0,8}$")

UNDERLAY = ipaddress.IPv4Network("198.18.0.0/15")
UNDERLAY_BRIDGE = "br0"
NODE_IFNAME = "eth0"  # the underlay-facing device inside node and etcd namespaces
ETCD_HOST = 254  # last octet of a cluster's etcd
ETCD_PORT = 2379
ETCD_PEER_PORT = 2380
SERVICE_SUPERNET = ipaddress.IPv4Network("100.64.0.0/10")
SERVICE_PREFIXLEN = 15
NODE_MASK_SIZE = 24
CHAINED_PREFIX = 26  # the agents' chained_prefix: 62 chained pods per node
# "The world": a namespace on the underlay whose HTTP server has an address
# outside every pod pool, service CIDR and the underlay (egress is masqueraded).
WORLD_NET = ipaddress.IPv4Network("203.0.113.0/24")
WORLD_IP = ipaddress.IPv4Address("203.0.113.10")
WORLD_UNDERLAY_IP = ipaddress.IPv4Address("198.18.0.253")  # cluster ids start at 1
WORLD_VETH = "world"  # its end on the underlay bridge
WORLD_PORT = 80
WORLD_PROCESS = "world-http"  # its HTTP server's name in state.json

MAX_CLUSTERS = 2 ** (SERVICE_PREFIXLEN - SERVICE_SUPERNET.prefixlen)  # 32
MAX_NODES = 200  # keeps .250-.254 of each cluster's /24 for etcd members

BPFFS_ROOT = Path("/sys/fs/bpf/glia")
NETNS_DIR = Path("/run/netns")

IMAGE = "localhost/glia-busybox:latest"


class TopologyError(ValueError):
    """A lab shape or name that the lab cannot build."""


def validate_lab_name(name: str) -> str:
    if not _LAB_NAME_RE.match(name):
        raise TopologyError(
            f"lab name {name!r} must be 'glia' followed by at most 8 lowercase letters or "
            "digits (e.g. 'glia', 'gliat'): every namespace and pin of the lab starts with it"
        )
    return name


def default_lab_dir(name: str) -> Path:
    """``$GLIA_LAB_DIR``, else ``/run/glia/lab`` for the default lab, ``/run/glia/lab-<name>``."""
    env = os.environ.get(LAB_DIR_ENV)
    if env:
        return Path(env)
    return DEFAULT_LAB_DIR if name == DEFAULT_LAB else DEFAULT_LAB_DIR.with_name(f"lab-{name}")


def default_lab_name() -> str:
    return os.environ.get(LAB_NAME_ENV) or DEFAULT_LAB


def pod_pool(cluster_id: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.{cluster_id}.0.0/16")


def service_cidr(cluster_id: int) -> ipaddress.IPv4Network:
    """The ``cluster_id``-th /15 of 100.64.0.0/10: disjoint per cluster, 131072 addresses."""
    if not 1 <= cluster_id <= MAX_CLUSTERS:
        raise TopologyError(
            f"cluster id {cluster_id}: the lab's service CIDRs fit 1..{MAX_CLUSTERS}"
        )
    size = 2 ** (32 - SERVICE_PREFIXLEN)
    base = int(SERVICE_SUPERNET.network_address) + (cluster_id - 1) * size
    return ipaddress.IPv4Network((base, SERVICE_PREFIXLEN))


def underlay_ip(cluster_id: int, host: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"198.18.{cluster_id}.{host}")


def lab_dir_is_safe(path: Path) -> bool:
    """Whether ``path`` may be removed recursively by ``lab down``.

    An absolute path, not ``/``, with a component starting with "glia", so a
    mistyped ``GLIA_LAB_DIR`` can never make the lab delete someone else's tree.
    """
    if not path.is_absolute() or len(path.parts) < 3:
        return False
    return any(part.startswith("glia") for part in path.parts[1:])


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One lab node: a network namespace with its own agent and podman storage."""

    lab: str
    cluster: str  # "c1"
    cluster_id: int
    name: str  # "n1"
    index: int
    netns: str  # "<lab>-c1-n1"
    ip: ipaddress.IPv4Address
    underlay_veth: str  # the veth's end on the underlay bridge
    dir: Path  # <labdir>/nodes/c1-n1

    @property
    def ref(self) -> str:
        """How users name the node: ``c1/n1``."""
        return f"{self.cluster}/{self.name}"

    @property
    def key(self) -> str:
        """Flat form used in file and process names: ``c1-n1``."""
        return f"{self.cluster}-{self.name}"

    @property
    def socket(self) -> Path:
        return self.dir / "agent.sock"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def agent_process(self) -> str:
        """The agent's name in ``state.json``."""
        return f"{self.key}-agent"

    @property
    def agent_config(self) -> Path:
        return self.dir / "agent.yaml"

    @property
    def agent_log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def bpf_pin_dir(self) -> Path:
        return BPFFS_ROOT / f"lab-{self.lab}" / self.key

    @property
    def clustermesh_dir(self) -> Path:
        """The agent's remote cluster directory: ``<cluster>.yaml`` per other cluster."""
        return self.dir / "clustermesh"

    @property
    def containers_conf(self) -> Path:
        return self.dir / "containers.conf"

    @property
    def storage_conf(self) -> Path:
        return self.dir / "storage.conf"

    @property
    def cni_config_dir(self) -> Path:
        return self.dir / "cni" / "net.d"

    @property
    def podman_dir(self) -> Path:
        """graphroot, runroot and podman's tmp dir (its locks and events) live here."""
        return self.dir / "podman"

    @property
    def hooks_dir(self) -> Path:
        """podman's OCI hooks directory for this node (``hooks_dir`` in containers.conf)."""
        return self.dir / "hooks.d"

    @property
    def oci_hook_log(self) -> Path:
        """Where ``glia-oci-hook`` notes a container it could not put into the cgroup."""
        return self.dir / "oci-hook.log"

    @property
    def docker_dir(self) -> Path:
        """The node's dockerd (glia.lab.docker): data, exec root, API socket, log."""
        return self.dir / "docker"

    @property
    def docker_plugin_socket(self) -> Path:
        """The agent's Docker driver socket (``docker_plugin_socket``)."""
        return self.dir / "docker-plugin.sock"

    @property
    def cgroup_name(self) -> str:
        """The node's cgroup directory name, in the cgroup2 root (and in each v1 hierarchy)."""
        return cgroup_name(self.lab, self.key)

    def cgroup(self, cgroup2_root: Path) -> Path:
        """The node's cgroup v2 directory under the hierarchy mounted at ``cgroup2_root``."""
        return cgroup2_root / self.cgroup_name


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    lab: str
    name: str  # "c1"
    id: int
    nodes: tuple[NodeSpec, ...]
    etcd_netns: str
    etcd_ip: ipaddress.IPv4Address
    etcd_veth: str
    dir: Path  # <labdir>/clusters/c1

    @property
    def pod_pool(self) -> ipaddress.IPv4Network:
        return pod_pool(self.id)

    @property
    def service_cidr(self) -> ipaddress.IPv4Network:
        return service_cidr(self.id)

    @property
    def etcd_endpoint(self) -> str:
        return f"https://{self.etcd_ip}:{ETCD_PORT}"

    @property
    def etcd_process(self) -> str:
        return f"{self.name}-etcd"

    @property
    def operator_process(self) -> str:
        return f"{self.name}-operator"

    @property
    def etcd_data_dir(self) -> Path:
        return self.dir / "glia-etcd"  # EtcdServer deletes data dirs, so wants them named glia*

    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    @property
    def etcd_log(self) -> Path:
        return self.dir / "etcd.log"

    @property
    def operator_config(self) -> Path:
        return self.dir / "operator.yaml"

    @property
    def operator_log(self) -> Path:
        return self.dir / "operator.log"

    @property
    def operator_node(self) -> NodeSpec:
        """The operator runs in the cluster's first node namespace (it needs the underlay)."""
        return self.nodes[0]


@dataclass(frozen=True, slots=True)
class Topology:
    name: str
    dir: Path
    clusters: tuple[ClusterSpec, ...]

    @property
    def underlay_netns(self) -> str:
        return f"{self.name}-underlay"

    @property
    def world_netns(self) -> str:
        return f"{self.name}-world"

    @property
    def world_log(self) -> Path:
        return self.dir / "world" / "http.log"

    @property
    def world_url(self) -> str:
        return f"http://{WORLD_IP}:{WORLD_PORT}/"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def supervisor_log(self) -> Path:
        """What the lab's supervisor did: every daemon it found dead and restarted."""
        return self.dir / "supervisor.log"

    @property
    def marker_file(self) -> Path:
        """Written first by ``up``: proves the directory is the lab's before ``down`` deletes it."""
        return self.dir / ".glia-lab"

    @property
    def cni_bin_dir(self) -> Path:
        return self.dir / "cni-bin"

    @property
    def rootfs_dir(self) -> Path:
        return self.dir / "image" / "rootfs"

    @property
    def bpf_dir(self) -> Path:
        return BPFFS_ROOT / f"lab-{self.name}"

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return tuple(n for c in self.clusters for n in c.nodes)

    @property
    def host_setup_node(self) -> NodeSpec:
        """The node set up as the README tells an operator (:mod:`glia.lab.hostsetup`)
        instead of by the lab: the first cluster's last."""
        return self.clusters[0].nodes[-1]

    @property
    def netns_names(self) -> tuple[str, ...]:
        """Every namespace of the lab, nodes first, the underlay last."""
        return (
            *(n.netns for n in self.nodes),
            *(c.etcd_netns for c in self.clusters),
            self.world_netns,
            self.underlay_netns,
        )

    def cluster(self, name: str) -> ClusterSpec:
        for c in self.clusters:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.clusters)
        raise TopologyError(f"no cluster {name!r} in lab {self.name!r} (clusters: {known})")

    def node(self, cluster: str, node: str) -> NodeSpec:
        c = self.cluster(cluster)
        for n in c.nodes:
            if n.name == node:
                return n
        known = ", ".join(n.name for n in c.nodes)
        raise TopologyError(f"no node {node!r} in cluster {cluster!r} (nodes: {known})")

    def is_own_netns(self, name: str) -> bool:
        """Whether a namespace name is one this lab makes (for any cluster/node count)."""
        return is_lab_netns(self.name, name)

    def is_own_cgroup(self, name: str) -> bool:
        """Whether a cgroup directory name is a node cgroup of this lab (any shape)."""
        return is_lab_cgroup(self.name, name)


def is_lab_netns(lab: str, name: str) -> bool:
    return re.fullmatch(rf"{re.escape(lab)}-(underlay|world|c\d+-(n\d+|etcd))", name) is not None


def cgroup_name(lab: str, node_key: str) -> str:
    """``glia-lab-<lab>-c1-n1``: starts with "glia" whatever the lab, and holds no other
    lab's prefix (lab names have no "-")."""
    return f"glia-lab-{lab}-{node_key}"


def is_lab_cgroup(lab: str, name: str) -> bool:
    return re.fullmatch(rf"glia-lab-{re.escape(lab)}-c\d+-n\d+", name) is not None


def build(name: str, clusters: int, nodes: int, lab_dir: Path | None = None) -> Topology:
    """The topology of ``clusters`` clusters with ``nodes`` nodes each."""
    validate_lab_name(name)
    if not 1 <= clusters <= MAX_CLUSTERS:
        raise TopologyError(f"--clusters {clusters}: the lab builds 1..{MAX_CLUSTERS} clusters")
    if not 1 <= nodes <= MAX_NODES:
        raise TopologyError(f"--nodes {nodes}: the lab builds 1..{MAX_NODES} nodes per cluster")
    root = lab_dir if lab_dir is not None else default_lab_dir(name)
    if not lab_dir_is_safe(root):
        raise TopologyError(
            f"lab directory {root} must be an absolute path below / with a component "
            "starting with 'glia' (lab down removes it recursively)"
        )
    specs = []
    for cid in range(1, clusters + 1):
        cname = f"c{cid}"
        node_specs = tuple(
            NodeSpec(
                lab=name,
                cluster=cname,
                cluster_id=cid,
                name=f"n{j}",
                index=j,
                netns=f"{name}-{cname}-n{j}",
                ip=underlay_ip(cid, j),
                underlay_veth=f"c{cid}n{j}",
                dir=root / "nodes" / f"{cname}-n{j}",
            )
            for j in range(1, nodes + 1)
        )
        specs.append(
            ClusterSpec(
                lab=name,
                name=cname,
                id=cid,
                nodes=node_specs,
                etcd_netns=f"{name}-{cname}-etcd",
                etcd_ip=underlay_ip(cid, ETCD_HOST),
                etcd_veth=f"c{cid}etcd",
                dir=root / "clusters" / cname,
            )
        )
    return Topology(name=name, dir=root, clusters=tuple(specs))


@dataclass(frozen=True, slots=True)
class Target:
    """``CLUSTER/NODE`` or ``CLUSTER/NODE/CONTAINER`` from the command line."""

    cluster: str
    node: str
    container: str | None = None


def parse_target(text: str, *, allow_container: bool = True) -> Target:
    parts = text.split("/")
    if len(parts) == 2 and all(parts):
        return Target(parts[0], parts[1])
    if allow_container and len(parts) == 3 and all(parts):
        return Target(parts[0], parts[1], parts[2])
    shape = "CLUSTER/NODE[/CONTAINER]" if allow_container else "CLUSTER/NODE"
    raise TopologyError(f"{text!r} is not {shape} (e.g. c1/n1)")


def discover_shape(lab: str, netns_names: list[str], node_dirs: list[str]) -> tuple[int, int]:
    """The smallest (clusters, nodes) covering every namespace and node directory found.

    ``lab down`` uses it when ``state.json`` is missing: the lab's names alone say
    what it built. Unknown names are ignored. Returns (0, 0) when nothing is found.
    """
    clusters = nodes = 0
    ns_re = re.compile(rf"{re.escape(lab)}-c(\d+)-(?:n(\d+)|etcd)")
    dir_re = re.compile(r"c(\d+)-n(\d+)")
    found = [ns_re.fullmatch(n) for n in netns_names] + [dir_re.fullmatch(d) for d in node_dirs]
    for m in found:
        if m is None:
            continue
        clusters = max(clusters, int(m.group(1)))
        if m.group(2) is not None:
            nodes = max(nodes, int(m.group(2)))
    if clusters and not nodes:
        nodes = 1  # only etcd namespaces were left
    return min(clusters, MAX_CLUSTERS), min(nodes, MAX_NODES)
