"""``glia policy trace``: the request, its two ends resolved to peers, and the answer (pure).

Called by the agent's API (:mod:`glia.agent.api_policy`, ``POST
/v1/policy/trace``), which reads the policies this module says it needs, and
by the CLI (:mod:`glia.cli.policy`), which parses the same request first so
mistakes show before any agent is asked. The verdict itself is
:func:`glia.policy.evaluate.verdict`; docs/policy.md ("Tracing") is the user's
side of this.

An end is named by one of (``field`` is ``src`` or ``dst``):

- labels ``k=v,k2=v2``: an endpoint with those labels, as an endpoint carries
  them (:meth:`glia.endpoint.manager.EndpointManager`: the runtime's labels,
  then ``io.kubernetes.pod.namespace`` (default ``default``) and
  ``io.cilium.k8s.policy.cluster``); its cluster is the cluster label if
  given, else the agent's; keys may carry ``k8s:``/``any:`` as in selectors;
- ``reserved:NAME``: a reserved identity (``host``, ``remote-node``,
  ``world``, ``health``, ``init``, ``unmanaged``);
- ``ip:A.B.C.D``: a world address (for ``world``, CIDR and ``except`` rules;
  an address of an endpoint or a node is matched by its identity, never by a
  CIDR rule, so trace those by labels or identity);
- ``<field>_identity``: a numeric identity from the agent's identity cache (any
  cluster of the mesh), or a reserved one (below 256).

Each side is judged by its own cluster's policies: egress at the source by
the source's cluster, ingress at the destination by the destination's. The
caller reads those (:func:`clusters_to_read`); a record stored for another
cluster than the etcd it sits in governs nothing there and is left out with a
warning (:func:`policies_of`), as enforcement does.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from glia.model.cluster import validate_name
from glia.model.identity import (
    CLUSTER_LABEL,
    MIN_LOCAL,
    NAMESPACE_LABEL,
    Identity,
    ReservedIdentity,
)
from glia.policy.compiled import PROTO_TCP, PROTO_UDP, proto_name
from glia.policy.evaluate import Reason, Verdict, verdict
from glia.policy.model import Policy
from glia.policy.peers import Peer, PeerKind
from glia.policy.selector import endpoint_labels, normalize_key

PROTO_ICMP = 1
DEFAULT_NAMESPACE = "default"  # an endpoint's namespace when the request names none
ENDS = ("src", "dst")
PROTOCOLS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP, "ICMP": PROTO_ICMP}
END_SYNTAX = "k=v[,k=v...], reserved:NAME or ip:A.B.C.D"
# Reserved identities an end may name, by their name in docs and output.
RESERVED_NAMES = {
    r.name.lower().replace("_", "-"): r
    for r in ReservedIdentity
    if r is not ReservedIdentity.UNKNOWN
}
MAX_LABELS = 64  # an end's labels; endpoints carry a handful
MAX_TEXT = 4096  # an end's text


class TraceError(ValueError):
    """A request field is wrong: ``field`` names it (as the API body does), ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class EndKind(enum.StrEnum):
    LABELS = "labels"  # an endpoint by its labels
    RESERVED = "reserved"  # reserved:NAME
    ADDRESS = "address"  # ip:A.B.C.D, a world address
    IDENTITY = "identity"  # a numeric identity of the agent's cache


@dataclass(frozen=True, slots=True)
class EndSpec:
    """One end as the request names it, checked but not yet resolved."""

    kind: EndKind
    labels: dict[str, str] = field(default_factory=dict)  # LABELS, without the cluster label
    cluster: str | None = None  # LABELS: the cluster label's value, if given
    reserved: ReservedIdentity | None = None  # RESERVED
    address: str | None = None  # ADDRESS
    identity: int = 0  # IDENTITY


@dataclass(frozen=True, slots=True)
class TraceRequest:
    src: EndSpec
    dst: EndSpec
    proto: int  # 6 TCP, 17 UDP, 1 ICMP
    dport: int  # 0 for ICMP


