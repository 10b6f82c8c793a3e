"""Agent configuration: one YAML (or JSON) file per node, ``glia agent --config FILE``."""

from __future__ import annotations

import contextlib
import urllib.parse
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

import yaml

from glia.identity.labelfilter import DEFAULT_EXCLUDE, LabelFilter
from glia.kvstore.config import EtcdConfig
from glia.model import codec

DEFAULT_SOCKET = "/run/glia/agent.sock"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One node's agent. Each field's docstring is its entry in docs/config.md
    (:mod:`glia.deploy.configref` reads them): one source for code and docs."""

    cluster: str
    """This node's cluster name (the operator's `cluster`)."""
    cluster_id: int
    """This cluster's id, 1..255, unique in a mesh (the operator's `cluster_id`)."""
    node: str
    """This node's name, unique in the cluster; its etcd user is glia-agent-<node>."""
    node_ip: str
    """This node's underlay address: VXLAN tunnel endpoint and DNS listen address."""
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    """This node's own etcd user (certificate CN glia-agent-<node>): writes only its node's keys."""
    config_etcd: EtcdConfig | None = None
    """The CLI path's etcd user (glia-config) for `glia apply` through this agent's API;
    null: this agent serves no apply. Apart from `etcd` so the node's own user can
    write only its node's records (glia.kvstore.rbac)."""
    etcd_max_txn_ops: int = 128
    """The etcd server's --max-txn-ops: `glia apply` stores a file in one transaction
    of two operations per Service, so this bounds a file's size (128, etcd's default,
    is ~64 Services; the lab's etcd allows 10000)."""
    clustermesh_dir: str = ""
    """ClusterMesh: a directory with one <cluster>.yaml per remote cluster
    (docs/clustermesh.md), watched at run time; "" = this cluster is alone."""
    node_networks: list[str] = field(default_factory=list)
    """ClusterMesh: the networks of this cluster's nodes and etcd (the underlay). A
    remote cluster whose pod pools overlap one of them, or this node's IP or an etcd
    endpoint's, is refused: its "pods" could take those addresses."""
    socket: str = DEFAULT_SOCKET
    """The REST API's unix socket (root-only); the CLI and glia-cni talk to it."""
    state_dir: str = "/var/lib/glia"
    """Endpoint records and IPAM state; they survive agent restarts."""
    bpf_pin_dir: str = "/sys/fs/bpf/glia/node"
    """Where this node's BPF maps are pinned (on bpffs): pins outlive the agent."""
    bpf_obj_dir: str = ""
    """The compiled BPF objects; "" = $GLIA_BPF_DIR, else the installed package's,
    else build/bpf of the source tree (glia.native.bpf_obj_dir)."""
    mtu: int = 1450
    """Pod MTU (underlay 1500 minus VXLAN overhead)."""
    vxlan_port: int = 8472
    """UDP port of pod traffic between nodes (VXLAN); the same on every node."""
    lease_ttl: int = 15
    """Seconds: a dead agent's keys vanish from etcd after this."""
    service_cidr: str = ""
    """The cluster's ClusterIP range (the operator's `service_cidr`); `glia apply`
    allocates from it and fails for a Service without it."""
    pod_pool: str = ""
    """The cluster's pod pool (the operator's `pod_pool`): no record read from the
    kvstore may claim a pod address outside it. "" = only node CIDRs bound them."""
    chained_prefix: int = 0
    """CNI chaining (docs/chaining.md): the last /N block of the node's pod CIDR is left
    to the IPAM of the plugins before glia-cni (ptp's, bridge's host-local; two such
    networks split it) and never handed out by glia; `glia status` shows it as
    chained_cidr. 0 = no block."""
    socket_lb_cgroup: str = ""
    """Socket-level load-balancing: a cgroup v2 directory whose processes'
    connect()/sendmsg() to a VIP go straight to a backend (no per-packet NAT). On a
    host: the cgroup2 root (all pods and the host itself); in the lab: the node's own
    cgroup. "" = off: VIPs are still load-balanced per packet."""
    runtime: str = "podman"
    """Where workload labels come from: "podman" (`podman inspect`) or "none"
    (labels only from CNI args)."""
    runtime_env: dict[str, str] = field(default_factory=dict)
    """Environment for `podman inspect` when resolving workload labels
    (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF of this node's podman)."""
    docker_plugin_socket: str = ""
    """Docker libnetwork driver (docs/docker.md): the unix socket dockerd finds as plugin
    "glia" (/run/docker/plugins/glia.sock on a host); "" = no Docker driver."""
    docker_api_socket: str = ""
    """dockerd's API socket, where Docker containers' labels are read after Join;
    "" = Docker endpoints keep the base labels."""
    identity_labels_exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    """Runtime labels that are not part of an endpoint's identity (docs/endpoints.md, "Which
    labels make the identity"): key prefixes; `io.buildah` or `io.buildah.` matches
    io.buildah.version, `app` matches app and app.kubernetes.io/name but not application.
    The default drops image metadata podman and Docker merge into a container's labels
    and Kubernetes controller labels unique per revision or pod. Giving the key replaces
    the list ([] keeps every label). The namespace and cluster labels always stay."""
    identity_labels_include: list[str] = field(default_factory=list)
    """If not empty, only runtime labels matching one of these key prefixes (and the
    namespace and cluster labels) make an endpoint's identity; identity_labels_exclude
    then drops from those. [] = every label not excluded (Cilium's default too)."""
    masquerade: bool = False
    """Egress (docs/egress.md): pods reach addresses outside every pod CIDR of the mesh
    with the node's address (kernel NAT), the node routes other nodes' pod CIDRs via
    those nodes, IPv4 forwarding on. Off by default: it changes the host's network
    namespace."""
    dns_port: int = 53
    """DNS for pods (docs/dns.md), UDP and TCP on node_ip:dns_port; 0 = off."""
    dns_upstreams: list[str] = field(default_factory=list)
    """Where names outside cluster.local/clusterset.local go ("IP" or "IP:PORT", tried
    in order, dns_timeout s each); none: they get NXDOMAIN at once."""
    dns_timeout: float = 0.5
    """Seconds to wait for one upstream DNS server before trying the next."""
    prometheus_listen: str = ""
    """Prometheus metrics (docs/metrics.md): "ADDR:PORT" serves /metrics over HTTP there
    (cilium-agent's port is 9962; ":9962" = every address of the node); "" = off. The
    same text is on the API socket (`glia metrics`) either way."""
    log_level: str = "info"
    """Logging level: debug, info, warning or error."""

    def __post_init__(self) -> None:
        # At load (codec turns the ValueError into InvalidValue), not at the first pod.
        self.label_filter()

    def label_filter(self) -> LabelFilter:
        """The identity-relevant labels' filter these keys describe."""
        return LabelFilter.of(self.identity_labels_include, self.identity_labels_exclude)


