"""The kvstore client and reflector against a real etcd (TLS, client-cert auth, RBAC)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path

import pytest
from waiting import until

from glia.kvstore import client as client_mod
from glia.kvstore.client import (
    Compacted,
    Compare,
    Delete,
    Event,
    EventKind,
    KeyValue,
    KVClient,
    KVStoreUnavailable,
    PermissionDenied,
    Put,
)
from glia.kvstore.config import EtcdConfig
from glia.kvstore.errors import KVStoreError
from glia.kvstore.reflector import Reflector
from glia.lab.etcd import RO_USER, RW_USER, EtcdServer
from glia.lab.pki import issue, make_ca


@pytest.fixture
async def kv(etcd: EtcdServer) -> AsyncIterator[KVClient]:
    c = await KVClient.connect(etcd.client_config(RW_USER), check_read=["glia/"])
    yield c
    await c.close()


async def test_get_put_delete_list(kv: KVClient, etcd_prefix: str) -> None:
    p = etcd_prefix
    assert await kv.get(p + "a") is None
    rev = await kv.put(p + "a", b"1")
    got = await kv.get(p + "a")
    assert got == KeyValue(p + "a", b"1", rev, rev, 1, 0)
    rev2 = await kv.put(p + "a", b"2")
    got = await kv.get(p + "a")
    assert got is not None
    assert (got.value, got.create_revision, got.mod_revision, got.version) == (b"2", rev, rev2, 2)

    await kv.put(p + "c", b"3")
    await kv.put(p + "b", b"x")
    await kv.put(p[:-1] + "0", b"outside")  # shares the text before "/" only
    items, at = await kv.list(p)
    assert [i.key for i in items] == [p + "a", p + "b", p + "c"]
    assert at >= items[-1].mod_revision
    assert at == await kv.revision()

    assert await kv.delete(p + "b") is True
    assert await kv.delete(p + "b") is False
    assert await kv.delete_prefix(p) == 2
    assert (await kv.list(p))[0] == []
    assert await kv.get(p[:-1] + "0") is not None
    await kv.delete(p[:-1] + "0")


async def test_list_pages_at_one_revision(
    kv: KVClient, etcd_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_mod, "LIST_PAGE", 3)
    p = etcd_prefix
    keys = [f"{p}k{i:02d}" for i in range(10)]
    await kv.txn([], [Put(k, k.encode()) for k in keys])
    items, _ = await kv.list(p)
    assert [i.key for i in items] == keys
    assert [i.value for i in items] == [k.encode() for k in keys]


async def test_create_update_if_delete_if_txn(kv: KVClient, etcd_prefix: str) -> None:
    k = etcd_prefix + "cas"
    assert await kv.create(k, b"v1") is True
    assert await kv.create(k, b"v2") is False
    kv1 = await kv.get(k)
    assert kv1 is not None and kv1.value == b"v1"

    assert await kv.update_if(k, b"v2", mod_revision=kv1.mod_revision) is True
    assert await kv.update_if(k, b"v3", mod_revision=kv1.mod_revision) is False
    kv2 = await kv.get(k)
    assert kv2 is not None and kv2.value == b"v2"

    assert await kv.delete_if(k, mod_revision=kv1.mod_revision) is False
    assert await kv.delete_if(k, mod_revision=kv2.mod_revision) is True
    assert await kv.get(k) is None

    # txn: both branches, several ops, a prefix delete, value and version compares.
    a, b = etcd_prefix + "t/a", etcd_prefix + "t/b"
    ok = await kv.txn(
        [Compare(a, "version", "==", 0)], [Put(a, b"A"), Put(b, b"B")], [Put(a, b"fail")]
    )
    assert ok is True
    ok = await kv.txn([Compare(a, "value", "==", b"nope")], [Put(a, b"no")], [Put(b, b"B2")])
    assert ok is False
    assert (await kv.get(a), await kv.get(b)) != (None, None)
    b_kv = await kv.get(b)
    assert b_kv is not None and b_kv.value == b"B2"
    a_kv = await kv.get(a)
    assert a_kv is not None and a_kv.value == b"A"
    ok = await kv.txn(
        [Compare(a, "value", "==", b"A"), Compare(b, "version", ">", 1)],
        [Delete(etcd_prefix + "t/", prefix=True)],
    )
    assert ok is True
    assert (await kv.list(etcd_prefix + "t/"))[0] == []


async def test_lease_keeps_keys_while_alive_and_dead_owner_keys_vanish(
    etcd: EtcdServer, kv: KVClient, etcd_prefix: str
) -> None:
    owner = await KVClient.connect(etcd.client_config(RW_USER))
    alive = await kv.grant_lease(2)
    doomed = await owner.grant_lease(2)
    await kv.put(etcd_prefix + "alive", b"1", lease=alive)
    await owner.put(etcd_prefix + "node", b"1", lease=doomed)
    await owner.put(etcd_prefix + "endpoint", b"1", lease=doomed)
    assert (await kv.get(etcd_prefix + "node")) is not None

    t0 = asyncio.get_running_loop().time()
    await owner.close()  # the agent dies: nobody renews its lease any more

    async def owner_keys_gone() -> bool:
        return [i.key for i in (await kv.list(etcd_prefix))[0]] == [etcd_prefix + "alive"]

    await until(owner_keys_gone, "a dead owner's leased keys to vanish", 6)
    # The point is outliving the TTL: let two of them pass since the keys were put.
    await asyncio.sleep(max(0.0, t0 + 2 * alive.ttl - asyncio.get_running_loop().time()))
    assert await kv.get(etcd_prefix + "alive") is not None
    assert not alive.lost.is_set()
    assert alive.renewals >= 3
    assert 0 < alive.remaining() <= alive.ttl

    await alive.revoke()
    assert await kv.get(etcd_prefix + "alive") is None
    assert await kv.lease_ttl(alive.id) == -1


async def test_lease_lost_is_reported(kv: KVClient, etcd_prefix: str) -> None:
    lease = await kv.grant_lease(3)
    await kv.put(etcd_prefix + "k", b"1", lease=lease)
    assert await kv.revoke_lease(lease.id) is True  # as an operator would for a dead node
    await until(lease.lost.is_set, "the keep-alive to notice the lease is gone", 5)
    assert await kv.get(etcd_prefix + "k") is None
    assert await kv.revoke_lease(lease.id) is False


async def _events(it: AsyncGenerator[Event, None], n: int, timeout: float = 15) -> list[Event]:
    return [await asyncio.wait_for(anext(it), timeout) for _ in range(n)]


def _summary(events: list[Event]) -> list[tuple[EventKind, str, bytes]]:
    return [(e.kind, e.key, e.value) for e in events]


async def test_watch_resumes_across_etcd_crash_exactly_once(
    etcd_factory: Callable[[], EtcdServer], etcd_prefix: str
) -> None:
    srv = etcd_factory()
    cfg = srv.client_config(RW_USER)
    writer = await KVClient.connect(cfg)
    watcher = await KVClient.connect(cfg)
    reasons: list[str] = []
    try:
        p = etcd_prefix
        lease = await writer.grant_lease(5)
        await writer.put(p + "leased", b"L", lease=lease)
        start = await writer.revision() + 1
        it = watcher.watch(p, start_revision=start, on_reconnect=reasons.append)

        expected = [(EventKind.PUT, f"{p}k{i}", b"v%d" % i) for i in range(5)]
        for _, k, v in expected:
            await writer.put(k, v)
        await writer.delete(p + "k0")
        expected.append((EventKind.DELETE, p + "k0", b""))

        got = await _events(it, 2)  # the rest is written but not consumed yet
        srv.kill()

        # A unary call waits for etcd to come back instead of failing at once.
        late_put = asyncio.create_task(writer.put(p + "k5", b"v5"))
        done, _ = await asyncio.wait({late_put}, timeout=0.5)
        assert not done, "a put while etcd is down should be retrying, not finished"
        renewals = lease.renewals
        await asyncio.to_thread(srv.start, keep_data=True)
        await asyncio.to_thread(srv.wait_ready, 30)
        await late_put
        expected.append((EventKind.PUT, p + "k5", b"v5"))

        # Two events in one revision, then a delete.
        await writer.txn([], [Put(p + "t1", b"1"), Put(p + "t2", b"2")])
        await writer.delete(p + "k1")
        expected += [
            (EventKind.PUT, p + "t1", b"1"),
            (EventKind.PUT, p + "t2", b"2"),
            (EventKind.DELETE, p + "k1", b""),
        ]

        got += await _events(it, len(expected) - 2)
        assert _summary(got) == expected
        revs = [e.mod_revision for e in got]
        assert revs == sorted(revs) and revs[0] >= start
        assert reasons, "the watch should have reconnected"

        # Nothing duplicated is still queued: the next event is the next write.
        await writer.put(p + "sentinel", b"s")
        (nxt,) = await _events(it, 1)
        assert (nxt.key, nxt.value) == (p + "sentinel", b"s")
        await it.aclose()

        # The lease outlived the crash: renewed again afterwards, key still there.
        await until(lambda: lease.renewals > renewals, "a lease renewal after restart", 10)
        assert not lease.lost.is_set()
        assert await writer.get(p + "leased") is not None
    finally:
        await writer.close()
        await watcher.close()


async def test_watch_from_compacted_revision_raises(kv: KVClient, etcd_prefix: str) -> None:
    k = etcd_prefix + "c"
    first = await kv.put(k, b"1")
    await kv.put(k, b"2")
    last = await kv.put(k, b"3")
    await kv.compact(last)
    await kv.compact(last)  # already compacted: a no-op
    with pytest.raises(Compacted) as exc:
        await anext(kv.watch(etcd_prefix, start_revision=first))
    assert exc.value.compact_revision == last
    # From the compaction point on, history is there.
    ev = await asyncio.wait_for(anext(kv.watch(etcd_prefix, start_revision=last)), 5)
    assert (ev.key, ev.value) == (k, b"3")


class TcpProxy:
    """A TCP relay to etcd that a test can cut (close every connection, refuse new ones)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.paused = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.paused:
            w.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.close()
            return
        self._writers |= {w, uw}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))
        self._writers -= {w, uw}

    def pause(self) -> None:
        self.paused = True
        for w in list(self._writers):
            w.close()

    def resume(self) -> None:
        self.paused = False

    async def close(self) -> None:
        self.pause()
        if self._server is not None:
            self._server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, str, bytes | None]] = []
        self.fail_on = fail_on

    async def on_upsert(self, key: str, kv: KeyValue) -> None:
        self.calls.append(("upsert", key, kv.value))
        if key == self.fail_on:
            raise RuntimeError("handler failure on purpose")

    def on_delete(self, key: str, old: KeyValue | None) -> None:
        self.calls.append(("delete", key, old.value if old else None))

    def on_synced(self) -> None:
        self.calls.append(("synced", "", None))


