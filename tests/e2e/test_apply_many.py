"""`glia apply -f` of a file with 1,000 Services: stored whole in one etcd transaction,
or not at all (the lab's etcd runs with --max-txn-ops 10000; docs/kvstore.md)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from labhelpers import etcd_keys, frontends, wait_for

from glia.kvstore import keys
from glia.lab.lab import Lab, bin_dir

pytestmark = [pytest.mark.e2e, pytest.mark.root]

COUNT = 1000


def _docs(tag: str, count: int) -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"many-{tag}-{i}", "namespace": f"many-{tag}"},
            "spec": {"selector": {"app": f"many-{tag}-{i}"}, "ports": [{"port": 80}]},
        }
        for i in range(count)
    ]


def _glia(lab: Lab, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir() / "glia"), *args, "--node", "c1/n1"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=lab.cli_env(),
    )


def _stored(lab: Lab, tag: str) -> int:
    return len(etcd_keys(lab, "c1", keys.configs("services") + f"many-{tag}/"))


def test_a_thousand_services_all_or_nothing(lab: Lab, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    docs = _docs(tag, COUNT)
    # The last document is wrong: nothing of the file is stored.
    bad = [*docs[:-1], {**docs[-1], "spec": {"ports": [{"port": 70000}]}}]
    r = _glia(lab, "apply", "-f", "-", stdin=yaml.safe_dump_all(bad))
    assert r.returncode != 0 and "document 1000" in r.stderr and "70000" in r.stderr, r.stderr
    assert _stored(lab, tag) == 0

    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    started = time.monotonic()
    r = _glia(lab, "apply", "-f", str(path), "-o", "json")
    took = time.monotonic() - started
    try:
        assert r.returncode == 0, r.stderr
        results = json.loads(r.stdout)
        assert len(results) == COUNT and {x["action"] for x in results} == {"created"}
        assert len({x["cluster_ip"] for x in results}) == COUNT
        assert _stored(lab, tag) == COUNT
        print(f"glia apply of {COUNT} Services took {took:.2f} s")
        vips = {f"{x['cluster_ip']}:80/TCP" for x in results}
        # The operator resolves them and every node programs them.
        for node in ("c1/n1", "c1/n2"):
            wait_for(
                f"{node} to program {COUNT} frontends",
                lambda n=node: vips <= frontends(lab, n) or None,
                timeout=60,
            )
    finally:
        r = _glia(lab, "delete", "-f", str(path), "-o", "json")
    assert r.returncode == 0, r.stderr
    assert _stored(lab, tag) == 0
