"""Model codec and identity layout."""

from __future__ import annotations

import pytest

from glia.endpoint.cni_result import add_result
from glia.model import codec
from glia.model.endpoint import Endpoint
from glia.model.identity import Identity, identity_cluster, labels_key, make_cluster_identity
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node


def test_roundtrip() -> None:
    n = Node(name="n1", cluster="c1", cluster_id=1, node_ip="198.18.1.1", pod_cidr="10.1.0.0/24")
    assert codec.decode(Node, codec.encode(n)) == n


def test_invalid_value_names_field() -> None:
    with pytest.raises(codec.InvalidValue, match="cluster_id"):
        codec.decode(Node, b'{"name":"n1","cluster":"c1","cluster_id":"x","node_ip":"1.2.3.4"}')
    with pytest.raises(codec.InvalidValue, match="not valid JSON"):
        codec.decode(IPCacheEntry, b"{nope")
    with pytest.raises(codec.InvalidValue, match="identity"):
        codec.decode(IPCacheEntry, b'{"ip":"10.1.0.5","tunnel_endpoint":"1.1.1.1","cluster_id":1}')


def test_identity_layout() -> None:
    i = make_cluster_identity(3, 256)
    assert i == 3 << 16 | 256
    assert identity_cluster(i) == 3
    assert identity_cluster(5) == 0
    assert i < 1 << 24  # fits the VXLAN VNI
    with pytest.raises(ValueError):
        make_cluster_identity(0, 300)
    with pytest.raises(ValueError):
        make_cluster_identity(1, 255)
    assert Identity(5).reserved


def test_labels_key_order_independent() -> None:
    assert labels_key({"a": "1", "b": "2"}) == labels_key({"b": "2", "a": "1"})
    assert labels_key({"a": "1"}) != labels_key({"a": "2"})


def test_cni_result_shape() -> None:
    ep = Endpoint(
        container_id="abc",
        namespace="default",
        name="web",
        cluster="c1",
        node="n1",
        ip="10.1.0.5",
        identity=5,
        host_ifname="glia0123",
        netns="/run/netns/x",
        mac="aa:bb:cc:dd:ee:ff",
        host_mac="11:22:33:44:55:66",
    )
    r = add_result(ep, "10.1.0.1")
    assert r["ips"] == [{"address": "10.1.0.5/32", "gateway": "10.1.0.1", "interface": 1}]
    assert r["interfaces"][1] == {
        "name": "eth0",
        "mac": "aa:bb:cc:dd:ee:ff",
        "sandbox": "/run/netns/x",
    }
    assert r["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
