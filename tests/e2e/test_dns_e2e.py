"""DNS served by glia, end to end: lookups from real podman containers (issue 10, item 6).

Every lab container's resolv.conf names its node's agent (docs/dns.md). A pod
on one node fetches a Service's page by its name (full and short forms),
resolves a Service of another namespace, a container of the other node by its
name, and gets NXDOMAIN for an unknown name at once; under an egress policy,
DNS works when the policy allows the node (`host`) and only then.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from labhelpers import (
    NODES,
    Workload,
    backend_command,
    service_manifest,
    wait_backends,
    wait_for,
)
from labhelpers import (
    glia_ok as glia,
)

from glia.lab.lab import Lab
from glia.lab.podman import Container

pytestmark = [pytest.mark.e2e, pytest.mark.root]

HTTP = [{"port": 80}]


def _lookup(lab: Lab, src: Container, name: str, seconds: int = 5) -> tuple[int, str]:
    r = lab.exec(f"{src.node}/{src.name}", ["timeout", str(seconds), "nslookup", name])
    return r.returncode, r.stdout + r.stderr


def _wget(lab: Lab, src: Container, url: str) -> str:
    r = lab.exec(f"{src.node}/{src.name}", ["timeout", "5", "wget", "-q", "-O", "-", url])
    return r.stdout.strip() if r.returncode == 0 else f"failed: {r.stderr.strip()}"


def test_pods_resolve_services_and_containers_through_their_node(lab: Lab, work: Workload) -> None:
    web = work.container(NODES[0], "glia-dnsweb", {"app": "dnsweb"}, backend_command("glia-dnsweb"))
    client = work.container(NODES[1], "glia-dnscli", {"app": "dnscli"})
    work.endpoint_ready(web, client)
    resolv = lab.exec(f"{client.node}/{client.name}", ["cat", "/etc/resolv.conf"]).stdout
    node_ip = str(lab.topo.node(*client.node.split("/")).ip)
    assert f"nameserver {node_ip}" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv

    # Unknown before the Service exists, known once it does: the agent keeps built
    # answers (glia.dns.cache) only while no Service or pod name changes.
    rc, out = _lookup(lab, client, "web.shop.svc.cluster.local")
    assert rc != 0 and "NXDOMAIN" in out, out
    shop = service_manifest("web", {"app": "dnsshop"}, HTTP)
    shop["metadata"]["namespace"] = "shop"
    vip, shop_vip = work.apply(service_manifest("web", {"app": "dnsweb"}, HTTP), shop)
    wait_backends(lab, vip, 80, {web.ip})

    # The full name and the short one (search domains), over a real connection.
    for url in ("http://web.default.svc.cluster.local/", "http://web/"):
        assert wait_for(url, lambda u=url: _wget(lab, client, u) == "glia-dnsweb" or None)

    def resolved() -> bool:
        rc, out = _lookup(lab, client, "web.shop.svc.cluster.local")
        return rc == 0 and shop_vip in out

    assert wait_for("web.shop resolved", resolved)
    # `<service>.<namespace>` through the search domains, as the C library
    # resolves it (busybox nslookup searches only names without a dot).
    r = lab.exec(f"{client.node}/{client.name}", ["ping", "-c", "1", "-W", "1", "web.shop"])
    assert f"PING web.shop ({shop_vip})" in r.stdout, r.stdout + r.stderr
    # A container on the other node, by its name (busybox nslookup exits 1
    # when any of the names it searched is unknown: its output tells).
    _, out = _lookup(lab, client, "glia-dnsweb")
    assert re.search(rf"Name:\s+glia-dnsweb\.cluster\.local\s+Address:\s+{web.ip}\b", out), out

    # An unknown name: NXDOMAIN, answered at once (busybox time, inside the pod).
    r = lab.exec(
        f"{client.node}/{client.name}",
        ["time", "timeout", "5", "nslookup", "glia-nothere.example."],
    )
    assert r.returncode != 0 and "NXDOMAIN" in r.stdout, r.stdout
    m = re.search(r"real\s+(\d+)m\s*([\d.]+)s", r.stderr)
    assert m, r.stderr
    assert int(m.group(1)) * 60 + float(m.group(2)) < 1.0, r.stderr

    # A deleted Service is unknown again (the answer kept for it goes with it).
    work.api.config_delete([work.services.pop(("shop", "web"))], "test_services")
    assert wait_for(
        "web.shop unknown again",
        lambda: "NXDOMAIN" in _lookup(lab, client, "web.shop.svc.cluster.local")[1],
    )


def _egress_policy(to: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "dns-egress"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "dnspol"}}, "egress": to},
    }


DNS_TO_HOST = {
    "toEntities": ["host"],
    "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}]}],
}


def test_under_an_egress_policy_dns_needs_the_host_allowed(
    lab: Lab, work: Workload, tmp_path: Path
) -> None:
    """docs/dns.md: the pod's DNS peer is `host`; a policy allowing it keeps lookups working,
    one that does not drops them (Cilium users allow DNS explicitly too)."""
    target = work.container(NODES[0], "glia-dnstarget", {"app": "dnstarget"})
    client = work.container(NODES[1], "glia-dnspol", {"app": "dnspol"})
    work.endpoint_ready(target, client)
    name = "glia-dnstarget.cluster.local"

    def resolves() -> bool:
        rc, out = _lookup(lab, client, name, seconds=2)
        return rc == 0 and f"Address: {target.ip}" in out

    assert wait_for("the lookup without policy", lambda: resolves() or None)
    path = tmp_path / "policy.yaml"
    try:
        path.write_text(yaml.safe_dump(_egress_policy([DNS_TO_HOST])))
        glia(lab, "apply", "-f", str(path), "--node", NODES[1])
        # Enforced now (egress to a pod is dropped), and DNS still answers.
        wait_for("egress enforced", lambda: (not _ping(lab, client, target.ip)) or None)
        assert resolves()
        other = {"toEndpoints": [{"matchLabels": {"app": "dnstarget"}}]}
        path.write_text(yaml.safe_dump(_egress_policy([other])))
        glia(lab, "apply", "-f", str(path), "--node", NODES[1])
        wait_for("the lookup dropped by policy", lambda: (not resolves()) or None)
        assert _ping(lab, client, target.ip)
    finally:
        glia(lab, "delete", "-f", str(path), "--node", NODES[1], "--ignore-not-found")
    assert wait_for("the lookup once the policy is gone", lambda: resolves() or None)


def _ping(lab: Lab, src: Container, ip: str) -> bool:
    r = lab.exec(f"{src.node}/{src.name}", ["ping", "-c", "1", "-W", "1", ip])
    return r.returncode == 0
