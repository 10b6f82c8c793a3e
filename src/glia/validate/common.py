"""The two steps every validator starts with: take the key apart, decode the value."""

from __future__ import annotations

from typing import TypeVar

from glia.kvstore import keys
from glia.model import codec
from glia.validate.bounds import ClusterBounds
from glia.validate.errors import Rejected

T = TypeVar("T")


def key_parts(key: str, prefix: str, count: int, bounds: ClusterBounds) -> tuple[str, ...]:
    """The ``count`` components of ``key`` under ``prefix``, the first being our cluster."""
    try:
        parts = keys.parse(key)
    except ValueError as e:
        raise Rejected(str(e)) from None
    if parts.prefix != prefix or len(parts.parts) != count:
        raise Rejected(f"key does not have the layout {prefix}<cluster>/... ({count} parts)")
    if parts.parts[0] != bounds.cluster:
        raise Rejected(f"key is of cluster {parts.parts[0]!r}, expected {bounds.cluster!r}")
    return parts.parts


def decode(cls: type[T], raw: bytes) -> T:
    try:
        return codec.decode(cls, raw)
    except codec.InvalidValue as e:
        raise Rejected(str(e)) from None
