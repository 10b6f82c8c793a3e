"""The async etcd v3 client every part of glia codes against.

Agents, operators, clustermesh watchers and the CLI call :meth:`KVClient.connect`
with an :class:`~glia.kvstore.config.EtcdConfig` and then use get/list/put/
create/update_if/txn/leases/watch. All failures surface as the errors of
:mod:`glia.kvstore.errors`.

The transport (TLS channels, failover, retry) is :mod:`glia.kvstore.conn`,
leases are :mod:`glia.kvstore.lease`, watches :mod:`glia.kvstore.watch`.
"""

from __future__ import annotations

import builtins
import logging
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from aetcd import rpc

from glia.kvstore.config import EtcdConfig
from glia.kvstore.conn import Conn, ConnPool
from glia.kvstore.errors import (
    Compacted,
    KVStoreError,
    KVStoreUnavailable,
    PermissionDenied,
)
from glia.kvstore.lease import Lease
from glia.kvstore.records import (
    Compare,
    Delete,
    Event,
    EventKind,
    KeyValue,
    Put,
    encode_key,
    kv_from_pb,
    prefix_range,
)
from glia.kvstore.tls import certificate_cn, load_credentials, parse_endpoints
from glia.kvstore.watch import watch_prefix

__all__ = [
    "Compacted",
    "Compare",
    "Delete",
    "Event",
    "EventKind",
    "KVClient",
    "KVStoreError",
    "KVStoreUnavailable",
    "KeyValue",
    "Lease",
    "PermissionDenied",
    "Put",
]

log = logging.getLogger(__name__)

# Keys per range request when listing: keeps each response small however
# big the prefix (100k services), all pages read at the first page's revision.
LIST_PAGE = 2000

_TARGETS = {
    "version": rpc.Compare.VERSION,
    "create": rpc.Compare.CREATE,
    "mod": rpc.Compare.MOD,
    "value": rpc.Compare.VALUE,
    "lease": rpc.Compare.LEASE,
}
_OPS = {
    "==": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}
_FIELDS = {
    "version": "version",
    "create": "create_revision",
    "mod": "mod_revision",
    "value": "value",
    "lease": "lease",
}


def _compare_pb(c: Compare) -> Any:
    msg = rpc.Compare(key=encode_key(c.key), target=_TARGETS[c.target], result=_OPS[c.op])
    setattr(msg, _FIELDS[c.target], c.value)
    return msg


def _op_pb(op: Put | Delete) -> Any:
    if isinstance(op, Put):
        lease = op.lease.id if op.lease is not None else 0
        put = rpc.PutRequest(key=encode_key(op.key), value=op.value, lease=lease)
        return rpc.RequestOp(request_put=put)
    if op.prefix:
        key, end = prefix_range(op.key)
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=encode_key(op.key)))


def _range_call(req: Any) -> Callable[[Conn, float], Awaitable[Any]]:
    # A function, not a lambda in the loop: each page's call binds its own request.
    return lambda c, t: c.kv.Range(req, timeout=t)


