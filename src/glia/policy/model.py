"""CiliumNetworkPolicy as glia stores it: frozen dataclasses, JSON-codable with glia.model.codec.

Built by :mod:`glia.policy.manifest` from ``cilium.io/v2 CiliumNetworkPolicy``
documents (and turned back into them for ``glia get policies``); stored by the
config path next to Services; compiled by :mod:`glia.policy.selector` and
evaluated by :mod:`glia.policy.evaluate` and :mod:`glia.policy.engine`.

The shape follows the manifest (``spec`` apart from ``specs``, ``fromCIDR`` apart
from ``fromCIDRSet``, ``toPorts[].ports[]``) so that a policy round-trips and each
rule keeps the id a trace names (:meth:`Policy.sections`). Values are already
checked and normalised by the manifest parser (label keys without a ``k8s:``
source prefix, CIDRs as network addresses, ports as integers); decoding a stored
record re-checks only the shape.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field


class Direction(enum.StrEnum):
    INGRESS = "ingress"
    EGRESS = "egress"


class Operator(enum.StrEnum):
    """``matchExpressions[].operator``, with Kubernetes' meaning."""

    IN = "In"  # the label is present with one of the values
    NOT_IN = "NotIn"  # the label is absent, or present with none of the values
    EXISTS = "Exists"  # the label is present (values must be empty)
    DOES_NOT_EXIST = "DoesNotExist"  # the label is absent (values must be empty)


class Entity(enum.StrEnum):
    """``fromEntities`` / ``toEntities`` glia implements (docs/policy.md says what each selects)."""

    HOST = "host"  # this node
    REMOTE_NODE = "remote-node"  # the other nodes of the mesh
    WORLD = "world"  # everything outside the mesh (and every CIDR identity)
    CLUSTER = "cluster"  # the policy's own cluster: its endpoints, nodes and reserved identities
    ALL = "all"  # anything, known or not