async def test_a_seeded_reflector_delivers_only_what_the_new_connection_changes(
    kv: KVClient, etcd_prefix: str
) -> None:
    # What the handler holds from a reflector over another connection (revisions
    # of that one, unrelated to these): the first list turns it into this etcd's.
    p = etcd_prefix
    await kv.put(p + "same", b"1")
    await kv.put(p + "changed", b"new")
    await kv.put(p + "added", b"a")
    seed = {
        p + "same": KeyValue(p + "same", b"1", 999, 999, 1, 0),
        p + "changed": KeyValue(p + "changed", b"old", 1, 1, 1, 0),
        p + "gone": KeyValue(p + "gone", b"g", 2, 2, 1, 0),
    }
    rec = Recorder()
    refl = Reflector(kv, p, rec, seed=seed)
    await refl.start(timeout=10)
    try:
        assert rec.calls == [
            ("delete", p + "gone", b"g"),
            ("upsert", p + "added", b"a"),
            ("upsert", p + "changed", b"new"),
            ("synced", "", None),
        ]
        listed, _ = await kv.list(p)
        assert refl.items == {x.key: x for x in listed}  # this etcd's revisions now
        rec.calls.clear()
        await kv.put(p + "same", b"2")
        await until(lambda: len(rec.calls) == 1, "the watch after a seeded list", 10)
        assert rec.calls == [("upsert", p + "same", b"2")]
    finally:
        await refl.stop()


