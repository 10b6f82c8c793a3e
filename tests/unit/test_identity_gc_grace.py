"""Identity GC: references gone for a moment (an etcd pause's revocation) collect nothing."""

from __future__ import annotations

from typing import Any

from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.identity import Identity, labels_key
from glia.operator.identity_gc import IdentityGC

CLUSTER = "c1"
ID = 65792


class FakeKV:
    """The three reads and the transaction the collector makes; refs switchable."""

    def __init__(self) -> None:
        self.referenced = True
        self.collected: list[str] = []
        self.ident = Identity(ID, {"app": "web"})

    async def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        if prefix == keys.identity_ids(CLUSTER):
            key = keys.identity_id(CLUSTER, ID)
            return [KeyValue(key, codec.encode(self.ident), 5, 5, 1, 0)], 9
        assert prefix == keys.identity_refs(CLUSTER)
        if not self.referenced:
            return [], 9
        return [KeyValue(keys.identity_ref(CLUSTER, ID, "n1"), b"", 7, 7, 1, 0x77)], 9

    async def get(self, key: str) -> KeyValue | None:
        assert key == keys.identity_labels(CLUSTER, labels_key(self.ident.labels))
        return KeyValue(key, str(ID).encode(), 5, 5, 1, 0)

    async def txn(self, compares: list[Any], ops: list[Any]) -> bool:
        self.collected += [op.key for op in ops]
        return True


async def test_references_that_vanish_and_return_keep_the_identity() -> None:
    kv = FakeKV()
    gc = IdentityGC(kv, CLUSTER, grace=60.0)  # type: ignore[arg-type]
    # Passes every 30 s; etcd revokes the agents' leases just before some of
    # them and the references are back by the next.
    for t, referenced in [(0, True), (30, False), (60, True), (90, False), (120, True)]:
        kv.referenced = referenced
        assert await gc.run_once(now=float(t)) == []
    assert kv.collected == []


async def test_an_identity_unreferenced_for_the_whole_grace_is_collected() -> None:
    kv = FakeKV()
    kv.referenced = False
    gc = IdentityGC(kv, CLUSTER, grace=60.0)  # type: ignore[arg-type]
    assert await gc.run_once(now=0.0) == []
    assert await gc.run_once(now=30.0) == []
    assert await gc.run_once(now=60.0) == [ID]
    assert keys.identity_id(CLUSTER, ID) in kv.collected