class L4Proto(enum.StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    ANY = "ANY"  # TCP and UDP (the protocols that have ports)


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    key: str
    operator: Operator
    values: list[str] = field(default_factory=list)  # In/NotIn: non-empty; Exists/DoesNotExist: []


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """Kubernetes' label selector: every matchLabels pair and every expression must hold."""

    match_labels: dict[str, str] = field(default_factory=dict)
    match_expressions: list[LabelRequirement] = field(default_factory=list)

    def keys(self) -> set[str]:
        return set(self.match_labels) | {r.key for r in self.match_expressions}


@dataclass(frozen=True, slots=True)
class CIDRRule:
    """``fromCIDRSet`` / ``toCIDRSet`` item: the addresses of ``cidr`` outside every ``excepts``."""

    cidr: str  # IPv4 network, normalised ("10.0.0.0/8")
    excepts: list[str] = field(default_factory=list)  # subnets of cidr


@dataclass(frozen=True, slots=True)
class PortProtocol:
    port: int = 0  # 0: every port
    end_port: int = 0  # 0: just ``port``; else the last port of the range port..end_port
    protocol: L4Proto = L4Proto.ANY

    @property
    def first(self) -> int:
        return self.port

    @property
    def last(self) -> int:
        if self.port == 0:
            return 0xFFFF
        return self.end_port or self.port


@dataclass(frozen=True, slots=True)
class PortRule:
    """One ``toPorts`` item (only its ``ports``: glia has no L7 rules)."""

    ports: list[PortProtocol]


@dataclass(frozen=True, slots=True)
class PeerRule:
    """One item of ``ingress``/``egress``/``ingressDeny``/``egressDeny``.

    The peers it names are the union of its endpoint selectors, entities and
    CIDRs; with none of them it names every peer if it has ``to_ports``, and no
    peer at all otherwise (``ingress: [{}]`` allows nothing), as in Cilium.
    Without ``to_ports`` it covers every protocol and port.
    """

    endpoints: list[LabelSelector] = field(default_factory=list)  # fromEndpoints / toEndpoints
    entities: list[Entity] = field(default_factory=list)  # fromEntities / toEntities
    cidr: list[str] = field(default_factory=list)  # fromCIDR / toCIDR
    cidr_set: list[CIDRRule] = field(default_factory=list)  # fromCIDRSet / toCIDRSet
    to_ports: list[PortRule] = field(default_factory=list)

    @property
    def has_peers(self) -> bool:
        return bool(self.endpoints or self.entities or self.cidr or self.cidr_set)

    def cidr_rules(self) -> list[CIDRRule]:
        return [CIDRRule(c) for c in self.cidr] + list(self.cidr_set)

    def port_protocols(self) -> list[PortProtocol]:
        return [p for r in self.to_ports for p in r.ports]


class Section(enum.StrEnum):
    """A rule's sections, spelled as in the manifest."""

    INGRESS = "ingress"
    EGRESS = "egress"
    INGRESS_DENY = "ingressDeny"
    EGRESS_DENY = "egressDeny"

    @property
    def direction(self) -> Direction:
        return (
            Direction.INGRESS
            if self in (Section.INGRESS, Section.INGRESS_DENY)
            else (Direction.EGRESS)
        )

    @property
    def deny(self) -> bool:
        return self in (Section.INGRESS_DENY, Section.EGRESS_DENY)


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``spec`` / ``specs[i]``: the endpoints it selects and what it allows or denies them."""

    endpoint_selector: LabelSelector
    ingress: list[PeerRule] = field(default_factory=list)
    egress: list[PeerRule] = field(default_factory=list)
    ingress_deny: list[PeerRule] = field(default_factory=list)
    egress_deny: list[PeerRule] = field(default_factory=list)
    description: str = ""

    def section(self, s: Section) -> list[PeerRule]:
        if s is Section.INGRESS:
            return self.ingress
        if s is Section.EGRESS:
            return self.egress
        if s is Section.INGRESS_DENY:
            return self.ingress_deny
        return self.egress_deny

    def enforces(self, direction: Direction) -> bool:
        """Selecting an endpoint, this rule makes it default-deny in ``direction``."""
        if direction is Direction.INGRESS:
            return bool(self.ingress or self.ingress_deny)
        return bool(self.egress or self.egress_deny)


@dataclass(frozen=True, slots=True)
class RuleRef:
    """Where a peer rule is: ``default/web: specs[1].ingress[0]`` (of cluster ``cluster``)."""

    cluster: str
    namespace: str
    name: str
    path: str  # "spec.ingress[0]", "specs[1].egressDeny[2]"; "" for glia's implicit rules

    def __str__(self) -> str:
        if not self.name:
            return self.path
        return f"{self.namespace}/{self.name}: {self.path}"


@dataclass(frozen=True, slots=True)
class Policy:
    """A CiliumNetworkPolicy of one cluster (it governs that cluster's endpoints only)."""

    namespace: str
    name: str
    cluster: str  # whose endpoints it selects; "" while only validated (the CLI)
    spec: Rule | None = None
    specs: list[Rule] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def rules(self) -> Iterator[tuple[str, Rule]]:
        """Each rule with its path prefix (``spec`` or ``specs[i]``), spec first as in Cilium."""
        if self.spec is not None:
            yield "spec", self.spec
        for i, r in enumerate(self.specs):
            yield f"specs[{i}]", r

    def ref(self, prefix: str, section: Section, index: int) -> RuleRef:
        """The id of ``<prefix>.<section>[index]`` (``prefix`` from :meth:`rules`)."""
        return RuleRef(self.cluster, self.namespace, self.name, f"{prefix}.{section}[{index}]")

    def sections(self) -> Iterator[tuple[RuleRef, Rule, Section, PeerRule]]:
        """Every peer rule with its stable id, in manifest order."""
        for prefix, rule in self.rules():
            for s in Section:
                for i, item in enumerate(rule.section(s)):
                    yield self.ref(prefix, s, i), rule, s, item