async def test_reflector_resync_after_compaction_reports_only_the_difference(
    etcd: EtcdServer, kv: KVClient, etcd_prefix: str
) -> None:
    p = etcd_prefix
    for k in ("a", "b", "c"):
        await kv.put(p + k, k.encode())
    proxy = TcpProxy(etcd.client_port)
    await proxy.start()
    cfg = dataclasses.replace(
        etcd.client_config(RW_USER), endpoints=[f"https://127.0.0.1:{proxy.port}"]
    )
    via_proxy = await KVClient.connect(cfg)
    rec = Recorder()
    refl = Reflector(via_proxy, p, rec)
    try:
        await refl.start(timeout=10)
        assert rec.calls == [
            ("upsert", p + "a", b"a"),
            ("upsert", p + "b", b"b"),
            ("upsert", p + "c", b"c"),
            ("synced", "", None),
        ]
        rec.calls.clear()

        proxy.pause()  # the reflector is cut off from etcd
        await until(lambda: refl.reconnects >= 1, "the reflector to notice", 10)
        await kv.delete(p + "a")
        await kv.put(p + "b", b"b2")
        await kv.put(p + "d", b"d")
        await kv.put(p + "e", b"e")  # comes and goes while the reflector is away
        await kv.delete(p + "e")
        await kv.compact(await kv.revision())
        proxy.resume()

        await until(lambda: refl.resyncs == 1, "a resync after the compaction", 15)
        assert rec.calls == [
            ("delete", p + "a", b"a"),
            ("upsert", p + "b", b"b2"),
            ("upsert", p + "d", b"d"),
        ]
        assert sorted(refl.items) == [p + "b", p + "c", p + "d"]
        assert refl.errors == 0

        # And it keeps watching after the resync.
        await kv.put(p + "f", b"f")
        await until(lambda: p + "f" in refl.items, "the next event", 10)
        assert rec.calls[-1] == ("upsert", p + "f", b"f")
        assert rec.calls.count(("synced", "", None)) == 0
    finally:
        await refl.stop()
        await via_proxy.close()
        await proxy.close()


