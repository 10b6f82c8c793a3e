"""Who may write what in a cluster's etcd: one user per writer (least privilege).

Pure: role definitions built from the key layout (:mod:`glia.kvstore.keys`).
The lab creates them with etcdctl (:meth:`glia.lab.etcd.EtcdServer.bootstrap_auth`);
on a real deployment, ``glia kvstore roles`` prints the same as etcdctl
commands (docs/kvstore.md). Every user authenticates by the CN of its client
certificate.

=======================  ==================================================
user                     may write
=======================  ==================================================
glia-agent-<node>        its node record, its ipcache entries, its endpoints,
                         its probe results, its identity references, and the
                         identity allocator's id and label keys (shared by
                         design: any agent may mint an identity); reads
                         the declared policies (it enforces them)
glia-operator            pod CIDR allocations, ClusterServices, leadership,
                         the cluster record, the heartbeat, identity
                         garbage collection
glia-config              declared resources (``glia apply``: the CLI path)
glia-remote              nothing: reads ``glia/state/``, the heartbeat and
                         the declared policies (other clusters of the mesh;
                         ``glia policy trace`` judges a remote endpoint by
                         its own cluster's policies)
glia                     ``glia/`` (administration and tests; no daemon)
=======================  ==================================================

Every daemon user may read ``glia/state/``: each agent needs the whole
cluster's state, and validation (:mod:`glia.validate`) keeps a node's records
to its own addresses. RBAC keeps a node to its own keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glia.kvstore import keys
from glia.model.cluster import validate_name

POLICY_KIND = "policies"  # glia.policy.store.KIND (not imported: this module stays pure)

RW_USER = "glia"
RO_USER = "glia-remote"
OPERATOR_USER = "glia-operator"
CONFIG_USER = "glia-config"
AGENT_USER_PREFIX = "glia-agent-"


@dataclass(frozen=True, slots=True)
class Grant:
    """One RBAC permission: ``perm`` on ``key`` (a prefix unless ``prefix=False``)."""

    key: str
    perm: Literal["read", "write", "readwrite"]
    prefix: bool = True


@dataclass(frozen=True, slots=True)
class RoleSpec:
    name: str
    grants: tuple[Grant, ...]


_READ_STATE = Grant(keys.STATE, "read")
_READ_HEARTBEAT = Grant(keys.HEARTBEAT, "read", prefix=False)

_READ_POLICIES = Grant(keys.POLICIES, "read")

ROLE_RW = RoleSpec("glia-rw", (Grant(keys.ROOT, "readwrite"),))
ROLE_RO = RoleSpec("glia-ro", (_READ_STATE, _READ_HEARTBEAT, _READ_POLICIES))


def agent_user(node: str) -> str:
    return AGENT_USER_PREFIX + validate_name("node", node)


def agent_role(cluster: str, node: str) -> RoleSpec:
    """What the agent of ``cluster``/``node`` may do."""
    return RoleSpec(
        agent_user(node),
        (
            _READ_STATE,
            _READ_HEARTBEAT,
            # Policies only, not the rest of glia/config/: the agent enforces
            # them with its own user (an agent without ``config_etcd`` too).
            Grant(keys.configs(POLICY_KIND), "read"),
            Grant(keys.node(cluster, node), "readwrite", prefix=False),
            Grant(keys.health(cluster, node), "readwrite", prefix=False),
            Grant(keys.ipcaches(cluster, node), "readwrite"),
            Grant(keys.endpoints(cluster, node), "readwrite"),
            Grant(keys.identity_refs(cluster, node), "readwrite"),
            Grant(keys.identity_ids(cluster), "readwrite"),
            Grant(keys.identity_labels_prefix(cluster), "readwrite"),
        ),
    )


def operator_role(cluster: str) -> RoleSpec:
    return RoleSpec(
        OPERATOR_USER,
        (
            _READ_STATE,
            Grant(keys.CONFIG, "read"),
            Grant(keys.HEARTBEAT, "readwrite", prefix=False),
            Grant(keys.podcidrs(cluster), "readwrite"),
            Grant(keys.services(cluster), "readwrite"),
            Grant(keys.operator_leader(cluster), "readwrite", prefix=False),
            Grant(keys.cluster_info(cluster), "readwrite", prefix=False),
            Grant(keys.identities(cluster), "readwrite"),
        ),
    )


ROLE_CONFIG = RoleSpec(CONFIG_USER, (_READ_STATE, Grant(keys.CONFIG, "readwrite")))


def cluster_users(cluster: str, nodes: list[str]) -> dict[str, RoleSpec]:
    """Every user of ``cluster``'s etcd and its role (one role per user, same name)."""
    users = {
        RW_USER: ROLE_RW,
        RO_USER: ROLE_RO,
        OPERATOR_USER: operator_role(cluster),
        CONFIG_USER: ROLE_CONFIG,
    }
    for node in nodes:
        users[agent_user(node)] = agent_role(cluster, node)
    return users


def etcdctl_commands(users: dict[str, RoleSpec]) -> list[list[str]]:
    """The etcdctl calls that create ``users`` (users without password: certificate CN)."""
    out: list[list[str]] = []
    for role in {spec.name: spec for spec in users.values()}.values():
        out.append(["role", "add", role.name])
        for g in role.grants:
            out.append(
                [
                    "role",
                    "grant-permission",
                    f"--prefix={str(g.prefix).lower()}",
                    role.name,
                    g.perm,
                    g.key,
                ]
            )
    for user, spec in users.items():
        out.append(["user", "add", user, "--no-password"])
        out.append(["user", "grant-role", user, spec.name])
    return out


ROOT_USER = "root"


def bootstrap_commands(users: dict[str, RoleSpec]) -> list[list[str]]:
    """Everything a fresh etcd needs, in order: root (role and user), ``users``, ``auth enable``.

    What the lab (:meth:`glia.lab.etcd.EtcdServer.bootstrap_auth`) and ``glia
    etcd bootstrap`` (:mod:`glia.deploy.etcdboot`) run, as root.
    """
    return [
        ["role", "add", ROOT_USER],
        ["user", "add", ROOT_USER, "--no-password"],
        ["user", "grant-role", ROOT_USER, ROOT_USER],
        *etcdctl_commands(users),
        ["auth", "enable"],
    ]
