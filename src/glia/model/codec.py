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
import typing
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


def check_keys(cls: type[Any], data: Any, where: str = "") -> None:
    """Refuse keys ``cls`` (a dataclass, nested ones too) does not have.

    For configuration files, where a misspelt key would otherwise be ignored
    silently; values read from etcd are not checked (a newer writer may add
    fields). :class:`InvalidValue` names the key and the known ones.
    """
    if not isinstance(data, dict):
        return  # from_dict reports the wrong shape
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        path = f"{where}{key}"
        if key not in fields:
            known = ", ".join(fields)
            raise InvalidValue(f"{cls.__name__}: unknown key {path!r} (known: {known})")
        hints = typing.get_type_hints(cls)
        inner = [a for a in (hints[key], *typing.get_args(hints[key])) if _is_dataclass_type(a)]
        if inner:
            check_keys(inner[0], value, f"{path}.")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)