def load(path: str | Path) -> AgentConfig:
    """Read and check a config file; :class:`~glia.model.codec.InvalidValue` names
    the key that is wrong (unknown keys too), :class:`OSError` an unreadable file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise codec.InvalidValue(f"AgentConfig: not valid YAML ({e})") from None
    codec.check_keys(AgentConfig, data)
    return codec.from_dict(AgentConfig, data)


def reserved_networks(cfg: AgentConfig) -> dict[str, IPv4Network]:
    """The networks of ours no remote cluster's pod pool may overlap, by what they are:
    ``node_networks``, this node's IP and the etcd endpoints given as IP addresses.

    :class:`ValueError` names a ``node_networks`` entry that is not an IPv4 network.
    """
    out: dict[str, IPv4Network] = {}
    for i, text in enumerate(cfg.node_networks):
        try:
            out[f"node_networks[{i}]"] = IPv4Network(text, strict=True)
        except ValueError as e:
            raise ValueError(f"node_networks[{i}] {text!r}: not an IPv4 network ({e})") from None
    with contextlib.suppress(ValueError):  # node_ip is checked where the node registers
        out["node IP"] = IPv4Network(f"{cfg.node_ip}/32")
    for i, url in enumerate(cfg.etcd.endpoints):
        host = urllib.parse.urlsplit(url).hostname or ""
        try:
            out[f"etcd endpoint {i}"] = IPv4Network(f"{host}/32")
        except ValueError:
            continue  # a host name: node_networks covers it
    return out
