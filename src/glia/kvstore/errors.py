"""Errors of the kvstore layer, and the mapping from gRPC failures to them.

Everything above :mod:`glia.kvstore.client` (agent, operator, clustermesh, CLI)
catches these, never a gRPC exception: each carries a message that names the
etcd endpoint and says what went wrong, fit to show to a user as it is.
"""

from __future__ import annotations

import re

import grpc


class KVStoreError(Exception):
    """Any kvstore failure. The message is meant for people.

    ``endpoint`` and ``details`` (etcd's or gRPC's own words) are set when
    the failure came from a call to etcd, for callers that word their own message.
    """

    endpoint: str | None = None
    details: str | None = None


class KVStoreUnavailable(KVStoreError):
    """etcd could not be reached (or answered too late), after retrying."""


class PermissionDenied(KVStoreError):
    """etcd's RBAC refused the operation for this client's user (its certificate CN)."""


class Compacted(KVStoreError):
    """A watch asked for history that etcd has compacted away: list again."""

    def __init__(self, compact_revision: int, message: str | None = None) -> None:
        self.compact_revision = compact_revision
        super().__init__(
            message or f"etcd history before revision {compact_revision} has been compacted"
        )


# Codes after which the same request may succeed on another try or endpoint.
# etcd answers UNAVAILABLE also for "no leader" and "leader changed"; gRPC
# reports a connection cut in the middle of a call as INTERNAL ("Internal
# error from Core"), so that is a transport failure too.
TRANSIENT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}
)
# Codes that end a long-lived stream (watch) for good; any other failure of a
# stream is retried, since re-reading from a revision is always safe.
FATAL_STREAM_CODES = frozenset(
    {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

_COMPACTED_DETAIL = "required revision has been compacted"
# etcd wraps some reasons (e.g. a watch's cancel_reason) in Go's gRPC error text.
_GO_RPC_ERROR = re.compile(r"^rpc error: code = \w+ desc = ")


def is_transient(code: grpc.StatusCode | None) -> bool:
    return code in TRANSIENT_CODES


def is_fatal_for_stream(code: grpc.StatusCode | None) -> bool:
    return code in FATAL_STREAM_CODES


def map_rpc_error(
    code: grpc.StatusCode | None, details: str, endpoint: str, what: str, user: str | None = None
) -> KVStoreError:
    """Turn a failed gRPC call into a kvstore error.

    ``what`` says what was attempted (e.g. ``"put glia/state/x"``); ``details``
    is the server's (or gRPC's) text, kept in the message because it is often the
    only clue (TLS handshake failures, RBAC, leader loss). ``user`` is the
    etcd user (the client certificate's CN), if known.
    """
    details = _GO_RPC_ERROR.sub("", details) or "(no details)"
    who = f"etcd user {user!r}" if user else "this client's etcd user (its certificate's CN)"
    err = _map(code, details, endpoint, what, who)
    err.endpoint, err.details = endpoint, details
    return err


def _map(
    code: grpc.StatusCode | None, details: str, endpoint: str, what: str, who: str
) -> KVStoreError:
    if code in TRANSIENT_CODES:
        return KVStoreUnavailable(f"etcd at {endpoint} unavailable during {what}: {details}")
    if code == grpc.StatusCode.PERMISSION_DENIED or "permission denied" in details:
        return PermissionDenied(f"etcd at {endpoint} refused {what} for {who}: {details}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return PermissionDenied(
            f"etcd at {endpoint} did not authenticate {who} for {what}: {details}"
        )
    if code == grpc.StatusCode.OUT_OF_RANGE and _COMPACTED_DETAIL in details:
        # The exact compact revision is not in this message; callers that need
        # it (watch) get it from the watch response instead.
        return Compacted(-1, f"etcd at {endpoint}: {what}: {details}")
    name = code.name if code is not None else "UNKNOWN"
    return KVStoreError(f"etcd at {endpoint} failed {what}: {name}: {details}")