# -- parsing ------------------------------------------------------------------------


def parse_end(text: str, field: str) -> EndSpec:
    """``k=v,...``, ``reserved:NAME`` or ``ip:A.B.C.D`` (see the module docstring)."""
    if not isinstance(text, str):
        raise TraceError(field, f"expected a string ({END_SYNTAX})")
    text = text.strip()
    if not text:
        raise TraceError(field, f"empty: expected {END_SYNTAX}")
    if len(text) > MAX_TEXT:
        raise TraceError(field, f"{len(text)} characters: at most {MAX_TEXT}")
    if text.startswith("reserved:"):
        name = text.removeprefix("reserved:").strip().lower()
        if name not in RESERVED_NAMES:
            raise TraceError(
                field, f"unknown reserved identity {name!r} (one of {', '.join(RESERVED_NAMES)})"
            )
        return EndSpec(EndKind.RESERVED, reserved=RESERVED_NAMES[name])
    if text.startswith("ip:"):
        raw = text.removeprefix("ip:").strip()
        try:
            addr = ipaddress.IPv4Address(raw)
        except ValueError:
            raise TraceError(field, f"{raw!r} is not an IPv4 address (ip:A.B.C.D)") from None
        return EndSpec(EndKind.ADDRESS, address=str(addr))
    return _parse_labels(text, field)


def _parse_labels(text: str, field: str) -> EndSpec:
    labels: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise TraceError(field, f"an empty label in {text!r} (expected {END_SYNTAX})")
        key, sep, value = part.partition("=")
        key, value = normalize_key(key.strip()), value.strip()
        if not sep:
            raise TraceError(field, f"{part!r} is not k=v (expected {END_SYNTAX})")
        if not key:
            raise TraceError(field, f"{part!r} has no key")
        if key.startswith(("reserved:", "cidr:")):
            raise TraceError(field, f"label key {key!r}: use reserved:NAME or ip:A.B.C.D alone")
        if key in labels and labels[key] != value:
            raise TraceError(field, f"label {key!r} given twice ({labels[key]!r}, {value!r})")
        labels[key] = value
    if len(labels) > MAX_LABELS:
        raise TraceError(field, f"{len(labels)} labels: at most {MAX_LABELS}")
    cluster = labels.pop(CLUSTER_LABEL, None)
    if cluster is not None:
        try:
            validate_name("cluster", cluster)
        except ValueError as e:
            raise TraceError(field, f"label {CLUSTER_LABEL}: {e}") from None
    if not labels.get(NAMESPACE_LABEL, DEFAULT_NAMESPACE):
        raise TraceError(field, f"label {NAMESPACE_LABEL} is empty")
    return EndSpec(EndKind.LABELS, labels=labels, cluster=cluster)


def parse_identity(value: Any, field: str) -> EndSpec:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TraceError(field, f"expected an identity number, got {value!r}")
    if value < MIN_LOCAL:
        if value not in RESERVED_NAMES.values():
            raise TraceError(field, f"{value} is no identity (reserved ones: 1..6, else >= 256)")
        return EndSpec(EndKind.RESERVED, reserved=ReservedIdentity(value))
    if value > 0xFFFFFF:
        raise TraceError(field, f"{value} is above every cluster's identities (24 bits)")
    return EndSpec(EndKind.IDENTITY, identity=value)


