"""The agent's checks of CNI ADD/CHECK bodies (pure), and of CNI_NETNS against real files."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glia.cni.spec import MAX_CONTAINER_ID, CniError
from glia.endpoint import netns_check, request
from glia.endpoint.request import AddRequest, NetnsId
from glia.model.endpoint import Endpoint

BODY: dict[str, Any] = {
    "command": "ADD",
    "container_id": "f00dcafe",
    "netns": "/run/netns/pod-1",
    "ifname": "eth0",
    "args": {"K8S_POD_NAME": "web", "K8S_POD_NAMESPACE": "shop"},
    "config": {"cniVersion": "0.4.0", "name": "glia", "type": "glia-cni"},
    "prev_result": None,
}
PREV = {
    "interfaces": [{"name": "gliae1"}, {"name": "eth0", "sandbox": "/run/netns/pod-1"}],
    "ips": [{"address": "10.1.0.7/32", "gateway": "10.1.0.1", "interface": 1}],
}


def refused(fn: Any, *args: Any) -> CniError:
    with pytest.raises(CniError) as ei:
        fn(*args)
    return ei.value


def ep(cid: str = "f00dcafe", netns: str = "/run/netns/pod-1", ifname: str = "eth0") -> Endpoint:
    return Endpoint(cid, "default", "web", "c1", "n1", "10.1.0.7", 5, ifname=ifname, netns=netns)


def test_add_body() -> None:
    assert request.parse_add(BODY) == AddRequest(
        "f00dcafe", "/run/netns/pod-1", "eth0", "web", "shop", "0.4.0"
    )
    bare = {"container_id": "0123456789abcdef", "netns": "/proc/42/ns/net"}
    assert request.parse_add(bare) == AddRequest(
        "0123456789abcdef", "/proc/42/ns/net", "eth0", "0123456789ab", "default", "1.0.0"
    )


@pytest.mark.parametrize(
    ("change", "code", "msg"),
    [
        ({"container_id": None}, 4, "container_id (CNI_CONTAINERID) is required"),
        ({"container_id": 7}, 4, "container_id (CNI_CONTAINERID) is required"),
        ({"container_id": "a/b"}, 4, "invalid characters in containerID"),
        ({"container_id": "a" * 250}, 4, "CNI_CONTAINERID is longer than 128 characters"),
        ({"netns": ""}, 4, "netns (CNI_NETNS) is required"),
        ({"netns": "pod"}, 4, "CNI_NETNS must be an absolute path"),
        ({"netns": "/run/\0"}, 4, "CNI_NETNS contains a NUL character"),
        ({"netns": "/" + "x" * 5000}, 4, "CNI_NETNS is longer than 4095 bytes (PATH_MAX)"),
        ({"ifname": 3}, 4, "ifname (CNI_IFNAME) must be a string, got 3"),
        ({"ifname": "a" * 16}, 4, "interface name is too long"),
        ({"args": []}, 4, "args (CNI_ARGS) must be an object of strings"),
        ({"args": {"K8S_POD_NAME": 1}}, 4, "CNI_ARGS K8S_POD_NAME: expected a string, got 1"),
        ({"args": {"K8S_POD_NAME": "a/b"}}, 4, "CNI_ARGS K8S_POD_NAME must be at most 253"),
        ({"args": {"K8S_POD_NAME": "x" * 254}}, 4, "CNI_ARGS K8S_POD_NAME must be at most 253"),
        ({"args": {"K8S_POD_NAMESPACE": "-x"}}, 4, "CNI_ARGS K8S_POD_NAMESPACE must be at most 63"),
        ({"config": "x"}, 7, "config (the network configuration) must be an object"),
        ({"config": {"cniVersion": 1}}, 6, "config.cniVersion must be a string"),
        ({"config": {"cniVersion": "0.2.0"}}, 1, "incompatible CNI versions"),
    ],
)
def test_add_body_refused(change: dict[str, Any], code: int, msg: str) -> None:
    e = refused(request.parse_add, BODY | change)
    assert (e.code, e.msg[: len(msg)]) == (code, msg)


def test_check_body() -> None:
    r = request.parse_check(BODY | {"prev_result": PREV})
    assert (r.container_id, r.netns, r.ifname, r.prev_result) == (
        "f00dcafe",
        "/run/netns/pod-1",
        "eth0",
        PREV,
    )
    e = refused(request.parse_check, BODY)
    assert (e.code, e.msg) == (7, "CHECK needs the prevResult of the ADD")
    e = refused(request.parse_check, BODY | {"prev_result": {"ips": [{"address": "x"}]}})
    assert e.code == 7 and e.msg.startswith("invalid prevResult: prevResult.ips[0].address")
    e = refused(request.parse_check, BODY | {"container_id": "a" * 129, "prev_result": PREV})
    assert e.code == 4


def test_check_compares_the_prev_result_with_the_endpoint() -> None:
    request.check_prev_matches(ep(), PREV)
    chained = {**PREV, "ips": [*PREV["ips"], {"address": "fd00::7/128"}]}
    request.check_prev_matches(ep(), chained)  # a later plugin may add addresses
    e = refused(request.check_prev_matches, ep(), {**PREV, "ips": [{"address": "10.9.9.9/32"}]})
    assert (e.code, e.msg) == (
        7,
        "prevResult does not match container f00dcafe/eth0: it lists 10.9.9.9, "
        "the endpoint has 10.1.0.7",
    )
    e = refused(request.check_prev_matches, ep(), {})
    assert e.msg.endswith("it lists no address, the endpoint has 10.1.0.7")


def test_a_container_stays_in_one_network_namespace() -> None:
    a, b = NetnsId(4, 100), NetnsId(4, 200)
    request.check_one_netns("f00dcafe", "/run/netns/pod-1", a, [])
    request.check_one_netns("f00dcafe", "/run/netns/pod-1", a, [(ep(), a)])
    request.check_one_netns("f00dcafe", "/run/netns/pod-1", a, [(ep(), None)])  # same path
    request.check_one_netns("f00dcafe", "/proc/9/ns/net", a, [(ep(), a)])  # same namespace
    e = refused(request.check_one_netns, "f00dcafe", "/run/netns/pod-2", b, [(ep(), a)])
    assert (e.code, e.msg) == (
        4,
        "CNI_NETNS /run/netns/pod-2 is not the network namespace of CNI_CONTAINERID "
        "f00dcafe: its eth0 is in /run/netns/pod-1",
    )
    # A second interface elsewhere, or a first one whose namespace is gone: refused too.
    e = refused(request.check_one_netns, "f00dcafe", "/run/netns/pod-2", b, [(ep(), None)])
    assert e.code == 4


# -- properties ------------------------------------------------------------------------

_any = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.just([]))
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "container_id": st.one_of(
            st.just("f00dcafe"), st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,300}\Z"), _any
        ),
        "netns": st.one_of(st.just("/run/netns/x"), st.text(max_size=20), _any),
        "ifname": st.one_of(st.just("eth0"), st.text(max_size=18), _any),
        "args": st.one_of(
            st.dictionaries(
                st.sampled_from(["K8S_POD_NAME", "K8S_POD_NAMESPACE", "X"]),
                st.one_of(st.text(max_size=70), _any),
            ),
            _any,
        ),
        "config": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"cniVersion": st.one_of(st.sampled_from(["1.0.0", "0.2.0"]), _any)}
            ),
            _any,
        ),
        "prev_result": st.one_of(st.just(PREV), st.dictionaries(st.text(max_size=5), _any), _any),
    },
)


@given(_bodies)
@settings(max_examples=400, deadline=None)
def test_any_body_is_parsed_or_refused_with_a_spec_code(body: dict[str, Any]) -> None:
    for parse in (request.parse_add, request.parse_check):
        try:
            r = parse(body)
        except CniError as e:
            assert e.code in (1, 4, 6, 7) and e.msg
        else:
            assert 0 < len(r.container_id) <= MAX_CONTAINER_ID
            assert r.netns.startswith("/") and "\0" not in r.netns
            assert 0 < len(r.ifname.encode()) <= 15
            if isinstance(r, AddRequest):
                assert "/" not in r.name and "/" not in r.namespace
                assert 0 < len(r.name) <= 253 and 0 < len(r.namespace) <= 63


# -- CNI_NETNS on real files (no privileges needed) ------------------------------------


def netns_refusal(path: str, **kwargs: Any) -> str:
    e = refused(lambda: netns_check.check_pod_netns(path, **kwargs))
    assert e.code == 4
    return e.msg


def test_only_a_pod_network_namespace_is_accepted(tmp_path: Path) -> None:
    own = "/proc/self/ns/net"
    assert netns_refusal(own) == (
        "CNI_NETNS /proc/self/ns/net is the node's own network namespace (the agent's), not a pod's"
    )
    assert netns_refusal(f"/proc/{os.getpid()}/task/{os.getpid()}/ns/net").endswith(
        "is the node's own network namespace (the agent's), not a pod's"
    )
    assert netns_refusal("/proc/self/ns/uts").endswith(
        "is a UTS namespace, not a network namespace"
    )
    assert netns_refusal("/proc/self/ns/mnt").endswith(
        "is a mount namespace, not a network namespace"
    )
    plain = tmp_path / "file"
    plain.write_text("")
    assert netns_refusal(str(plain)).endswith("is not a network namespace (not a namespace file)")
    assert netns_refusal(str(tmp_path)).endswith("is not a network namespace (it is a directory)")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block: it must be refused without being opened
    assert netns_refusal(str(fifo)).endswith("(it is a FIFO)")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        assert netns_refusal(str(tmp_path / "sock")).endswith("(it is a socket)")
    assert netns_refusal("/dev/null").endswith("(it is a character device)")
    assert netns_refusal(str(tmp_path / "nope")) == f"CNI_NETNS {tmp_path}/nope does not exist"
    link = tmp_path / "link"
    link.symlink_to(own)
    assert netns_refusal(str(link)).endswith(
        "is the node's own network namespace (the agent's), not a pod's"
    )
    assert netns_refusal("relative") == "CNI_NETNS must be an absolute path"


def test_the_hosts_root_namespace_is_refused_as_such() -> None:
    # Told apart from "own" by naming another file as the agent's namespace.
    here = "/proc/self/ns/net"
    msg = netns_refusal(here, own="/proc/self/ns/uts", root=["/nonexistent", here])
    assert msg == f"CNI_NETNS {here} is the host's root network namespace, not a pod's"
    if netns_check.identity("/proc/2/ns/net") == netns_check.identity(here):
        # This test runs in the host's namespace (as CI does): the defaults know it.
        msg = netns_refusal("/proc/2/ns/net", own="/proc/self/ns/uts")
        assert msg.endswith("is the host's root network namespace, not a pod's")


def test_identity_names_a_namespace_whatever_the_path() -> None:
    st_net = os.stat("/proc/self/ns/net")
    assert netns_check.identity("/proc/self/ns/net") == NetnsId(st_net.st_dev, st_net.st_ino)
    assert netns_check.identity(f"/proc/{os.getpid()}/ns/net") == NetnsId(
        st_net.st_dev, st_net.st_ino
    )
    assert netns_check.identity("/nonexistent") is None
    assert netns_check.identity("/x\0") is None
    assert stat.S_ISREG(st_net.st_mode)  # what check_pod_netns relies on


# -- issue 10: requested addresses and namespaces ------------------------------------


def test_requested_ip_from_cni_args_and_runtime_config() -> None:
    assert request.requested_ip({"IP": "10.1.1.7"}, {}) == "10.1.1.7"
    assert request.requested_ip({}, {"runtimeConfig": {"ips": ["10.1.1.7/24"]}}) == "10.1.1.7"
    assert request.requested_ip({"IP": "10.1.1.7"}, {"runtimeConfig": {"ips": ["10.1.1.7"]}}) == (
        "10.1.1.7"
    )
    assert request.requested_ip({}, {}) is None
    assert request.requested_ip(None, None) is None


@pytest.mark.parametrize(
    ("args", "config", "code", "text"),
    [
        ({"IP": "10.1.1.x"}, {}, 4, "CNI_ARGS IP: '10.1.1.x' is not an IP address"),
        ({"IP": "fd00::1"}, {}, 4, "IPv6"),
        ({"IP": "10.1.1.7,10.1.1.8"}, {}, 4, "2 addresses requested"),
        ({}, {"runtimeConfig": {"ips": "10.1.1.7"}}, 7, "runtimeConfig.ips must be a list"),
        ({}, {"runtimeConfig": {"ips": ["zz"]}}, 7, "runtimeConfig.ips: 'zz'"),
    ],
)
def test_requested_ip_refused(args: Any, config: Any, code: int, text: str) -> None:
    with pytest.raises(CniError) as e:
        request.requested_ip(args, config)
    assert e.value.code == code and text in e.value.msg


def test_parse_add_carries_the_requested_ip() -> None:
    body = {
        "container_id": "c" * 64,
        "netns": "/run/netns/x",
        "ifname": "eth0",
        "args": {"K8S_POD_NAME": "web", "IP": "10.1.1.9"},
        "config": {"cniVersion": "1.0.0"},
    }
    assert request.parse_add(body).ip == "10.1.1.9"


@pytest.mark.parametrize(
    ("labels", "want", "problem"),
    [
        ({"io.kubernetes.pod.namespace": "shop"}, "shop", None),
        ({"app": "web"}, "default", None),
        ({"io.kubernetes.pod.namespace": "Shop"}, "default", "is not a namespace name"),
        ({"io.kubernetes.pod.namespace": "-shop"}, "default", "is not a namespace name"),
        ({"io.kubernetes.pod.namespace": "a" * 64}, "default", "at most 63"),
        ({"io.kubernetes.pod.namespace": ""}, "default", "is not a namespace name"),
    ],
)
def test_namespace_from_labels(labels: dict[str, str], want: str, problem: str | None) -> None:
    ns, why = request.namespace_from_labels(labels, "default")
    assert ns == want
    if problem is None:
        assert why is None
    else:
        assert why is not None and problem in why
