"""Which of a workload's runtime labels make its security identity.

Called by the endpoint manager (:mod:`glia.endpoint.manager`) on the labels the
runtime reports (podman's and dockerd's ``Config.Labels``) before it allocates
an identity, and by :class:`glia.agent.config.AgentConfig` to check its
``identity_labels_*`` keys at load. Pure.

Runtimes merge the image's labels into the container's: a podman pod's infra
container carries ``io.buildah.version`` of whatever buildah built the image.
Such labels say nothing about what the workload is, yet every distinct label
set is another identity cluster-wide; identical pods on nodes with different
podman versions would get different ones. Cilium calls the labels that count
"identity-relevant" and filters the rest out (``pkg/labelsfilter``, the
agent's ``--labels``); glia's rules are key prefixes instead of Cilium's
regular expressions, in two lists:

- ``exclude``: a label matching any entry is dropped (default
  :data:`DEFAULT_EXCLUDE`: image metadata and Kubernetes controller noise);
- ``include``: when not empty, only labels matching an entry are kept, before
  ``exclude`` is applied (Cilium: once one inclusive pattern is given, only
  matching labels count).

glia's own labels (:data:`RESERVED`: the namespace and the cluster) always stay:
policy scoping depends on them.

An entry matches the key equal to it and, when it ends in ``.`` or ``/``, every
key starting with it; otherwise the keys that continue it after a ``.`` or
``/``. So ``io.buildah`` and ``io.buildah.`` both match ``io.buildah.version``,
and ``app`` matches ``app`` and ``app.kubernetes.io/name`` but not
``application``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL

RESERVED: tuple[str, ...] = (NAMESPACE_LABEL, CLUSTER_LABEL)
"""Keys no rule drops: policy scopes selectors by namespace and cluster."""

IMAGE_METADATA: tuple[str, ...] = (
    "io.buildah.",  # io.buildah.version: the buildah that built the image
    "org.opencontainers.image.",  # OCI annotations as labels (source, revision, created)
    "org.label-schema.",  # the label-schema.org convention OCI's replaced
    "io.containers.",  # podman/containers-common (io.containers.autoupdate)
    "io.podman.",  # podman's own
    "com.docker.",  # Docker Desktop and compose (com.docker.compose.*)
    "maintainer",  # Dockerfile MAINTAINER
    "PODMAN_SYSTEMD_UNIT",  # set by podman generate systemd / quadlet: the unit's name
)
"""Labels images and container tooling add: never "what the workload is"."""

CONTROLLER_NOISE: tuple[str, ...] = (
    "pod-template-hash",  # per ReplicaSet: a new identity on every rollout
    "controller-revision-hash",  # per DaemonSet/StatefulSet revision
    "pod-template-generation",  # per DaemonSet generation
    "statefulset.kubernetes.io/pod-name",  # unique per pod
    "apps.kubernetes.io/pod-index",  # StatefulSet ordinal
    "batch.kubernetes.io/job-completion-index",  # indexed Job
)
"""Kubernetes controller labels, unique per revision or per pod (Cilium's defaults)."""

DEFAULT_EXCLUDE: tuple[str, ...] = IMAGE_METADATA + CONTROLLER_NOISE
"""What the agent drops when its config names nothing else."""

_SEPARATORS = "./"
# Characters that mean the writer expected something other than a plain prefix.
_NOT_PREFIX = {
    "=": "a label key prefix, not key=value",
    "!": "a prefix; exclusions go in identity_labels_exclude (no Cilium '!' syntax)",
    "*": "a prefix, not a pattern",
    "^": "a prefix, not a pattern",
    "$": "a prefix, not a pattern",
    "(": "a prefix, not a pattern",
    "[": "a prefix, not a pattern",
    ":": "a label key prefix without a source (Cilium's k8s:, container:)",
}


def matches(entry: str, key: str) -> bool:
    """Whether the rule ``entry`` covers the label key ``key`` (module docstring)."""
    if key == entry:
        return True
    if not key.startswith(entry):
        return False
    return entry[-1] in _SEPARATORS or key[len(entry)] in _SEPARATORS


def entry_problem(entry: object) -> str | None:
    """Why ``entry`` cannot be a rule, None if it can."""
    if not isinstance(entry, str):
        return f"not a string ({type(entry).__name__})"
    if not entry:
        return "empty (it would match every label)"
    if any(c.isspace() or not c.isprintable() for c in entry):
        return "contains whitespace or control characters"
    for c, why in _NOT_PREFIX.items():
        if c in entry:
            return f"contains {c!r}: write {why}"
    return None


@dataclass(frozen=True, slots=True)
class LabelFilter:
    """The identity-relevant subset of a label set; ``ValueError`` on a bad rule."""

    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    include: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, entries in (("exclude", self.exclude), ("include", self.include)):
            check_entries(f"identity_labels_{name}", entries)

    @classmethod
    def of(cls, include: Iterable[str], exclude: Iterable[str]) -> LabelFilter:
        return cls(exclude=tuple(exclude), include=tuple(include))

    def relevant(self, key: str) -> bool:
        if key in RESERVED:
            return True
        if self.include and not any(matches(e, key) for e in self.include):
            return False
        return not any(matches(e, key) for e in self.exclude)

    def apply(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels that make the identity, in their given order."""
        return {k: v for k, v in labels.items() if self.relevant(k)}


def check_entries(field: str, entries: Iterable[object]) -> None:
    """``ValueError`` naming ``field``, the entry's index and what is wrong with it."""
    for i, entry in enumerate(entries):
        problem = entry_problem(entry)
        if problem is None and entry in RESERVED and field.endswith("exclude"):
            problem = "a reserved label glia always keeps (the identity's namespace or cluster)"
        if problem is not None:
            raise ValueError(f"{field}[{i}] {entry!r}: {problem}")