def parse_port(dport: Any, proto: Any) -> tuple[int, int]:
    """``dport`` ``PORT[/TCP|UDP]`` and ``proto`` (TCP, UDP, ICMP; any case) -> (proto, port).

    TCP unless one of them says otherwise; ICMP has no port.
    """
    want: int | None = None
    if proto is not None:
        if not isinstance(proto, str) or proto.strip().upper() not in PROTOCOLS:
            raise TraceError("proto", f"{proto!r} is not one of {', '.join(PROTOCOLS)}")
        want = PROTOCOLS[proto.strip().upper()]
    if dport is None or (isinstance(dport, str) and not dport.strip()):
        if want == PROTO_ICMP:
            return PROTO_ICMP, 0
        raise TraceError("dport", "required: PORT[/TCP|UDP] (or proto ICMP, which has no port)")
    if want == PROTO_ICMP:
        raise TraceError("dport", "ICMP has no port: drop the port, or name TCP or UDP")
    text = str(dport).strip() if isinstance(dport, int) and not isinstance(dport, bool) else dport
    if not isinstance(text, str):
        raise TraceError("dport", f"expected PORT[/TCP|UDP], got {dport!r}")
    number, sep, suffix = text.partition("/")
    if sep:
        name = suffix.strip().upper()
        if name not in (PROTOCOLS.keys() - {"ICMP"}):
            raise TraceError("dport", f"protocol {suffix!r}: expected TCP or UDP")
        if want is not None and PROTOCOLS[name] != want:
            raise TraceError("dport", f"{text!r} says {name} but proto says {proto_name(want)}")
        want = PROTOCOLS[name]
    number = number.strip()
    if not number.isdigit() or not 1 <= int(number) <= 65535:
        raise TraceError("dport", f"port {number!r}: expected a number in 1..65535")
    return want if want is not None else PROTO_TCP, int(number)


def _end(body: Mapping[str, Any], end: str, names: Mapping[str, str]) -> EndSpec:
    by_id = f"{end}_identity"
    text, ident = body.get(end), body.get(by_id)
    name, id_name = names.get(end, end), names.get(by_id, by_id)
    if text is not None and ident is not None:
        raise TraceError(end, f"give {name} or {id_name}, not both")
    if ident is not None:
        return parse_identity(ident, by_id)
    if text is None:
        raise TraceError(end, f"required: {END_SYNTAX}, or {id_name}")
    return parse_end(text, end)


def parse_request(body: Mapping[str, Any], names: Mapping[str, str] | None = None) -> TraceRequest:
    """The API body ``{"src"|"src_identity", "dst"|"dst_identity", "dport", "proto"}``.

    ``names``: how messages name the other fields (the CLI's flags); the field
    names of the body otherwise.
    """
    known = {"src", "dst", "src_identity", "dst_identity", "dport", "proto"}
    for key in body:
        if key not in known:
            raise TraceError(str(key), f"unknown field (expected {', '.join(sorted(known))})")
    src, dst = _end(body, "src", names or {}), _end(body, "dst", names or {})
    proto, dport = parse_port(body.get("dport"), body.get("proto"))
    return TraceRequest(src, dst, proto, dport)


# -- resolution ---------------------------------------------------------------------

# cluster -> identity number -> identity: the agent's identity cache (every cluster).
Identities = Mapping[str, Mapping[int, Identity]]


def resolve_end(
    spec: EndSpec,
    field: str,
    local_cluster: str,
    clusters: Collection[str],
    identities: Identities,
) -> Peer:
    """The peer ``spec`` names. ``clusters``: those whose endpoints this agent can judge
    (its own and its mesh's); ``identities``: the identity cache, by cluster."""
    if spec.kind is EndKind.RESERVED:
        assert spec.reserved is not None
        return Peer.reserved(spec.reserved)
    if spec.kind is EndKind.ADDRESS:
        return Peer.world(spec.address)
    if spec.kind is EndKind.IDENTITY:
        for cluster in sorted(identities):
            ident = identities[cluster].get(spec.identity)
            if ident is not None:
                return Peer.endpoint(ident.labels, cluster, spec.identity)
        raise TraceError(
            field,
            f"no identity {spec.identity} in this agent's identity cache "
            "(`glia identity list` shows the known ones)",
        )
    cluster = spec.cluster or local_cluster
    if cluster not in clusters:
        raise TraceError(
            field,
            f"cluster {cluster!r} ({CLUSTER_LABEL}) is not in this agent's mesh "
            f"(known: {', '.join(sorted(clusters))})",
        )
    labels = endpoint_labels({NAMESPACE_LABEL: DEFAULT_NAMESPACE, **spec.labels}, cluster)
    number = 0
    for n, ident in (identities.get(cluster) or {}).items():
        if endpoint_labels(ident.labels, cluster) == labels:
            number = n
            break
    return Peer.endpoint(labels, cluster, number)