async def test_reflector_survives_handler_errors(kv: KVClient, etcd_prefix: str) -> None:
    p = etcd_prefix
    await kv.put(p + "bad", b"1")
    rec = Recorder(fail_on=p + "bad")
    refl = Reflector(kv, p, rec)
    await refl.start(timeout=10)
    try:
        assert refl.errors == 1 and refl.synced.is_set()
        await kv.put(p + "bad", b"2")
        await kv.put(p + "good", b"g")
        await until(lambda: p + "good" in refl.items, "events after a handler error", 10)
        assert refl.errors == 2
        assert refl.items[p + "bad"].value == b"2"
    finally:
        await refl.stop()


async def test_read_only_user_is_refused_writes(
    etcd: EtcdServer, kv: KVClient, etcd_prefix: str
) -> None:
    await kv.put(etcd_prefix + "x", b"1")
    await kv.put("glia/.heartbeat", b"now")
    ro_cfg = etcd.client_config(RO_USER)
    ro = await KVClient.connect(ro_cfg, check_read=["glia/state/", "glia/.heartbeat"])
    try:
        assert ro.user == RO_USER
        got = await ro.get(etcd_prefix + "x")
        assert got is not None and got.value == b"1"
        assert (await ro.get("glia/.heartbeat")) is not None
        with pytest.raises(PermissionDenied, match="etcdserver: permission denied"):
            await ro.put(etcd_prefix + "x", b"2")
        with pytest.raises(PermissionDenied):
            await ro.delete(etcd_prefix + "x")
        # A watch RBAC refuses is an error, not a silent hang.
        with pytest.raises(PermissionDenied, match="glia/config/"):
            await asyncio.wait_for(anext(ro.watch("glia/config/", start_revision=1)), 5)
    finally:
        await ro.close()
    assert (await kv.get(etcd_prefix + "x")) is not None

    with pytest.raises(PermissionDenied, match=r"'glia-remote' may not write 'glia/state/'"):
        await KVClient.connect(ro_cfg, check_write=["glia/state/"])
    with pytest.raises(PermissionDenied, match=r"may not read 'glia/config/'"):
        await KVClient.connect(ro_cfg, check_read=["glia/state/", "glia/config/"])
    # A single key is checked as a key: the role allows the heartbeat, not its prefix.
    with pytest.raises(PermissionDenied):
        await KVClient.connect(ro_cfg, check_read=["glia/.heartbeat/"])


