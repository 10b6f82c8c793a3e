"""The Docker libnetwork driver's request checks and answers (glia.docker), with a real IPAM
file and the real plugin HTTP server on a unix socket; Join's endpoint is the e2e's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from glia.docker import protocol as p
from glia.docker.driver import PENDING, DockerDriver, DockerState
from glia.docker.protocol import DriverError
from glia.docker.server import PluginServer
from glia.ipam.local import LocalIPAM

CIDR = "10.200.1.0/24"
NID = "a" * 64
EID = "b" * 64
POOL = p.pool_id(CIDR)


@pytest.fixture
def driver(tmp_path: Path) -> DockerDriver:
    ipam = LocalIPAM(tmp_path / "ipam.json", CIDR)
    # No endpoint manager: the calls tested here never reach it.
    return DockerDriver(ipam, None, DockerState(tmp_path / "docker.json"), "198.18.1.1")  # type: ignore[arg-type]


async def test_activate_and_capabilities(driver: DockerDriver) -> None:
    assert await driver.call("Plugin.Activate", {}) == {
        "Implements": ["NetworkDriver", "IpamDriver"]
    }
    assert (await driver.call("NetworkDriver.GetCapabilities", {}))["Scope"] == "local"
    caps = await driver.call("IpamDriver.GetCapabilities", None)
    assert caps == {"RequiresMACAddress": False, "RequiresRequestReplay": False}
    spaces = await driver.call("IpamDriver.GetDefaultAddressSpaces", {})
    assert spaces["LocalDefaultAddressSpace"] == "glia"


async def test_pool_is_the_node_cidr(driver: DockerDriver) -> None:
    ans = await driver.call("IpamDriver.RequestPool", {"AddressSpace": "glia", "Pool": ""})
    assert ans == {"PoolID": POOL, "Pool": CIDR, "Data": {}}
    ans = await driver.call("IpamDriver.RequestPool", {"Pool": "10.200.1.0/24"})
    assert ans["Pool"] == CIDR
    assert await driver.call("IpamDriver.ReleasePool", {"PoolID": POOL}) == {}
    assert await driver.call("IpamDriver.ReleasePool", {"PoolID": POOL}) == {}


async def test_libnetworks_overlap_loop_ends_with_advice(driver: DockerDriver) -> None:
    # dockerd without --subnet: the pool overlaps the pods' routes, libnetwork holds
    # it and asks again. The second request is refused; the held one is released.
    await driver.call("IpamDriver.RequestPool", {"Pool": ""})
    with pytest.raises(DriverError, match=f"create the network with --subnet {CIDR}"):
        await driver.call("IpamDriver.RequestPool", {"Pool": ""})
    await driver.call("IpamDriver.ReleasePool", {"PoolID": POOL})
    # Nothing held: asked once it is given again, and --subnet is never refused.
    await driver.call("IpamDriver.RequestPool", {"Pool": ""})
    for _ in range(3):
        assert (await driver.call("IpamDriver.RequestPool", {"Pool": CIDR}))["Pool"] == CIDR


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"Pool": "10.9.0.0/16"}, "not this node's pod CIDR 10.200.1.0/24"),
        ({"Pool": "nonsense"}, "--subnet 'nonsense' is not a network"),
        ({"V6": True}, "IPv6 pools are not supported"),
        ({"AddressSpace": "other"}, "address space 'other'"),
        ({"SubPool": "10.200.1.0/28"}, "--ip-range is not supported"),
        ([1, 2], "request body must be a JSON object"),
    ],
)
async def test_bad_pool_requests(driver: DockerDriver, body: Any, words: str) -> None:
    with pytest.raises(DriverError, match=words):
        await driver.call("IpamDriver.RequestPool", body)


async def test_addresses_come_from_the_ipam_and_persist(
    driver: DockerDriver, tmp_path: Path
) -> None:
    gw = await driver.call(
        "IpamDriver.RequestAddress",
        {"PoolID": POOL, "Options": {"RequestAddressType": p.GATEWAY_TYPE}},
    )
    assert gw == {"Address": "10.200.1.1/24", "Data": {}}
    a = (await driver.call("IpamDriver.RequestAddress", {"PoolID": POOL}))["Address"]
    b = (await driver.call("IpamDriver.RequestAddress", {"PoolID": POOL}))["Address"]
    assert a.endswith("/32") and a != b
    ip_a = a.split("/")[0]
    # Persistent: a new IPAM on the same file (a restarted agent) knows it.
    again = LocalIPAM(tmp_path / "ipam.json", CIDR)
    assert (again.holder(ip_a) or "").startswith(PENDING)
    want = await driver.call(
        "IpamDriver.RequestAddress", {"PoolID": POOL, "Address": "10.200.1.77"}
    )
    assert want["Address"] == "10.200.1.77/32"
    with pytest.raises(DriverError, match=r"10\.200\.1\.77 is in use"):
        await driver.call("IpamDriver.RequestAddress", {"PoolID": POOL, "Address": "10.200.1.77"})
    with pytest.raises(DriverError, match=r"--ip 10\.9\.9\.9 refused: 10\.9\.9\.9 is outside"):
        await driver.call("IpamDriver.RequestAddress", {"PoolID": POOL, "Address": "10.9.9.9"})
    assert await driver.call("IpamDriver.ReleaseAddress", {"PoolID": POOL, "Address": a}) == {}
    assert driver._ipam.holder(ip_a) is None
    # Releasing again, or the gateway, changes nothing.
    await driver.call("IpamDriver.ReleaseAddress", {"PoolID": POOL, "Address": a})
    await driver.call("IpamDriver.ReleaseAddress", {"PoolID": POOL, "Address": "10.200.1.1"})


@pytest.mark.parametrize(
    ("call", "body", "words"),
    [
        ("IpamDriver.RequestAddress", {"PoolID": "other"}, "PoolID 'other' is not this node's"),
        ("IpamDriver.RequestAddress", {"PoolID": POOL, "Address": "x"}, "'x' is not an IP"),
        ("IpamDriver.RequestAddress", {"PoolID": POOL, "Address": "fd00::1"}, "is IPv6"),
        ("IpamDriver.RequestAddress", {"PoolID": POOL, "Options": 3}, "Options must be an object"),
        ("IpamDriver.ReleaseAddress", {"PoolID": POOL, "Address": ""}, "'' is not an IP"),
        ("NetworkDriver.CreateNetwork", {"NetworkID": "x"}, "NetworkID must be 64 lowercase hex"),
        ("NetworkDriver.CreateNetwork", {"NetworkID": NID}, "use --ipam-driver glia"),
        (
            "NetworkDriver.CreateNetwork",
            {"NetworkID": NID, "IPv4Data": [{"Pool": "172.18.0.0/16"}]},
            "172.18.0.0/16 is not this node's pod CIDR",
        ),
        (
            "NetworkDriver.CreateNetwork",
            {"NetworkID": NID, "IPv4Data": [{"Pool": CIDR}], "IPv6Data": [{"Pool": "fd00::/64"}]},
            "IPv6 networks are not supported",
        ),
        ("NetworkDriver.CreateEndpoint", {"NetworkID": NID}, "EndpointID must be 64"),
        (
            "NetworkDriver.CreateEndpoint",
            {"NetworkID": NID, "EndpointID": EID, "Interface": {}},
            "Interface.Address is missing",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            {"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "172.18.0.2/16"}},
            "172.18.0.2 is not from this node's pod CIDR",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            {"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.200.1.9/32"}},
            "was not given by glia's IPAM",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            {
                "NetworkID": NID,
                "EndpointID": EID,
                "Interface": {"Address": "10.200.1.9/32", "MacAddress": "02:00:00:00:00:01"},
            },
            "--mac-address is not supported",
        ),
        (
            "NetworkDriver.Join",
            {"NetworkID": NID, "EndpointID": EID, "SandboxKey": "rel"},
            "SandboxKey must be an absolute path",
        ),
        (
            "NetworkDriver.Join",
            {"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/var/run/docker/netns/x"},
            "endpoint bbbbbbbbbbbb is unknown",
        ),
        ("NetworkDriver.Leave", {"EndpointID": EID}, "NetworkID must be 64"),
        ("NetworkDriver.AllocateNetwork", {}, "not supported"),
        ("NetworkDriver.Nope", {}, "unknown call 'NetworkDriver.Nope'"),
    ],
)
async def test_bad_requests_are_named(
    driver: DockerDriver, call: str, body: Any, words: str
) -> None:
    with pytest.raises(DriverError, match=words):
        await driver.call(call, body)


async def test_network_and_endpoint_records(driver: DockerDriver, tmp_path: Path) -> None:
    body = {"NetworkID": NID, "IPv4Data": [{"AddressSpace": "glia", "Pool": CIDR}]}
    assert await driver.call("NetworkDriver.CreateNetwork", body) == {}
    addr = (await driver.call("IpamDriver.RequestAddress", {"PoolID": POOL}))["Address"]
    ep = {"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": addr}}
    assert await driver.call("NetworkDriver.CreateEndpoint", ep) == {"Interface": {}}
    # Retried by dockerd: the same answer.
    assert await driver.call("NetworkDriver.CreateEndpoint", ep) == {"Interface": {}}
    ip = addr.split("/")[0]
    assert DockerState(tmp_path / "docker.json").get(EID) == {"network": NID, "ip": ip}
    info = await driver.call(
        "NetworkDriver.EndpointOperInfo", {"NetworkID": NID, "EndpointID": EID}
    )
    assert info == {"Value": {"glia.address": ip}}
    ids = {"NetworkID": NID, "EndpointID": EID}
    assert await driver.call("NetworkDriver.Leave", ids) == {}
    for call in ("ProgramExternalConnectivity", "RevokeExternalConnectivity", "DiscoverNew"):
        assert await driver.call(f"NetworkDriver.{call}", ids) == {}
    assert await driver.call("NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == {}


def test_join_answer_routes_through_the_node() -> None:
    ans = p.join_answer("gliapbbbbbbbbbb", "198.18.1.1")
    assert ans["InterfaceName"] == {"SrcName": "gliapbbbbbbbbbb", "DstPrefix": "eth"}
    assert ans["Gateway"] == "198.18.1.1"
    assert ans["StaticRoutes"] == [{"Destination": "198.18.1.1/32", "RouteType": 1}]


async def test_server_answers_err_json(driver: DockerDriver, tmp_path: Path) -> None:
    sock = str(tmp_path / "glia.sock")
    server = PluginServer(driver, sock)
    await server.start()
    try:
        conn = aiohttp.UnixConnector(path=sock)
        async with aiohttp.ClientSession(connector=conn) as http:
            async with http.post("http://d/Plugin.Activate", data=b"") as r:
                assert r.status == 200
                assert (await r.json())["Implements"] == ["NetworkDriver", "IpamDriver"]
            async with http.post("http://d/IpamDriver.RequestPool", data=b"{nope") as r:
                assert r.status == 400
                assert await r.json() == {
                    "Err": "glia: IpamDriver.RequestPool: the body is not JSON"
                }
            body = json.dumps({"Pool": "10.9.0.0/16"})
            async with http.post("http://d/IpamDriver.RequestPool", data=body) as r:
                assert r.status == 400
                assert "not this node's pod CIDR" in (await r.json())["Err"]
    finally:
        await server.stop()
