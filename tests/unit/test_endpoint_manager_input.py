"""EndpointManager.add/check on rejected input: a CNI error, and no state changed.

The manager gets its real on-disk state (an EndpointStore and a LocalIPAM in a
temp dir, each holding a record already) and tripwires for everything else
(datapath, kvstore, identities, labels): a rejected request must be refused
before any of them is reached, with a spec error code, and leave both files
byte for byte as they were. Every CNI_NETNS offered is a real file that is not
a pod's namespace (this process's own, another namespace type, a plain file,
a directory, a FIFO, a missing path), so every request is one to refuse.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glia.cni.spec import CniError
from glia.endpoint.manager import EndpointManager
from glia.endpoint.store import EndpointStore
from glia.ipam.local import LocalIPAM
from glia.model.endpoint import Endpoint

CIDR = "10.1.0.0/24"


class Tripwire:
    """Stands for a dependency a rejected request must never reach."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        raise AssertionError(f"a rejected request reached {self._name}.{attr}")


async def run_dp_tripwire(fn: Any) -> Any:
    raise AssertionError("a rejected request reached the datapath")


def snapshot(state: Path) -> dict[str, bytes]:
    return {str(p.relative_to(state)): p.read_bytes() for p in state.rglob("*") if p.is_file()}


# Stand-ins in the strategies, real paths in the test (made by the not_pods fixture).
NOT_PODS = ["/proc/self/ns/net", "/proc/self/ns/uts", "@file", "@dir", "@fifo", "@missing"]


@pytest.fixture(scope="module")
def not_pods() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="glia-test-epinput-") as tmp:
        base = Path(tmp)
        (base / "file").write_text("")
        (base / "dir").mkdir()
        os.mkfifo(base / "fifo")
        yield base


_junk = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.just([]))
_bodies = st.fixed_dictionaries(
    {
        "container_id": st.one_of(
            st.sampled_from(["f00dcafe", "seed", "a" * 128, "a" * 250, "a/b", ""]), _junk
        ),
        "netns": st.one_of(st.sampled_from(NOT_PODS), _junk),
    },
    optional={
        "ifname": st.one_of(st.sampled_from(["eth0", "eth1", "x" * 16]), _junk),
        "args": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "K8S_POD_NAME": st.one_of(st.sampled_from(["web", "a/b", "x" * 300]), _junk),
                    "K8S_POD_NAMESPACE": st.sampled_from(["default", "../x", ""]),
                },
            ),
            _junk,
        ),
        "config": st.one_of(
            st.just({"cniVersion": "1.0.0", "name": "glia", "type": "glia-cni"}),
            st.dictionaries(st.just("cniVersion"), st.sampled_from(["0.4.0", "0.2.0", 1])),
            _junk,
        ),
        "prev_result": st.one_of(
            st.just({"ips": [{"address": "10.1.0.7/32"}]}), st.just({"ips": "x"}), _junk
        ),
    },
)


@given(_bodies, st.sampled_from(["add", "check"]))
@settings(max_examples=300, deadline=None)
def test_a_rejected_request_changes_nothing(
    not_pods: Path, body: dict[str, Any], verb: str
) -> None:
    if isinstance(body["netns"], str) and body["netns"].startswith("@"):
        body = {**body, "netns": str(not_pods / body["netns"][1:])}
    with tempfile.TemporaryDirectory(prefix="glia-test-epstate-") as tmp:
        state = Path(tmp)
        store = EndpointStore(state)
        seed = Endpoint("seed", "default", "seed", "c1", "n1", "10.1.0.2", 5, netns="/run/netns/x")
        store.save(seed)
        ipam = LocalIPAM(state / "ipam.json", CIDR)
        ipam.allocate("seed/eth0")
        before = snapshot(state)
        mgr = EndpointManager(
            cluster="c1",
            cluster_id=1,
            node="n1",
            node_ip="198.18.1.1",
            mtu=1450,
            store=store,
            ipam=ipam,
            identities=Tripwire("identities"),  # type: ignore[arg-type]
            publisher=Tripwire("publisher"),  # type: ignore[arg-type]
            kv=Tripwire("kv"),  # type: ignore[arg-type]
            datapath=Tripwire("datapath"),  # type: ignore[arg-type]
            run_dp=run_dp_tripwire,
            labels=Tripwire("labels"),  # type: ignore[arg-type]
        )
        try:
            asyncio.run(getattr(mgr, verb)(body))
        except CniError as e:
            assert e.code in (1, 3, 4, 6, 7), (e.code, e.msg)
        else:
            raise AssertionError(f"{verb} accepted {body}")
        assert snapshot(state) == before
        assert mgr.all() == []
