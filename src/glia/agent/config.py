"""Agent configuration: one YAML (or JSON) file per node, ``glia agent --config FILE``."""

from __future__ import annotations

import contextlib
import urllib.parse
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

import yaml

from glia.kvstore.config import EtcdConfig
from glia.model import codec

DEFAULT_SOCKET = "/run/glia/agent.sock"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    cluster: str  # this node's cluster name
    cluster_id: int  # 1..255
    node: str  # this node's name
    node_ip: str  # underlay address, VXLAN tunnel endpoint
    etcd: EtcdConfig = field(default_factory=EtcdConfig)  # this node's own etcd user
    # The CLI path's etcd user (declared resources, `glia apply` through this
    # agent's API); None: this agent serves no apply. Apart from `etcd` so the
    # node's own user can write only its node's records (glia.kvstore.rbac).
    config_etcd: EtcdConfig | None = None
    # The etcd server's --max-txn-ops: `glia apply` stores a file in one
    # transaction of two operations per Service, so this bounds a file's size
    # (128, etcd's default, is ~64 Services; the lab's etcd allows 10000).
    etcd_max_txn_ops: int = 128
    # ClusterMesh: a directory with one file per remote cluster (docs/clustermesh.md),
    # watched at run time; "" = this cluster is alone.
    clustermesh_dir: str = ""
    # ClusterMesh: the networks of this cluster's nodes and etcd (the underlay).
    # A remote cluster whose pod pools overlap one of them, or this node's IP or
    # an etcd endpoint's, is refused: its "pods" could take those addresses.
    node_networks: list[str] = field(default_factory=list)
    socket: str = DEFAULT_SOCKET  # REST API (root-only unix socket)
    state_dir: str = "/var/lib/glia"  # endpoint records and IPAM, survive restarts
    bpf_pin_dir: str = "/sys/fs/bpf/glia/node"  # per-node: pins outlive the agent
    bpf_obj_dir: str = ""  # compiled BPF objects; "" = build/bpf of the source tree
    mtu: int = 1450  # pod MTU (underlay 1500 minus VXLAN overhead)
    vxlan_port: int = 8472
    lease_ttl: int = 15  # seconds: a dead agent's keys vanish after this
    service_cidr: str = ""  # the cluster's ClusterIP range; `glia apply` allocates from it
    # The cluster's pod pool (the operator's pod_pool): no record read from the
    # kvstore may claim a pod address outside it. "" = only node CIDRs bound them.
    pod_pool: str = ""
    # CNI chaining (docs/chaining.md): the last /N block of the node's pod CIDR is
    # left to the IPAM of a plugin before glia-cni (ptp's host-local), never handed
    # out by glia; `glia status` shows it as chained_cidr. 0 = no block.
    chained_prefix: int = 0
    # Socket-level load-balancing: a cgroup v2 directory whose processes'
    # connect()/sendmsg() to a VIP go straight to a backend (no per-packet NAT).
    # On a host: the cgroup2 root (all pods and the host itself); in the lab:
    # the node's own cgroup, which the OCI hook puts the node's containers in.
    # "" = off: VIPs are still load-balanced per packet by from_endpoint.
    socket_lb_cgroup: str = ""
    # Environment for ``podman inspect`` when resolving workload labels
    # (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF of this node's podman).
    runtime: str = "podman"  # "podman" or "none" (labels only from CNI args)
    runtime_env: dict[str, str] = field(default_factory=dict)
    # Egress (glia.agent.egress): pods reach addresses outside every pod CIDR of
    # the mesh with the node's address (kernel NAT in the node's namespace), the
    # node routes other nodes' pod CIDRs via those nodes, IPv4 forwarding on.
    # Off by default: it changes the namespace the agent runs in (the lab turns it on).
    masquerade: bool = False
    # DNS for pods (docs/dns.md), UDP and TCP on node_ip:dns_port; 0 = off.
    dns_port: int = 53
    # Where names outside cluster.local/clusterset.local go ("IP" or "IP:PORT",
    # tried in order, dns_timeout s each); none: they get NXDOMAIN at once.
    dns_upstreams: list[str] = field(default_factory=list)
    dns_timeout: float = 0.5
    log_level: str = "info"


def load(path: str | Path) -> AgentConfig:
    data = yaml.safe_load(Path(path).read_text())
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
