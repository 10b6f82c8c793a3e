"""Plain values of the kvstore API: key-values, watch events, transaction parts.

Re-exported by :mod:`glia.kvstore.client`, which is where callers import them
from. Pure data plus the conversion from etcd's protobuf messages; no I/O.

Keys are ``str`` here and UTF-8 in etcd. Bytes that are not UTF-8 (a foreign
writer) decode with ``surrogateescape``, so such a key still round-trips
exactly instead of crashing a watcher.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from glia.kvstore.lease import Lease


def encode_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def decode_key(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """etcd ``(key, range_end)`` covering every key that starts with ``prefix``."""
    raw = encode_key(prefix)
    if not raw:
        # etcd's spelling of "every key": key and range_end both "\0".
        return b"\0", b"\0"
    b = bytearray(raw)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return raw, bytes(b[: i + 1])
    # A prefix of only 0xFF bytes: "\0" means "to the end of the keyspace".
    return raw, b"\0"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int  # number of puts since creation; 1 for a new key
    lease: int  # lease id, 0 if none


class EventKind(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    key: str
    value: bytes  # b"" on delete
    mod_revision: int
    # Only meaningful for PUT (etcd sends zeros on delete).
    create_revision: int = 0
    version: int = 0
    lease: int = 0

    def as_kv(self) -> KeyValue:
        """The key-value this PUT left in etcd."""
        return KeyValue(
            self.key, self.value, self.create_revision, self.mod_revision, self.version, self.lease
        )


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction, e.g. ``Compare(k, "mod", "==", 42)``.

    ``"create"`` ``== 0`` means "the key does not exist"; ``"lease"`` compares
    the id of the lease the key is on (0: none, or no such key).
    """

    key: str
    target: Literal["version", "create", "mod", "value", "lease"]
    op: Literal["==", "!=", "<", ">"]
    value: int | bytes

    def __post_init__(self) -> None:
        if self.target not in ("version", "create", "mod", "value", "lease"):
            raise ValueError(
                f"compare target must be version/create/mod/value/lease: {self.target!r}"
            )
        if self.op not in ("==", "!=", "<", ">"):
            raise ValueError(f"compare op must be ==, !=, < or >: {self.op!r}")
        want_bytes = self.target == "value"
        if want_bytes != isinstance(self.value, bytes) or isinstance(self.value, bool):
            kind = "bytes" if want_bytes else "an int"
            raise ValueError(f"compare on {self.target} needs {kind}, got {self.value!r}")


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: Lease | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


def kv_from_pb(kv: Any) -> KeyValue:
    return KeyValue(
        key=decode_key(kv.key),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def event_from_pb(ev: Any) -> Event:
    kv = ev.kv
    # mvccpb.Event.EventType: PUT = 0, DELETE = 1.
    if int(ev.type) == 1:
        return Event(EventKind.DELETE, decode_key(kv.key), b"", int(kv.mod_revision))
    return Event(
        EventKind.PUT,
        decode_key(kv.key),
        bytes(kv.value),
        int(kv.mod_revision),
        int(kv.create_revision),
        int(kv.version),
        int(kv.lease),
    )
