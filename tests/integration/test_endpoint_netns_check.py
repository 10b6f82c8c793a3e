"""CNI_NETNS checks against real network namespaces (root): a pod's is accepted, by any path.

The namespaces are ``glia-t<pid>-*`` (netns_util), removed afterwards; nothing
is created in them or in this process's namespace.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from netns_util import add_netns, del_netns, prefix

from glia.cni.spec import CniError
from glia.endpoint import netns_check, request
from glia.endpoint.request import NetnsId
from glia.model.endpoint import Endpoint

pytestmark = pytest.mark.root


@pytest.fixture
def pods() -> Iterator[tuple[str, str]]:
    names = [f"{prefix()}-chk-a", f"{prefix()}-chk-b"]
    try:
        yield add_netns(names[0]), add_netns(names[1])
    finally:
        for name in names:
            del_netns(name)


def test_a_pod_namespace_is_accepted_whatever_path_names_it(pods: tuple[str, str]) -> None:
    pod_a, pod_b = pods
    st = os.stat(pod_a)
    ident = netns_check.check_pod_netns(pod_a)
    assert ident == NetnsId(st.st_dev, st.st_ino) != netns_check.check_pod_netns(pod_b)
    # The same namespace as a process in it sees it: /proc/PID/ns/net.
    sleeper = subprocess.Popen(["ip", "netns", "exec", os.path.basename(pod_a), "sleep", "30"])
    try:
        proc_path = f"/proc/{sleeper.pid}/ns/net"
        for _ in range(100):  # until ip has entered the namespace and exec'd sleep
            if netns_check.identity(proc_path) == ident:
                break
            time.sleep(0.02)
        assert netns_check.check_pod_netns(proc_path) == ident
        ep = Endpoint("c1", "default", "web", "c1", "n1", "10.1.0.7", 5, netns=pod_a)
        # A retried ADD through the other path is the same attachment ...
        request.check_one_netns("c1", proc_path, ident, [(ep, netns_check.identity(pod_a))])
    finally:
        sleeper.kill()
        sleeper.wait()
    # ... another namespace is not.
    with pytest.raises(CniError) as ei:
        request.check_one_netns(
            "c1", pod_b, netns_check.check_pod_netns(pod_b), [(ep, netns_check.identity(pod_a))]
        )
    assert ei.value.code == 4


def test_the_agents_own_namespace_is_refused_whatever_path_names_it(
    pods: tuple[str, str],
) -> None:
    pod_a, _ = pods
    # As if the agent ran in pod_a: pod_a is then the node's namespace.
    with pytest.raises(CniError) as ei:
        netns_check.check_pod_netns(pod_a, own=pod_a)
    assert (ei.value.code, ei.value.msg) == (
        4,
        f"CNI_NETNS {pod_a} is the node's own network namespace (the agent's), not a pod's",
    )
    with pytest.raises(CniError) as ei:
        netns_check.check_pod_netns(pod_a, own="/proc/self/ns/net", root=[pod_a])
    assert ei.value.msg == f"CNI_NETNS {pod_a} is the host's root network namespace, not a pod's"