class KVClient:
    """A connection to one etcd cluster, authenticated by client certificate."""

    def __init__(self, cfg: EtcdConfig, pool: ConnPool) -> None:
        self.cfg = cfg
        self._pool = pool
        # Weak: a revoked or lost lease the owner dropped needs no closing.
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()

    @classmethod
    async def connect(
        cls,
        cfg: EtcdConfig,
        *,
        check_read: Sequence[str] = (),
        check_write: Sequence[str] = (),
        retry_timeout: float = 10.0,
    ) -> KVClient:
        """Connect, check that etcd answers and that this user may do what it will.

        ``check_read``/``check_write`` entries ending in ``/`` are prefixes,
        others single keys (e.g. ``glia/.heartbeat``). The check is explicit
        because etcd cancels a watch that RBAC denies without an error status.
        Reaching etcd is tried for ``cfg.dial_timeout`` seconds; later calls
        retry transient failures for ``retry_timeout`` seconds.
        """
        pool = ConnPool(
            parse_endpoints(cfg.endpoints),
            load_credentials(cfg),
            call_timeout=cfg.dial_timeout,
            retry_timeout=retry_timeout,
            user=certificate_cn(cfg.cert_file),
        )
        client = cls(cfg, pool)
        try:
            try:
                await pool.unary(
                    "connect (status)",
                    lambda c, t: c.maintenance.Status(rpc.StatusRequest(), timeout=t),
                    retry_for=cfg.dial_timeout,
                )
            except KVStoreUnavailable as e:
                if cfg.cert_file is None:
                    # Without a client certificate etcd (--client-cert-auth)
                    # breaks off the TLS handshake, which gRPC reports obscurely.
                    raise KVStoreUnavailable(
                        f"{e} (no client certificate is configured; glia's etcd "
                        "requires one whose CN is the etcd user)"
                    ) from None
                raise
            for p in check_read:
                await client.check_read(p)
            for p in check_write:
                await client.check_write(p)
        except BaseException:
            await client.close()
            raise
        return client

    @property
    def endpoint(self) -> str:
        """The endpoint currently in use."""
        return self._pool.current().url

    async def close(self) -> None:
        """Stop lease keep-alives (without revoking: the leases run out) and close channels."""
        for lease in list(self._leases):
            await lease.stop_keepalive()
        await self._pool.close()

    async def __aenter__(self) -> KVClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- permission checks -------------------------------------------------

    async def check_read(self, key_or_prefix: str) -> None:
        key, end = self._range_of(key_or_prefix)
        req = rpc.RangeRequest(key=key, range_end=end, limit=1, keys_only=True)
        try:
            await self._pool.unary(
                f"read check of {key_or_prefix!r}", lambda c, t: c.kv.Range(req, timeout=t)
            )
        except PermissionDenied as e:
            raise PermissionDenied(
                f"etcd user {self.user!r} may not read {key_or_prefix!r} "
                f"(etcd at {e.endpoint}: {e.details})"
            ) from None

    async def check_write(self, key_or_prefix: str) -> None:
        # A transaction whose condition is never true (version < 0) writes
        # nothing, but etcd checks the permissions of both branches first.
        key, end = self._range_of(key_or_prefix)
        never = rpc.Compare(key=key, target=rpc.Compare.VERSION, result=rpc.Compare.LESS, version=0)
        op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))
        req = rpc.TxnRequest(compare=[never], success=[op], failure=[])
        try:
            await self._pool.unary(
                f"write check of {key_or_prefix!r}", lambda c, t: c.kv.Txn(req, timeout=t)
            )
        except PermissionDenied as e:
            raise PermissionDenied(
                f"etcd user {self.user!r} may not write {key_or_prefix!r} "
                f"(etcd at {e.endpoint}: {e.details})"
            ) from None

    def _range_of(self, key_or_prefix: str) -> tuple[bytes, bytes]:
        if key_or_prefix.endswith("/"):
            return prefix_range(key_or_prefix)
        return encode_key(key_or_prefix), b""

    @property
    def user(self) -> str | None:
        """The etcd user this client authenticates as (its certificate's CN)."""
        return self._pool.user

    # --- reads -------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        req = rpc.RangeRequest(key=encode_key(key))
        resp = await self._pool.unary(f"get {key!r}", lambda c, t: c.kv.Range(req, timeout=t))
        return kv_from_pb(resp.kvs[0]) if resp.kvs else None

    async def list(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        """Every key under ``prefix``, sorted by key, and the revision they were read at."""
        for _ in range(3):
            try:
                return await self._list_once(prefix)
            except Compacted:
                # Compacted between two pages: read again at a newer revision.
                continue
        return await self._list_once(prefix)

    async def _list_once(self, prefix: str) -> tuple[builtins.list[KeyValue], int]:
        start, end = prefix_range(prefix)
        out: builtins.list[KeyValue] = []
        revision = 0
        while True:
            req = rpc.RangeRequest(key=start, range_end=end, limit=LIST_PAGE, revision=revision)
            resp = await self._pool.unary(f"list {prefix!r}", _range_call(req))
            if revision == 0:
                revision = int(resp.header.revision)
            out.extend(kv_from_pb(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return out, revision
            start = bytes(resp.kvs[-1].key) + b"\0"

    async def revision(self) -> int:
        """The cluster's current revision (needs no read permission on any key)."""
        resp = await self._pool.unary(
            "revision (status)",
            lambda c, t: c.maintenance.Status(rpc.StatusRequest(), timeout=t),
        )
        return int(resp.header.revision)

    # --- writes ------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        req = rpc.PutRequest(key=encode_key(key), value=value, lease=lease.id if lease else 0)
        resp = await self._pool.unary(f"put {key!r}", lambda c, t: c.kv.Put(req, timeout=t))
        return int(resp.header.revision)

    async def create(self, key: str, value: bytes, *, lease: Lease | None = None) -> bool:
        """Put only if the key does not exist."""
        return await self.txn([Compare(key, "create", "==", 0)], [Put(key, value, lease)])

    async def update_if(
        self, key: str, value: bytes, *, mod_revision: int, lease: Lease | None = None
    ) -> bool:
        """Put only if the key is still at ``mod_revision`` (compare-and-swap)."""
        return await self.txn([Compare(key, "mod", "==", mod_revision)], [Put(key, value, lease)])

    async def delete(self, key: str) -> bool:
        req = rpc.DeleteRangeRequest(key=encode_key(key))
        resp = await self._pool.unary(
            f"delete {key!r}", lambda c, t: c.kv.DeleteRange(req, timeout=t)
        )
        return int(resp.deleted) > 0

    async def delete_if(self, key: str, *, mod_revision: int) -> bool:
        return await self.txn([Compare(key, "mod", "==", mod_revision)], [Delete(key)])

    async def delete_prefix(self, prefix: str) -> int:
        key, end = prefix_range(prefix)
        req = rpc.DeleteRangeRequest(key=key, range_end=end)
        resp = await self._pool.unary(
            f"delete prefix {prefix!r}", lambda c, t: c.kv.DeleteRange(req, timeout=t)
        )
        return int(resp.deleted)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Put | Delete],
        failure: Sequence[Put | Delete] = (),
    ) -> bool:
        """All ``compares`` true: apply ``success``, else ``failure``; atomically.

        Returns whether the compares held. etcd allows at most 128 operations
        per branch by default (``--max-txn-ops``).
        """
        req = rpc.TxnRequest(
            compare=[_compare_pb(c) for c in compares],
            success=[_op_pb(o) for o in success],
            failure=[_op_pb(o) for o in failure],
        )
        keys = ", ".join(sorted({c.key for c in compares} | {o.key for o in success}))
        resp = await self._pool.unary(f"txn on {keys}", lambda c, t: c.kv.Txn(req, timeout=t))
        return bool(resp.succeeded)

    # --- leases ------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> Lease:
        """A new lease, kept alive in the background until revoked or the client closes."""
        if ttl < 1:
            raise ValueError(f"lease TTL must be >= 1 s, got {ttl}")
        req = rpc.LeaseGrantRequest(TTL=ttl)
        resp = await self._pool.unary(
            f"grant lease (ttl {ttl})", lambda c, t: c.lease.LeaseGrant(req, timeout=t)
        )
        if resp.error:
            raise KVStoreError(f"etcd refused a lease of {ttl} s: {resp.error}")
        lease = Lease(self._pool, int(resp.ID), int(resp.TTL))
        self._leases.add(lease)
        lease.start_keepalive()
        return lease

    async def revoke_lease(self, lease_id: int) -> bool:
        """Revoke any lease by id (e.g. a dead node's); False if it no longer exists."""
        req = rpc.LeaseRevokeRequest(ID=lease_id)
        try:
            await self._pool.unary(
                f"revoke lease {lease_id:#x}", lambda c, t: c.lease.LeaseRevoke(req, timeout=t)
            )
        except KVStoreError as e:
            if "requested lease not found" in str(e):
                return False
            raise
        return True

    async def lease_ttl(self, lease_id: int) -> int:
        """Seconds left on a lease, -1 if it does not exist (any more)."""
        req = rpc.LeaseTimeToLiveRequest(ID=lease_id)
        resp = await self._pool.unary(
            f"lease {lease_id:#x} time to live",
            lambda c, t: c.lease.LeaseTimeToLive(req, timeout=t),
        )
        return int(resp.TTL)

    # --- watch and maintenance ---------------------------------------------

    def watch(
        self,
        prefix: str,
        *,
        start_revision: int,
        on_reconnect: Callable[[str], None] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Every event under ``prefix`` from ``start_revision`` on, across reconnects.

        Raises :class:`Compacted` if that history is gone, :class:`PermissionDenied`
        if RBAC refuses the watch. ``on_reconnect(reason)`` is called each time
        the stream broke and is being re-established.
        """
        return watch_prefix(self._pool, prefix, start_revision, on_reconnect)

    async def compact(self, revision: int) -> None:
        """Drop history before ``revision``; a no-op if it is already compacted."""
        req = rpc.CompactionRequest(revision=revision, physical=False)
        try:
            await self._pool.unary(
                f"compact at {revision}", lambda c, t: c.kv.Compact(req, timeout=t)
            )
        except Compacted:
            return
