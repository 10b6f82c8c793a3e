"""Checking Kubernetes-style documents: every problem collected, each naming its document and field.

Pure. Used by :mod:`glia.service.manifest` (Service) and
:mod:`glia.policy.manifest` (CiliumNetworkPolicy). Messages read ``policies.yaml: document 2
(CiliumNetworkPolicy shop/web): spec.ingress[0].toPorts[0].ports[1].port:
expected ...``; the caller raises them together as one
:class:`glia.service.manifest.ManifestError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeGuard

# Kubernetes name rules.
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# ObjectMeta fields set by the API server or by controllers: meaningless here.
META_IGNORED = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
    "generateName",
)
META_FIELDS = ("name", "namespace", "labels", "annotations")


def show(value: Any) -> str:
    """A value as it appears in a message: JSON-ish for scalars, a kind for the rest."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str | bool | int | float) or value is None:
        try:
            text = json.dumps(value)
        except ValueError:
            text = str(value)
        return text if len(text) <= 60 else text[:57] + '..."'
    return f"a {type(value).__name__}"


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def empty(value: Any) -> bool:
    """Unset in YAML's ways: missing, null, "", [], {}, false."""
    return value is None or value == "" or value == [] or value == {} or value is False


def dns_label_error(value: str, what: str) -> str | None:
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        return (
            f"expected {what}: at most 63 lowercase letters, digits or '-', "
            f"starting and ending with a letter or digit, got {show(value)}"
        )
    return None


def dns_subdomain_error(value: str, what: str) -> str | None:
    if len(value) > 253 or not DNS1123_SUBDOMAIN.match(value):
        return (
            f"expected {what}: at most 253 lowercase letters, digits, '-' or '.', "
            f"starting and ending with a letter or digit, got {show(value)}"
        )
    return None


def where(source: str, index: int, kind: str, namespace: str | None, name: str | None) -> str:
    parts = []
    if source:
        parts.append(source)
    ident = "" if not name else f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    if index:
        parts.append(f"document {index}" + (f" ({ident})" if ident else ""))
    elif ident:
        parts.append(ident)
    return ": ".join(parts)


class DocProblems:
    """Problems of one document, each prefixed with where it is."""

    def __init__(self, source: str, index: int, kind: str) -> None:
        self.source = source
        self.index = index
        self.kind = kind
        self.namespace: str | None = None
        self.name: str | None = None
        self._problems: list[tuple[str, str]] = []

    def add(self, path: str, msg: str) -> None:
        self._problems.append((path, msg))

    @property
    def ok(self) -> bool:
        return not self._problems

    @property
    def count(self) -> int:
        return len(self._problems)

    @property
    def where(self) -> str:
        return where(self.source, self.index, self.kind, self.namespace, self.name)

    def problems(self) -> list[str]:
        w = self.where
        return [f"{w}: {path}: {msg}" if w else f"{path}: {msg}" for path, msg in self._problems]

    def mapping(self, value: Any, path: str, *, required: bool = False) -> Mapping[str, Any] | None:
        if value is None:
            if required:
                self.add(path, "required, expected a mapping")
            return None
        if not isinstance(value, Mapping):
            self.add(path, f"expected a mapping, got {show(value)}")
            return None
        return value

    def seq(self, value: Any, path: str) -> list[Any]:
        """A list; null or missing is an empty one."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(path, f"expected a list, got {show(value)}")
            return []
        return value

    def fields(
        self,
        obj: Mapping[Any, Any],
        path: str,
        known: Iterable[str],
        unsupported: Mapping[str, str] | None = None,
    ) -> None:
        """Unknown keys are errors; ``unsupported`` keys (key -> why) are errors unless empty."""
        allowed = set(known)
        for key, value in obj.items():
            at = f"{path}.{key}" if path else str(key)
            if unsupported and key in unsupported:
                if not empty(value):
                    self.add(at, f"not supported ({unsupported[key]})")
            elif key not in allowed:
                self.add(at, "unknown field")

    def string(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            self.add(path, f"expected a string, got {show(value)}")
            return None
        return value

    def string_map(self, value: Any, path: str) -> dict[str, str]:
        obj = self.mapping(value, path)
        out: dict[str, str] = {}
        for key, val in (obj or {}).items():
            if not isinstance(key, str) or not key:
                self.add(path, f"keys must be non-empty strings, got {show(key)}")
                continue
            if not isinstance(val, str):
                hint = f' (quote it: "{show(val)}")' if isinstance(val, bool | int | float) else ""
                self.add(f"{path}[{key}]", f"expected a string, got {show(val)}{hint}")
                continue
            out[key] = val
        return out

    def metadata(self, raw: Mapping[str, Any], default_namespace: str) -> Mapping[str, Any]:
        """Checks ``metadata`` (name: DNS-1123 subdomain, namespace: label); sets name/namespace."""
        meta = self.mapping(raw.get("metadata"), "metadata", required=True)
        if meta is None:
            return {}
        self.fields(meta, "metadata", META_FIELDS + META_IGNORED)
        name = meta.get("name")
        if name is None:
            self.add("metadata.name", "required")
        elif (n := self.string(name, "metadata.name")) is not None:
            err = dns_subdomain_error(n, f"a {self.kind} name (DNS-1123 subdomain)")
            if err:
                self.add("metadata.name", err)
            else:
                self.name = n
        ns = meta.get("namespace")
        ns = default_namespace if ns is None or ns == "" else ns
        if (s := self.string(ns, "metadata.namespace")) is not None:
            err = dns_label_error(s, "a namespace (DNS-1123 label)")
            if err:
                self.add("metadata.namespace", err)
            else:
                self.namespace = s
        return meta


def named_refs(
    docs: Sequence[Any],
    numbers: Sequence[int] | None,
    check: Callable[[int, Any], DocProblems],
) -> tuple[list[tuple[str, str]], list[str]]:
    """(namespace, name) of every document whose header ``check`` passes, first seen
    first, and every problem (``glia delete -f`` of any kind). ``check(number, raw)``
    checks kind and metadata only; ``numbers``: the documents' numbers in their file."""
    problems: list[str] = []
    refs: list[tuple[str, str]] = []
    for i, raw in zip(numbers or range(1, len(docs) + 1), docs, strict=True):
        doc = check(i, raw)
        if doc.ok and doc.namespace and doc.name and (doc.namespace, doc.name) not in refs:
            refs.append((doc.namespace, doc.name))
        problems += doc.problems()
    return refs, problems
