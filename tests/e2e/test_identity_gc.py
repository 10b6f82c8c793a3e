"""Identity garbage collection by the operator, with real containers on two nodes.

Uses the session lab, with c1's operator restarted for this module to collect
unreferenced identities after 1 s (passes every 0.5 s) instead of a minute;
its settings are put back afterwards. Shown here:

- a container with labels of its own gets an identity; once it is removed the
  operator deletes that identity (``glia identity list`` no longer shows it,
  etcd holds none of its keys);
- an identity still used by a container on another node is never collected,
  though the node that used it too dropped its reference;
- labels whose identity was collected get one again;
- an identity deleted while in use (the GC's race with a node that just
  started using it) is re-created by the node using it, with the same number.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from labhelpers import endpoint_named, etcd_delete, etcd_keys, wait_for

from glia.kvstore import keys
from glia.lab.lab import Lab, bin_dir
from glia.lab.podman import Container
from glia.model.identity import labels_key
from glia.operator.config import load as load_operator_config

pytestmark = [pytest.mark.e2e, pytest.mark.root]

CLUSTER = "c1"
GC_INTERVAL = 0.5
GC_GRACE = 1.0


@pytest.fixture(scope="module")
def fast_gc(lab: Lab) -> Iterator[None]:
    original = load_operator_config(lab.topo.cluster(CLUSTER).operator_config)
    lab.reconfigure_operator(CLUSTER, identity_gc_interval=GC_INTERVAL, identity_gc_grace=GC_GRACE)
    try:
        yield
    finally:
        lab.reconfigure_operator(
            CLUSTER,
            identity_gc_interval=original.identity_gc_interval,
            identity_gc_grace=original.identity_gc_grace,
        )


@pytest.fixture
def containers(lab: Lab) -> Iterator[list[Container]]:
    """Containers a test starts; removed afterwards unless the test removed them."""
    started: list[Container] = []
    yield started
    for ctr in started:
        lab.podman(ctr.node).run(["rm", "-f", "-t", "0", "--ignore", ctr.name], check=False)


def _run(lab: Lab, started: list[Container], node: str, labels: dict[str, str]) -> Container:
    ctr = lab.run_container(node, f"glia-gc-{uuid.uuid4().hex[:8]}", labels=labels)
    started.append(ctr)
    return ctr


def _identity(lab: Lab, ctr: Container) -> int:
    ep = wait_for(f"the identity of {ctr.name}", lambda: endpoint_named(lab, ctr))
    return int(ep["identity"])


def _listed(lab: Lab, node: str) -> dict[int, dict[str, str]]:
    """What ``glia identity list -o json --node NODE`` shows: id -> labels."""
    r = subprocess.run(
        [str(bin_dir() / "glia"), "identity", "list", "-o", "json", "--node", node],
        env=lab.cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return {int(i["id"]): i["labels"] for i in json.loads(r.stdout)}


def _stored(lab: Lab) -> dict[str, bytes]:
    return {k: v.value for k, v in etcd_keys(lab, CLUSTER, keys.identities(CLUSTER)).items()}


def _refs(stored: dict[str, bytes], numeric: int) -> list[str]:
    """Names of the nodes that reference ``numeric``."""
    refs = (keys.parse_identity_ref(CLUSTER, k) for k in stored)
    return sorted(r[0] for r in refs if r is not None and r[1] == numeric)


def test_unused_identity_is_collected_and_one_in_use_is_kept(
    lab: Lab, fast_gc: None, containers: list[Container]
) -> None:
    tag = uuid.uuid4().hex[:8]
    x = _run(lab, containers, "c1/n1", {"gc": f"x-{tag}"})
    y1 = _run(lab, containers, "c1/n1", {"gc": f"y-{tag}"})
    y2 = _run(lab, containers, "c1/n2", {"gc": f"y-{tag}"})
    x_id, y_id = _identity(lab, x), _identity(lab, y1)
    assert _identity(lab, y2) == y_id != x_id
    listed = _listed(lab, "c1/n2")
    assert listed[x_id]["gc"] == f"x-{tag}" and listed[y_id]["gc"] == f"y-{tag}"
    stored = _stored(lab)
    assert _refs(stored, x_id) == ["n1"] and _refs(stored, y_id) == ["n1", "n2"]

    lab.remove_container("c1/n1", x.name)
    lab.remove_container("c1/n1", y1.name)  # n2 still uses y's identity
    wait_for(f"identity {x_id} collected", lambda: x_id not in _listed(lab, "c1/n2"))

    stored = _stored(lab)
    x_labels = listed[x_id]
    assert keys.identity_id(CLUSTER, x_id) not in stored
    assert keys.identity_labels(CLUSTER, labels_key(x_labels)) not in stored
    assert _refs(stored, x_id) == []
    # y's identity went unreferenced on n1 as long as x's did, and is kept.
    assert _listed(lab, "c1/n1")[y_id] == listed[y_id]
    assert keys.identity_id(CLUSTER, y_id) in stored
    assert _refs(stored, y_id) == ["n2"]
    assert _identity(lab, y2) == y_id

    # The labels of a collected identity get one again.
    again = _run(lab, containers, "c1/n2", {"gc": f"x-{tag}"})
    again_id = _identity(lab, again)
    assert _listed(lab, "c1/n1")[again_id]["gc"] == f"x-{tag}"


def test_identity_deleted_while_in_use_is_recreated_by_its_node(
    lab: Lab, fast_gc: None, containers: list[Container]
) -> None:
    ctr = _run(lab, containers, "c1/n2", {"gc": f"race-{uuid.uuid4().hex[:8]}"})
    numeric = _identity(lab, ctr)
    labels = _listed(lab, "c1/n2")[numeric]
    id_key = keys.identity_id(CLUSTER, numeric)
    labels_index = keys.identity_labels(CLUSTER, labels_key(labels))
    # What the GC does when it loses the race: both keys go in one transaction.
    etcd_delete(lab, CLUSTER, id_key, labels_index)

    def restored() -> bool:
        stored = _stored(lab)
        return id_key in stored and stored.get(labels_index) == str(numeric).encode()

    wait_for(f"identity {numeric} re-created", restored)
    assert _listed(lab, "c1/n1")[numeric] == labels
    assert _identity(lab, ctr) == numeric
