"""The agent's policy subsystem: keeps the node's policy maps equal to what its
cluster's policies say for its local endpoints.

Created by :class:`glia.agent.daemon.Agent` (``agent.policy``). Inputs:

- policies: a reflector on ``glia/config/v1/policies/`` of this cluster's
  etcd (:meth:`PolicySync.policy_handler`); every record is untrusted
  (:func:`glia.policy.manifest.check_stored`, its key, its cluster); a bad one
  is counted and shown (status degraded) and never stops the others;
- identities of every cluster: :meth:`PolicySync.identity_changed` listens to
  :class:`glia.agent.identities.IdentityCache` (a remote cluster that goes
  reports each of its identities gone);
- local endpoints (:class:`glia.endpoint.manager.EndpointManager` hooks):
  the subjects are the identities of local endpoints (endpoints with one
  identity share its entries); an endpoint's new identity is programmed
  before the endpoint map carries it (:meth:`PolicySync.identity_ready`);
- CIDR identities: the prefixes the policies name get node-local identities
  (:class:`glia.policy.cidr.CidrIdentities`), written into the ipcache by its
  one writer (:meth:`glia.agent.ipcache.IPCacheSync.set_cidr_identities`).

Changes feed the pure :class:`~glia.policy.engine.PolicyEngine`, which
reports the subjects to recompute; they collect in a dirty set and a flush,
:data:`DEBOUNCE` after the first change (a burst programs once), computes
them and applies each diff on the datapath thread
(:meth:`glia.datapath.policymap.PolicyMap.apply`). The first flush, once
policies, identities and endpoints are listed, is a
:meth:`~glia.datapath.policymap.PolicyMap.sync_all` against what the pinned
maps hold (an agent restart never empties them). A failed write is counted
and repaired by a ``sync_all`` after :data:`RETRY`.

Rule cookies: each distinct tuple of rule ids gets a small number for the
agent's life (:class:`glia.agent.policy_types.CookieTable`), written with the entries and carried by
drop and verdict events; :meth:`PolicySync.rules_for_cookie` names them
(``glia monitor``, ``glia bpf policy list``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from glia.agent.policy_types import CidrSink, CookieTable, FlushStats, Labels, PolicyWriter, RunDp
from glia.agent.subsystems import refused
from glia.aiotasks import cancel_and_wait
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.identity import CLUSTER_LABEL, MIN_LOCAL, Identity, ReservedIdentity
from glia.policy import store as policy_store
from glia.policy.cidr import CidrIdentities, is_cidr_identity, policy_prefixes
from glia.policy.engine import PolicyEngine, SubjectKey, subject_key
from glia.policy.entries import EndpointPolicy
from glia.policy.manifest import check_stored
from glia.policy.model import Policy
from glia.validate.rejects import RejectLog

log = logging.getLogger(__name__)

DEBOUNCE = 0.005  # s from the first change to the flush: a burst of events programs once
RETRY = 1.0  # s before a failed map write is repaired by a full sync
BATCH_FROM = 16  # subjects in one flush from which their writes go in one batch per phase


class PolicySync:
    """Policies x identities x local endpoints -> the node's policy maps."""

    def __init__(
        self,
        cluster: str,
        writer: PolicyWriter,
        run_dp: RunDp,
        *,
        cidr_sink: CidrSink | None = None,
        debounce: float = DEBOUNCE,
        retry: float = RETRY,
    ) -> None:
        self.cluster = cluster
        self.engine = PolicyEngine(cluster)
        self.cookies = CookieTable()
        self.cidr = CidrIdentities()
        self.rejects = RejectLog("policy")
        self._writer = writer
        self._run_dp = run_dp
        self._cidr_sink = cidr_sink
        self._debounce = debounce
        self._retry = retry
        self._policies: dict[str, Policy] = {}  # kvstore key -> valid policy
        self._endpoints: Callable[[], Iterable[tuple[int, Labels]]] = lambda: ()
        # subjects: local endpoint identities, their labels, the engine's key for them
        self._local: dict[int, dict[str, str]] = {}
        self._prepared: dict[int, dict[str, str]] = {}  # identity_ready, not yet in the endpoints
        self._key_of: dict[int, tuple[SubjectKey, dict[str, str]]] = {}  # as last computed
        self._ids_of_key: dict[SubjectKey, set[int]] = {}
        self.programmed: dict[int, EndpointPolicy] = {}  # what the maps hold per subject
        # pending work
        self._dirty_keys: set[SubjectKey] = set()
        self._dirty_ids: set[int] = set()
        self._cidr_dirty = False
        self._cidr_changed = False  # this flush changed the CIDR identities: write the ipcache
        self._repair = False
        self._dirty_since: float | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # state
        self.policies_synced = False
        self.started = False  # the first sync_all is done: changes are programmed as they come
        self.failure: str | None = None  # why it cannot work (shown as failed)
        self.map_errors = 0
        self.last_map_error: str | None = None
        self.last = FlushStats()
        self.initial = FlushStats()

    # -- inputs -----------------------------------------------------------------------

    def set_endpoint_source(self, source: Callable[[], Iterable[tuple[int, Labels]]]) -> None:
        """(identity, labels) of every local endpoint (the endpoint manager's)."""
        self._endpoints = source

    def identity_changed(self, cluster: str, number: int, ident: Identity | None) -> None:
        """IdentityCache listener: an identity of ``cluster`` appeared, changed or went."""
        if ident is None:
            self._mark(self.engine.delete_identity(number))
        else:
            self._mark(self.engine.upsert_identity(number, ident.labels, cluster))

    async def identity_ready(self, identity: int, labels: Labels) -> None:
        """An endpoint is about to carry ``identity``: program its policy now."""
        if identity < MIN_LOCAL:
            return
        self._prepared[identity] = dict(labels)
        if identity not in self._local:
            self._local[identity] = dict(labels)
            self._dirty_ids.add(identity)
            self._note_dirty()
        # Whatever is pending may concern this identity: program it all now.
        if self.started and self.pending:
            async with self._lock:
                await self._guarded_flush()
            if self._repair:
                self._schedule(self._retry)

    def endpoints_changed(self) -> None:
        """The set of local endpoints or their identities changed."""
        self._prepared.clear()
        self._refresh_local()
        self._schedule()

    def _refresh_local(self) -> None:
        # The endpoint's own labels: the allocator minted the identity for exactly
        # these, and the identity cache may hear of a new identity only later.
        wanted: dict[int, dict[str, str]] = {}
        for identity, labels in self._endpoints():
            if identity >= MIN_LOCAL:
                wanted.setdefault(identity, dict(labels))
        for identity, labels in self._prepared.items():
            wanted.setdefault(identity, labels)
        for identity in self._local.keys() | wanted.keys():
            if self._local.get(identity) != wanted.get(identity):
                self._dirty_ids.add(identity)
                self._note_dirty()
        self._local = wanted

    def policy_handler(self) -> Any:
        """Reflector handler for this cluster's policies prefix."""
        sync = self

        class _H:
            def on_upsert(self, key: str, kv: KeyValue) -> None:
                sync.policy_upsert(key, kv.value)

            def on_delete(self, key: str, old: KeyValue | None) -> None:
                sync.policy_delete(key)

            def on_synced(self) -> None:
                sync.policies_synced = True

        return _H()

    def policy_upsert(self, key: str, value: bytes) -> None:
        try:
            policy = self._check(key, value)
            changed = self.engine.upsert_policy(policy)
        except Exception as e:  # every record is untrusted: one bad one stops nothing
            self.rejects.reject(key, str(e))
            self.policy_delete(key, forget_reject=False)
            return
        self.rejects.accept(key)
        self._policies[key] = policy
        self._cidr_dirty = True
        self._mark(changed)

    def policy_delete(self, key: str, *, forget_reject: bool = True) -> None:
        if forget_reject:
            self.rejects.forget(key)
        policy = self._policies.pop(key, None)
        if policy is not None:
            self._cidr_dirty = True
            self._mark(self.engine.delete_policy(policy.namespace, policy.name))

    def _check(self, key: str, value: bytes) -> Policy:
        policy = check_stored(codec.decode(Policy, value))
        if policy.cluster != self.cluster:
            raise ValueError(
                f"policy of cluster {policy.cluster!r} stored in cluster {self.cluster!r}'s kvstore"
            )
        want = policy_store.config_key(policy.namespace, policy.name)
        if key != want:
            raise ValueError(f"policy {policy.namespace}/{policy.name} belongs at {want}")
        return policy

    # -- lifecycle --------------------------------------------------------------------

    async def adopt_cidr(self) -> None:
        """Keep the CIDR identities an earlier run wrote into the ipcache."""
        if self._cidr_sink is None:
            return
        for prefix, identity in (await self._cidr_sink.held_cidr_identities()).items():
            try:
                self.cidr.adopt({prefix: identity})
            except ValueError as e:  # a duplicate number: that prefix gets a new one
                log.warning("policy: not adopting CIDR identity of %s: %s", prefix, e)

    async def initial_sync(self) -> None:
        """Policies, identities and endpoints are listed: make the maps hold exactly
        what they say (reading what they hold; never emptied)."""
        async with self._lock:
            t0 = time.monotonic()
            self._sync_cidr(first=True)
            self._prepared.clear()
            self._refresh_local()
            self._dirty_ids.clear()
            self._dirty_keys.clear()
            desired = {i: self._compute(i, labels) for i, labels in self._local.items()}
            t1 = time.monotonic()
            written = await self._run_dp(lambda: self._writer.sync_all(desired, self.cookies))
            self.programmed = desired
            if self._cidr_sink is not None:
                # Also ends the ipcache's wait for policy: pinned CIDR entries
                # no policy names any more go now.
                await self._cidr_sink.set_cidr_identities(dict(self.cidr.by_prefix))
            t2 = time.monotonic()
            self.initial = FlushStats(len(desired), t1 - t0, t2 - t1, written, t2 - t0, time.time())
            self.last = self.initial
            self.started = True
            self._dirty_since = None
            log.info(
                "policy: %d subjects programmed from %d policies (%d entries written) in %.0f ms",
                len(desired), len(self._policies), written, (t2 - t0) * 1000,
            )  # fmt: skip
        self._schedule()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def settle(self) -> None:
        """Wait until nothing is pending (tests, bench)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    # -- work -------------------------------------------------------------------------

    def _mark(self, keys: set[SubjectKey]) -> None:
        if keys:
            self._dirty_keys |= keys
            self._note_dirty()
        if self._cidr_dirty:
            self._note_dirty()
        self._schedule()

    def _note_dirty(self) -> None:
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()

    @property
    def pending(self) -> bool:
        return bool(self._dirty_keys or self._dirty_ids or self._cidr_dirty or self._repair)

    def _schedule(self, delay: float | None = None) -> None:
        if not self.started or not self.pending:
            return
        if self._task is not None and not self._task.done():
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(self._debounce if delay is None else delay), name="policy flush"
        )

    async def _run(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            while self.pending:
                if self._repair:
                    await self._repair_all()
                    if self._repair:
                        break
                else:
                    await self._guarded_flush()
        if self._repair:
            self._task = None
            self._schedule(self._retry)

    def _compute(self, identity: int, labels: dict[str, str]) -> EndpointPolicy:
        skey = subject_key({**labels, CLUSTER_LABEL: self.cluster})
        prev = self._key_of.get(identity)
        if prev is not None and prev[0] != skey:
            self._unkey(identity)
        self._key_of[identity] = (skey, labels)
        self._ids_of_key.setdefault(skey, set()).add(identity)
        return self.engine.compute(labels)

    def _unkey(self, identity: int) -> None:
        prev = self._key_of.pop(identity, None)
        if prev is None:
            return
        skey, labels = prev
        ids = self._ids_of_key.get(skey)
        if ids is not None:
            ids.discard(identity)
            if not ids:
                del self._ids_of_key[skey]
                self.engine.forget(labels)

    def _sync_cidr(self, *, first: bool = False) -> None:
        """The CIDR identities for the prefixes of the policies now; the engine learns them."""
        if not (self._cidr_dirty or first):
            return
        self._cidr_dirty = False
        try:
            changes = self.cidr.sync(policy_prefixes(self._policies.values()))
        except RuntimeError as e:
            self.failure = str(e)
            return
        added = dict(self.cidr.by_prefix) if first else changes.added
        for identity in changes.removed.values():
            self._dirty_keys |= self.engine.delete_identity(identity)
        for prefix, identity in added.items():
            self._dirty_keys |= self.engine.upsert_cidr_identity(identity, prefix)
        self._cidr_changed = bool(first or changes.added or changes.removed)

    async def _guarded_flush(self) -> None:
        """A flush whose unexpected failure is logged and repaired later, never lost."""
        try:
            await self._flush()
        except Exception as e:
            log.exception("policy: flush failed")
            self._map_error(f"flush: {e!r}")
            self._repair = True

    async def _flush(self) -> None:
        """Compute the dirty subjects and program their diffs (the lock is held)."""
        t0 = time.monotonic()
        since = self._dirty_since or t0
        self._dirty_since = None
        self._cidr_changed = False
        self._sync_cidr()
        ids = set(self._dirty_ids)
        for k in self._dirty_keys:
            ids |= self._ids_of_key.get(k, set())
        self._dirty_ids.clear()
        self._dirty_keys.clear()
        changes: list[tuple[int, EndpointPolicy | None, EndpointPolicy | None]] = []
        for identity in sorted(ids):
            labels = self._local.get(identity)
            new = None if labels is None else self._compute(identity, labels)
            if labels is None:
                self._unkey(identity)
            old = self.programmed.get(identity)
            if new is not old:
                changes.append((identity, old, new))
        t1 = time.monotonic()
        written = 0
        if changes:
            written, failed = await self._run_dp(lambda: self._apply(changes))
            for identity, _old, new in changes:
                if identity in failed:
                    continue
                if new is None:
                    self.programmed.pop(identity, None)
                else:
                    self.programmed[identity] = new
            if failed:
                self._repair = True
        if self._cidr_changed and self._cidr_sink is not None:
            # After the entries naming the new identities exist; a removed prefix's
            # addresses turn back into world with it.
            await self._cidr_sink.set_cidr_identities(dict(self.cidr.by_prefix))
        t2 = time.monotonic()
        if changes or self._cidr_changed:
            self.last = FlushStats(len(ids), t1 - t0, t2 - t1, written, t2 - since, time.time())

    def _apply(
        self, changes: list[tuple[int, EndpointPolicy | None, EndpointPolicy | None]]
    ) -> tuple[int, set[int]]:
        """On the datapath thread: each subject's diff; one refused write stops nothing.

        Many subjects at once (a policy selecting many identities) go in one batch
        per phase; if the kernel refuses part of it, subject by subject again
        (idempotent: a diff re-applied writes what is missing)."""
        if len(changes) >= BATCH_FROM:
            try:
                return self._writer.apply_many(changes, self.cookies), set()
            except Exception as e:
                log.warning("policy: batch of %d subjects failed (%s): one by one", len(changes), e)
        written = 0
        failed: set[int] = set()
        for identity, old, new in changes:
            try:
                written += self._writer.apply(identity, old, new, self.cookies)
            except Exception as e:
                failed.add(identity)
                self._map_error(f"subject {identity}: {e}")
        return written, failed

    async def _repair_all(self) -> None:
        """After a refused write: make the maps hold what we want, read back."""
        self._sync_cidr()
        self._dirty_ids.clear()
        self._dirty_keys.clear()
        for identity in [i for i in self._key_of if i not in self._local]:
            self._unkey(identity)
        desired = {i: self._compute(i, labels) for i, labels in self._local.items()}
        try:
            written = await self._run_dp(lambda: self._writer.sync_all(desired, self.cookies))
            if self._cidr_sink is not None:
                await self._cidr_sink.set_cidr_identities(dict(self.cidr.by_prefix))
        except Exception as e:
            self._map_error(f"full sync: {e}")
            return
        self.programmed = desired
        self._repair = False
        log.info("policy: maps repaired (%d entries written)", written)

    def _map_error(self, msg: str) -> None:
        self.map_errors += 1
        self.last_map_error = msg
        log.warning("policy map write failed: %s", msg)

    # -- reading ----------------------------------------------------------------------

    def rules_for_cookie(self, cookie: int) -> list[str]:
        """The rule ids an entry's cookie stands for (``glia monitor``)."""
        return self.cookies.rules(cookie)

    def peer_labels(self, identity: int, identities: Any = None) -> list[str]:
        """How a peer identity reads in listings: its labels, ``reserved:NAME``, ``cidr:P``."""
        if identity == 0:
            return []
        if identity < MIN_LOCAL:
            try:
                return [f"reserved:{ReservedIdentity(identity).name.lower().replace('_', '-')}"]
            except ValueError:
                return [f"reserved:{identity}"]
        if is_cidr_identity(identity):
            prefixes = [p for p, i in self.cidr.by_prefix.items() if i == identity]
            return [f"cidr:{p}" for p in prefixes]
        labels = getattr(self.engine.identities().get(identity), "labels", None) or {}
        return [f"{k}={v}" for k, v in sorted(labels.items())]

    def status(self) -> dict[str, Any]:
        entries = sum(len(p.entries) for p in self.programmed.values())
        return {
            "started": self.started,
            "policies_synced": self.policies_synced,
            "policies": len(self._policies),
            "subjects": len(self.programmed),
            "entries": entries,
            "cidr_identities": len(self.cidr.by_prefix),
            "identities": len(self.engine.identities()),
            "cookies": len(self.cookies),
            "pending": self.pending,
            "map_errors": self.map_errors,
            "last_map_error": self.last_map_error,
            "failure": self.failure,
            "last_flush": self.last.to_dict(),
            "initial_sync": self.initial.to_dict(),
            **self.rejects.status(),
        }

    def summary(self) -> tuple[bool, str, bool]:
        """(ok, message, degraded) for the agent's ``policy`` subsystem."""
        if self.failure is not None:
            return False, self.failure, False
        if not self.started:
            return False, "waiting for the first list of policies", False
        st = self.status()
        msg = (
            f"{st['policies']} policies, {st['subjects']} local identities, "
            f"{st['entries']} entries; last change programmed in "
            f"{st['last_flush']['latency_ms']} ms"
        )
        problems = refused(st)
        degraded = bool(self.rejects.count) or self._repair
        return True, f"{msg}; {problems}" if problems else msg, degraded
