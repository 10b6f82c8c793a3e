"""JSON encoding of model objects, validated on decode.

Everything read from etcd (above all from another cluster) goes through
:func:`decode`, which checks types and required fields and raises
:class:`InvalidValue` naming the field, instead of letting a malformed value
reach a BPF map.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, TypeVar

import pydantic

T = TypeVar("T")


class InvalidValue(ValueError):
    """A stored or received value does not have the expected shape."""


@functools.cache
def _adapter(cls: type[Any]) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(cls)


def to_dict(obj: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"{type(obj).__name__} is not a model dataclass")
    return _adapter(type(obj)).dump_python(obj, mode="json")  # type: ignore[no-any-return]


def encode(obj: Any) -> bytes:
    return json.dumps(to_dict(obj), separators=(",", ":"), sort_keys=True).encode()


def from_dict(cls: type[T], data: Any) -> T:
    try:
        return _adapter(cls).validate_python(data)  # type: ignore[no-any-return,arg-type]
    except pydantic.ValidationError as e:
        raise InvalidValue(_describe(cls, e)) from None
    except ValueError as e:  # __post_init__ checks
        raise InvalidValue(f"{cls.__name__}: {e}") from None


def decode(cls: type[T], raw: bytes | str) -> T:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidValue(f"{cls.__name__}: not valid JSON ({e})") from None
    return from_dict(cls, data)


def _describe(cls: type[Any], err: pydantic.ValidationError) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "<root>"
        parts.append(f"{loc}: {item['msg']}")
    return f"{cls.__name__}: " + "; ".join(parts)
