"""Commands and containers in the lab's nodes: ``glia lab exec``, ``glia lab run``.

:class:`LabWorkloads` is the part of :class:`glia.lab.lab.Lab` that runs
things inside a node of a lab that is up: a command in a node's namespace or
in one of its containers (``c1/n1`` or ``c1/n1/CONTAINER``), and podman
containers on a node (:class:`glia.lab.podman.NodePodman`, which joins them
to the glia CNI network). Called by :mod:`glia.cli.lab`, the demo
(:mod:`glia.lab.demo`, :mod:`glia.lab.demo_mesh`), the end-to-end tests
and ``bench/``. It reads no state: the node's namespace must exist. A
command in a node runs in the node's cgroup v2 directory too (where the
socket load-balancer is attached), so it reaches Service VIPs as a process
of a real node does.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from glia.datapath import cgroup
from glia.lab import netns, topology
from glia.lab.base import LabBase
from glia.lab.errors import LabError
from glia.lab.podman import Container, NodePodman, PodmanError
from glia.lab.topology import IMAGE, NodeSpec


class LabWorkloads(LabBase):
    """Run commands in the lab's nodes and containers; start and remove containers."""

    def cli_env(self) -> dict[str, str]:
        """Environment for ``glia ... --node c1/n1`` commands aimed at this lab."""
        return {
            **os.environ,
            topology.LAB_DIR_ENV: str(self.topo.dir),
            topology.LAB_NAME_ENV: self.name,
        }

    def exec_argv(
        self, target: str, argv: Sequence[str], *, tty: bool = False, check_container: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        """Command line and environment running ``argv`` in ``c1/n1`` or ``c1/n1/CONTAINER``;
        ``check_container``: refuse a container the node does not have (one podman call more,
        for the CLI, where podman's own error would name neither the node nor what to do)."""
        if not argv:
            raise LabError("no command given (e.g. `glia lab exec c1/n1 -- ip addr`)")
        t = topology.parse_target(target)
        n = self.topo.node(t.cluster, t.node)
        if not netns.exists(n.netns):
            raise LabError(f"{n.ref}: namespace {n.netns} does not exist; is lab {self.name!r} up?")
        if t.container is None:
            return _in_node_cgroup(n, netns.nsenter_argv(n.netns, argv)), dict(os.environ)
        pm = NodePodman(n)
        if check_container and not pm.exists(t.container):
            raise LabError(
                f"{n.ref}: no container {t.container!r} (`glia lab status` lists the lab's "
                f"containers; `glia lab run {n.ref} --name {t.container}` starts one)"
            )
        return pm.exec_argv(t.container, argv, tty=tty), pm.env

    def exec(
        self,
        target: str,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in a node or a container, capturing its output."""
        full, env = self.exec_argv(target, argv)
        try:
            proc = subprocess.run(
                full, env=env, input=input, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{target}: {' '.join(argv)} took longer than {timeout:g} s") from None
        if check and proc.returncode != 0:
            raise LabError(
                f"{target}: {' '.join(argv)} exited with {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def node_exec(
        self, node: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        self.node(node)  # a node, not a container
        return self.exec(node, argv, **kwargs)

    def podman(self, node: str) -> NodePodman:
        return NodePodman(self.node(node))

    def run_container(
        self,
        node: str,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        image: str = IMAGE,
        command: Sequence[str] | None = None,
        network: str = "glia",
        cap_add: Sequence[str] = (),
        ip: str | None = None,
        publish: Sequence[str] = (),
    ) -> Container:
        """Start a container on ``node`` (default: busybox httpd answering its name).

        ``cap_add``: extra capabilities, e.g. ``["NET_ADMIN"]`` to change its addresses.
        ``ip``: the address to ask for (``podman run --ip``); the agent refuses one
        outside the node's pod CIDR or in use (a :class:`LabError` with its reason).
        ``publish``: ``podman run -p`` values (``8080:80``, ``8053:53/udp``,
        ``IP:8080:80``; docs/hostport.md); one glia cannot honour is a :class:`LabError`.
        """
        n = self.node(node)
        if not netns.exists(n.netns):
            raise LabError(f"{n.ref}: lab {self.name!r} is not up (no namespace {n.netns})")
        extra = [arg for cap in cap_add for arg in ("--cap-add", cap)]
        if ip is not None:
            extra += ["--ip", ip]
        extra += [arg for p in publish for arg in ("-p", p)]
        try:
            return NodePodman(n).run_container(
                name, image=image, labels=labels, command=command, network=network, extra_args=extra
            )
        except PodmanError as e:
            raise LabError(str(e)) from None

    def remove_container(self, node: str, name: str) -> None:
        try:
            self.podman(node).remove(name)
        except PodmanError as e:
            raise LabError(str(e)) from None

    def containers(self, node: str) -> list[Container]:
        try:
            return self.podman(node).containers()
        except PodmanError as e:
            raise LabError(str(e)) from None


def _in_node_cgroup(node: NodeSpec, argv: list[str]) -> list[str]:
    """``argv`` run as a process of the node: inside the node's cgroup v2 directory,
    where its containers are, so the socket load-balancer attached there gives it
    Service VIPs as a host's cgroup2 root gives every process of a real node.
    Unchanged when the directory does not exist (a lab without it)."""
    root = cgroup.cgroup2_root()
    if root is None or not node.cgroup(root).is_dir():
        return argv
    join = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
    return ["sh", "-c", join, "sh", str(node.cgroup(root)), *argv]
