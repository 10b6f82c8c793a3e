"""A file of declared resources split by kind: v1 Service, cilium.io/v2 CiliumNetworkPolicy.

Pure. ``glia apply/delete -f`` (:mod:`glia.cli.config`, which validates before
asking an agent) and the agent's config routes (:mod:`glia.agent.api_config`,
which validates again and stores) hand a file's documents here: each document
goes to its kind's parser (:mod:`glia.service.manifest`,
:mod:`glia.policy.manifest`) with its number in the file, so that every
problem of the whole file names its document and field, and is raised as one
:class:`~glia.service.manifest.ManifestError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from glia.manifestcheck import show, where
from glia.policy import manifest as policy_manifest
from glia.policy.manifest import PolicyDoc, PolicyRef
from glia.service import manifest as service_manifest
from glia.service.manifest import ManifestError, ServiceDoc, ServiceRef

# The kinds glia apply takes; the kind's parser checks the apiVersion (so a
# wrong one is named as such, not as an unknown kind).
SERVICE = service_manifest.KIND
POLICY = policy_manifest.KIND
KINDS = (SERVICE, POLICY)
ACCEPTED = (
    f"{service_manifest.API_VERSION} {SERVICE} or {policy_manifest.API_VERSION} {POLICY} objects"
)


@dataclass(frozen=True, slots=True)
class Declared:
    """A file's parsed documents by kind (each keeps its number in the file)."""

    services: list[ServiceDoc] = field(default_factory=list)
    policies: list[PolicyDoc] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Refs:
    """The resources a file names (``glia delete -f``), by kind, with their document numbers."""

    services: list[tuple[int, ServiceRef]] = field(default_factory=list)
    policies: list[tuple[int, PolicyRef]] = field(default_factory=list)


def _split(docs: Sequence[Any], source: str) -> tuple[dict[str, list[int]], list[str]]:
    """Document numbers by kind, and a problem for each document of no known kind."""
    by_kind: dict[str, list[int]] = {k: [] for k in KINDS}
    problems: list[str] = []
    for i, raw in enumerate(docs, 1):
        kind = raw.get("kind") if isinstance(raw, Mapping) else None
        if isinstance(kind, str) and kind in by_kind:  # a YAML kind may be unhashable
            by_kind[kind].append(i)
            continue
        at = where(source, i, "", None, None)
        if not isinstance(raw, Mapping):
            problems.append(
                f"{at}: <document>: expected a mapping (a Kubernetes object), got {show(raw)}"
            )
        else:
            problems.append(f"{at}: kind: expected {ACCEPTED}, got {show(kind)}")
    return by_kind, problems


def _collect(problems: list[str], fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ManifestError as e:
        problems.extend(e.problems)
        return None


def parse(
    docs: Sequence[Any], source: str, *, service_cidr: str | None = None, cluster: str = ""
) -> Declared:
    """Every document parsed by its kind's parser, or one ManifestError with every problem.

    ``service_cidr`` and ``cluster`` go to the Service and the policy parser.
    """
    by_kind, problems = _split(docs, source)
    svc_n, pol_n = by_kind[SERVICE], by_kind[POLICY]
    services = _collect(
        problems,
        lambda: service_manifest.parse_services(
            [docs[i - 1] for i in svc_n], source, service_cidr=service_cidr, numbers=svc_n
        ),
    )
    policies = _collect(
        problems,
        lambda: policy_manifest.parse_policies(
            [docs[i - 1] for i in pol_n], source, cluster=cluster, numbers=pol_n
        ),
    )
    if problems:
        raise ManifestError(_by_document(problems, source))
    return Declared(services or [], policies or [])


def parse_refs(docs: Sequence[Any], source: str) -> Refs:
    """What ``glia delete -f`` deletes: only kind and metadata of each document are checked.

    A resource named twice is listed once, with its first document.
    """
    by_kind, problems = _split(docs, source)
    refs = Refs()
    for n in by_kind[SERVICE]:
        try:
            (sref,) = service_manifest.parse_refs([docs[n - 1]], source, numbers=[n])
        except ManifestError as e:
            problems += e.problems
            continue
        if sref not in (r for _, r in refs.services):
            refs.services.append((n, sref))
    for n in by_kind[POLICY]:
        try:
            (pref,) = policy_manifest.parse_refs([docs[n - 1]], source, numbers=[n])
        except ManifestError as e:
            problems += e.problems
            continue
        if pref not in (r for _, r in refs.policies):
            refs.policies.append((n, pref))
    if problems:
        raise ManifestError(_by_document(problems, source))
    return refs


def _by_document(problems: list[str], source: str) -> list[str]:
    """Problems in file order (each kind's parser reports its own documents only)."""
    prefix = f"{source}: document " if source else "document "

    def number(p: str) -> int:
        if not p.startswith(prefix):
            return 0
        digits = p[len(prefix) :].split(" ", 1)[0].split(":", 1)[0]
        return int(digits) if digits.isdigit() else 0

    return sorted(problems, key=number)