def clusters_to_read(src: Peer, dst: Peer) -> list[str]:
    """The clusters whose policies judge this connection: each endpoint end's own."""
    return sorted({p.cluster for p in (src, dst) if p.kind is PeerKind.ENDPOINT})


def sides_judged_by(cluster: str, src: Peer, dst: Peer) -> list[str]:
    """Which sides ``cluster``'s policies judge, for messages ("egress at the source")."""
    out = []
    if src.kind is PeerKind.ENDPOINT and src.cluster == cluster:
        out.append("egress at the source")
    if dst.kind is PeerKind.ENDPOINT and dst.cluster == cluster:
        out.append("ingress at the destination")
    return out


def policies_of(cluster: str, policies: Iterable[Policy], warnings: list[str]) -> list[Policy]:
    """The policies read from ``cluster``'s store that govern it: a record stored for
    another cluster governs nothing there (enforcement ignores it too); left out, said."""
    out = []
    for p in policies:
        if p.cluster != cluster:
            warnings.append(
                f"cluster {cluster}: policy {p.namespace}/{p.name} is stored for cluster "
                f"{p.cluster!r}, so it governs nothing in {cluster}: left out"
            )
            continue
        out.append(p)
    return out


# -- the answer ---------------------------------------------------------------------


def peer_dict(peer: Peer) -> dict[str, Any]:
    """One resolved end, for the answer (``resolved.src`` / ``resolved.dst``)."""
    out: dict[str, Any] = {"kind": peer.kind.value, "identity": peer.identity or None}
    if peer.kind is PeerKind.ENDPOINT:
        out["cluster"] = peer.cluster
        out["labels"] = dict(sorted(peer.labels.items()))
    elif peer.kind is PeerKind.RESERVED:
        out["name"] = ReservedIdentity(peer.identity).name.lower().replace("_", "-")
        out["address"] = str(peer.address) if peer.address is not None else None
    return out


def answer(
    src: Peer,
    dst: Peer,
    proto: int,
    dport: int,
    policies: Mapping[str, Iterable[Policy]],
    warnings: Iterable[str] = (),
) -> dict[str, Any]:
    """The verdict as the API returns it: :meth:`Verdict.to_dict`, the resolved ends,
    the policies read per cluster, and warnings (records left out, unknown identities).

    ``policies``: cluster -> the policies read from that cluster's store
    (:func:`clusters_to_read`); filtered by :func:`policies_of` here.
    """
    notes = list(warnings)
    governing = {c: policies_of(c, ps, notes) for c, ps in sorted(policies.items())}
    v: Verdict = verdict([p for ps in governing.values() for p in ps], src, dst, proto, dport)
    for end, peer in (("src", src), ("dst", dst)):
        if peer.kind is PeerKind.ENDPOINT and not peer.identity:
            notes.append(
                f"{end}: no identity of cluster {peer.cluster} has exactly these labels "
                "(no such endpoint yet): judged by its labels"
            )
    out = v.to_dict()
    out["verdict"] = "ALLOWED" if v.allowed else "DENIED"
    out["resolved"] = {"src": peer_dict(src), "dst": peer_dict(dst)}
    out["policies"] = {c: len(ps) for c, ps in governing.items()}
    out["warnings"] = notes
    return out


REASON_TEXT = {
    Reason.NOT_ENDPOINT.value: "not an endpoint: nothing enforced there",
    Reason.NOT_ENFORCED.value: "no policy selecting it has this direction",
    Reason.ALLOWED.value: "allowed by a rule",
    Reason.DENIED.value: "denied by a rule",
    Reason.HOST.value: "the local host may reach its endpoints",
    Reason.DEFAULT_DENY.value: "selected, and no rule allows it (default deny)",
}
