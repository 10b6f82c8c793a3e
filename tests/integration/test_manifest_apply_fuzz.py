"""``POST /v1/config/apply`` with generated documents against a real etcd: all or nothing.

Hypothesis builds files of valid Services, Services with one bad field, and
hostile documents (deep nesting, huge scalars, junk); the agent's route must
answer 200 and store every Service, or 400 with code 7 and leave etcd exactly
as it was. Runs against an etcd of its own (test_services_store.own_etcd).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_services_store import CIDR, FakeAgent, own_etcd, stored

from glia.agent.api_config import add_routes
from glia.agent.config import AgentConfig
from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.lab.etcd import RW_USER, EtcdServer
from glia.service import store
from glia.service.manifest import parse_service


@pytest.fixture(scope="module")
def fuzz_etcd() -> Iterator[EtcdServer]:
    with own_etcd() as srv:
        yield srv


def service(name: str, port: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": port}], **spec},
    }


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
_valid = st.builds(
    service,
    st.sampled_from(["web", "db", "cache", "seed"]),
    st.integers(1, 65535),
)


@st.composite
def _one_bad_field(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(_valid))
    path = draw(
        st.sampled_from(
            [("kind",), ("metadata", "name"), ("spec", "ports"), ("spec", "selector"), ("spec",)]
        )
    )
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = draw(_junk)
    return doc


_hostile = st.one_of(
    st.builds(lambda d, s: {**s, "status": nested(d)}, st.integers(1, 200), _valid),
    st.builds(lambda n, s: {**s, "status": {"x": "y" * n}}, st.integers(0, 200_000), _valid),
    st.builds(
        lambda n, s: {**s, "metadata": {**s["metadata"], "labels": {"k": "v" * n}}},
        st.integers(0, 100_000),
        _valid,
    ),
    _junk,
)
_files = st.lists(st.one_of(_valid, _valid, _one_bad_field(), _hostile), min_size=1, max_size=4)


async def _apply(srv: EtcdServer, docs: list[Any]) -> None:
    kv = await KVClient.connect(srv.client_config(RW_USER))
    try:
        await kv.delete_prefix(keys.ROOT)
        await store.apply(kv, [parse_service(service("seed", 80))], CIDR)
        before = await stored(kv)
        app = web.Application()
        cfg = AgentConfig("c1", 1, "n1", "198.18.1.1", service_cidr=CIDR, config_etcd=kv.cfg)
        add_routes(app, FakeAgent(kv, cfg, config_kv=kv))
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/v1/config/apply", json={"documents": docs, "source": "f"})
            answer = await resp.json()
        after = await stored(kv)
    finally:
        await kv.close()
    event(f"HTTP {resp.status}")
    if resp.status == 200:
        names = {r["name"] for r in answer["results"]}
        assert {f"services/default/{n}" for n in names} <= set(after)
        for doc in docs:  # every document was a Service, and is stored
            assert f"services/default/{doc['metadata']['name']}" in after
    else:
        assert resp.status == 400, answer
        assert answer["error"]["code"] == 7
        assert answer["error"]["msg"].startswith("f: ") or answer["error"]["msg"].startswith(
            "Service "
        )
        assert after == before  # read back from etcd: nothing of the file


@given(_files)
@settings(max_examples=40, deadline=None)
def test_apply_stores_every_document_or_none(fuzz_etcd: EtcdServer, docs: list[Any]) -> None:
    asyncio.run(_apply(fuzz_etcd, docs))
