"""Issue 10 with real podman: `--network-alias` in DNS, the pod's namespace in its
resolv.conf (the CNI result's `dns`), and `--mac-address` refused loudly.

docs/dns.md and docs/endpoints.md describe what is checked here.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from labhelpers import NODES, Workload, wait_for

from glia.lab.lab import Lab
from glia.lab.podman import Container, PodmanError

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def _tag() -> str:
    return uuid.uuid4().hex[:6]


def _run(work: Workload, node: str, name: str, extra: Sequence[str] = ()) -> Container:
    ctr = work.lab.podman(node).run_container(name, extra_args=list(extra))
    work.containers.append(ctr)
    return ctr


def _lookup(lab: Lab, src: Container, name: str) -> str:
    r = lab.exec(f"{src.node}/{src.name}", ["timeout", "5", "nslookup", name])
    return r.stdout + r.stderr


def _resolv(lab: Lab, ctr: Container) -> list[str]:
    out = lab.exec(f"{ctr.node}/{ctr.name}", ["cat", "/etc/resolv.conf"], check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def _allocations(lab: Lab, node: str) -> dict[str, Any]:
    state = json.loads((lab.node(node).state_dir / "ipam.json").read_text())
    return dict(state["allocations"])


def test_network_alias_is_resolved_from_another_pod(lab: Lab, work: Workload) -> None:
    alias = f"glia-db-{_tag()}"
    db = _run(work, NODES[0], f"glia-al-{_tag()}", ["--network-alias", alias.upper()])
    client = _run(work, NODES[1], f"glia-alc-{_tag()}")
    # busybox nslookup exits 1 when any searched form is unknown: its output tells.
    want = rf"Name:\s+{alias}\.cluster\.local\s+Address:\s+{re.escape(str(db.ip))}\b"
    assert wait_for(f"{alias} in DNS", lambda: re.search(want, _lookup(lab, client, alias)))
    # podman adds the short id as an alias: another name of the pod.
    short = db.id[:12]
    out = _lookup(lab, client, f"{short}.cluster.local")
    assert f"Address: {db.ip}" in out, out
    # the container's own name still answers, and the alias leaves with the container
    assert f"Address: {db.ip}" in _lookup(lab, client, f"{db.name}.cluster.local")
    work.remove(db)
    assert wait_for(
        f"{alias} gone", lambda: "NXDOMAIN" in _lookup(lab, client, f"{alias}.cluster.local")
    )


def test_resolv_conf_names_the_node_and_the_pods_namespace_first(
    lab: Lab, work: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_ip = str(lab.topo.node(*NODES[0].split("/")).ip)
    plain = _run(work, NODES[0], f"glia-rv-{_tag()}")
    # podman passes CNI_ARGS of its own environment on to the plugin.
    monkeypatch.setenv("CNI_ARGS", "K8S_POD_NAMESPACE=shop")
    shop = _run(work, NODES[0], f"glia-rvs-{_tag()}")
    monkeypatch.delenv("CNI_ARGS")
    for ctr, ns in ((plain, "default"), (shop, "shop")):
        lines = _resolv(lab, ctr)
        search = next(line for line in lines if line.startswith("search "))
        assert search == f"search {ns}.svc.cluster.local svc.cluster.local cluster.local"
        servers = [line.split()[1] for line in lines if line.startswith("nameserver ")]
        assert servers[0] == node_ip, lines
        assert "options ndots:5" in lines, lines
    ep = next(e for e in lab.agent(NODES[0]).endpoints() if e["name"] == shop.name)
    assert ep["namespace"] == "shop"
    # The host's nameserver podman lists after ours is never waited for: an
    # unknown name is answered by the node at once (busybox time, in the pod).
    r = lab.exec(
        f"{shop.node}/{shop.name}", ["time", "timeout", "5", "nslookup", "glia-nothere.example."]
    )
    assert "NXDOMAIN" in r.stdout, r.stdout + r.stderr
    m = re.search(r"real\s+(\d+)m\s*([\d.]+)s", r.stderr)
    assert m and int(m.group(1)) * 60 + float(m.group(2)) < 1.0, r.stderr


def test_mac_address_is_refused_and_nothing_is_allocated(lab: Lab, work: Workload) -> None:
    node = NODES[0]
    before_eps = {e["name"] for e in lab.agent(node).endpoints()}
    before_ips = _allocations(lab, node)
    name = f"glia-mac-{_tag()}"
    with pytest.raises(PodmanError) as e:
        _run(work, node, name, ["--mac-address", "02:00:00:00:00:42"])
    assert "--mac-address (CNI_ARGS MAC) is not supported by glia" in str(e.value), str(e.value)
    assert name not in {c.name for c in lab.containers(node)}
    assert {e["name"] for e in lab.agent(node).endpoints()} == before_eps
    assert _allocations(lab, node) == before_ips