async def test_tls_without_or_with_a_foreign_client_cert_is_refused(etcd: EtcdServer) -> None:
    cfg = etcd.client_config(RW_USER)
    no_cert = EtcdConfig(endpoints=cfg.endpoints, ca_file=cfg.ca_file, dial_timeout=1.0)
    with pytest.raises(KVStoreUnavailable) as exc:
        await KVClient.connect(no_cert)
    assert etcd.client_url in str(exc.value)
    assert "no client certificate" in str(exc.value)

    tmp = Path(tempfile.mkdtemp(prefix="glia-test-pki-"))
    try:
        rogue_ca = make_ca(tmp, "glia-rogue-ca")
        rogue = issue(rogue_ca, tmp, "rogue", cn=RW_USER)
        foreign = dataclasses.replace(
            cfg, cert_file=str(rogue.cert), key_file=str(rogue.key), dial_timeout=1.0
        )
        with pytest.raises(KVStoreUnavailable, match="unreachable"):
            await KVClient.connect(foreign)
    finally:
        shutil.rmtree(tmp)


async def test_unreachable_endpoint_and_failover(etcd: EtcdServer) -> None:
    from glia.lab.etcd import free_tcp_port

    cfg = etcd.client_config(RW_USER)
    dead = f"https://127.0.0.1:{free_tcp_port()}"
    with pytest.raises(KVStoreUnavailable, match=dead.replace(".", r"\.")):
        await KVClient.connect(dataclasses.replace(cfg, endpoints=[dead], dial_timeout=1.0))
    # The dead endpoint first: the client moves on to the live one.
    c = await KVClient.connect(dataclasses.replace(cfg, endpoints=[dead, *cfg.endpoints]))
    try:
        assert c.endpoint == etcd.client_url
        assert await c.revision() > 0
    finally:
        await c.close()


async def test_three_members_survive_losing_the_one_in_use(
    etcd_cluster_factory: Callable[[int], list[EtcdServer]], etcd_prefix: str
) -> None:
    members = etcd_cluster_factory(3)
    cfg = members[0].client_config(RW_USER)
    assert len(cfg.endpoints) == 3
    c = await KVClient.connect(cfg)
    try:
        await c.put(etcd_prefix + "a", b"1")
        start = await c.revision()
        it = c.watch(etcd_prefix, start_revision=start)
        first = await asyncio.wait_for(anext(it), 10)
        assert (first.key, first.value) == (etcd_prefix + "a", b"1")

        in_use = next(m for m in members if m.client_url == c.endpoint)
        in_use.kill()
        await c.put(etcd_prefix + "b", b"2")  # fails over to another member
        assert c.endpoint != in_use.client_url
        got = await c.get(etcd_prefix + "b")
        assert got is not None and got.value == b"2"
        nxt = await asyncio.wait_for(anext(it), 15)
        assert (nxt.key, nxt.value) == (etcd_prefix + "b", b"2")
        await it.aclose()
    finally:
        await c.close()


async def test_reflector_can_retry_its_first_list_in_the_background(
    etcd_factory: Callable[[], EtcdServer], etcd_prefix: str
) -> None:
    """A remote cluster's etcd down when the agent starts: the reflector waits for it."""
    srv = etcd_factory()
    cfg = srv.client_config(RW_USER)
    p = etcd_prefix
    async with await KVClient.connect(cfg) as writer:
        await writer.put(p + "a", b"1")
    reader = await KVClient.connect(cfg, retry_timeout=0.5)
    srv.kill()
    rec = Recorder()
    refl = Reflector(reader, p, rec, name="remote", first_list_fatal=False)
    try:
        # The default stays: a first list that fails is the caller's error.
        with pytest.raises(KVStoreError):
            await Reflector(reader, p, Recorder()).start(timeout=20)
        await asyncio.wait_for(refl.start(), 1)  # returns at once, does not raise
        await until(lambda: refl.errors >= 1, "a failed first list", 10)
        assert not refl.synced.is_set() and rec.calls == []
        assert "list failed" in (refl.last_error or "")
        await asyncio.to_thread(srv.start, keep_data=True)
        await asyncio.to_thread(srv.wait_ready, 30)
        await until(refl.synced.is_set, "the first list once etcd is back", 30)
        assert rec.calls == [("upsert", p + "a", b"1"), ("synced", "", None)]
    finally:
        await refl.stop()
        await reader.close()
