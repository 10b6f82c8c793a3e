"""Podman for one lab node: its configuration files, image, and containers.

Called by :mod:`glia.lab.lab` (setup) and :mod:`glia.lab.workloads`
(containers). Each node behaves like a separate host: its own
``containers.conf`` (CNI backend with the glia network, cgroupfs, runc, the
ulimits this machine allows, file locks and events in the node's own tmp dir)
and ``storage.conf`` (graphroot and runroot under the node's directory). Every
podman command runs as ``nsenter --net=<node netns> podman ...`` with
``CONTAINERS_CONF`` and ``CONTAINERS_STORAGE_CONF`` set (``ip netns exec``
breaks podman's cgroup mounts, see FIELD-NOTES.md).

Every container of a node lives below the node's cgroup (socket
load-balancing acts on it): :meth:`NodePodman.run_container` passes
``--cgroup-parent``, so runc puts the container's processes, ``podman exec``'s
included, below it wherever runc manages cgroup2; the OCI hook
``glia-oci-hook`` (``hooks.d/glia-cgroup.json``, at the ``createRuntime``
stage) moves the first process there where it does not, and for containers
started without ``--cgroup-parent``.

The ``render_*`` functions are pure; :class:`NodePodman` does the I/O.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glia.endpoint.cni_result import DNS_OPTIONS as DNS_RESULT_OPTIONS
from glia.lab import netns
from glia.lab.topology import IMAGE, NodeSpec

NETWORK = "glia"
CHAINED_NETWORK = "glia-chained"  # ptp, then glia-cni (docs/chaining.md)
BRIDGE_NETWORK = "glia-bridge"  # bridge (gliabr0), then glia-cni
BRIDGE_DEVICE = "gliabr0"  # glia-bridge's Linux bridge, in each node's namespace
SYSTEM_CNI_DIR = Path("/usr/lib/cni")
CGROUP_HOOK_FILE = "glia-cgroup.json"
# runc runs createRuntime hooks once the container's process exists, before the
# user's program starts (right after the deprecated prestart stage).
CGROUP_HOOK_STAGE = "createRuntime"
BUSYBOX = Path("/bin/busybox")
PODMAN_TIMEOUT = 60.0
# Kubernetes' ndots: `web.shop` (one dot) goes through the search domains first.
# The nameserver and search list come from glia-cni's ADD result instead
# (glia.endpoint.cni_result); podman 4.3 ignores that result's options.
DNS_OPTIONS = DNS_RESULT_OPTIONS


class PodmanError(RuntimeError):
    """A podman command on a lab node failed."""


class ContainerExists(PodmanError):
    """The container name is taken on that node (the container holding it is left alone)."""


def _toml_str(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value)


def _toml_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def render_containers_conf(node: NodeSpec, plugin_dirs: Sequence[Path]) -> str:
    tmp = node.podman_dir / "tmp"
    return "\n".join(
        [
            f"# glia lab node {node.ref}: written by `glia lab up`",
            "[containers]",
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
            # The node's agent serves DNS on the node's IP (docs/dns.md): the
            # CNI result names it with the pod's namespace first in the search
            # list. Setting dns_servers or dns_searches here would make podman
            # drop the result's search list (seen with podman 4.3.1); its
            # options it ignores, hence ndots here.
            f"dns_options = {_toml_list(DNS_OPTIONS)}",
            'log_driver = "k8s-file"',
            "",
            "[engine]",
            'cgroup_manager = "cgroupfs"',
            'events_logger = "file"',
            'runtime = "runc"',
            # File locks and the "alive" marker in the node's own tmp dir: podman's
            # default shared-memory locks are one table for the whole machine, and
            # a node's first podman run would free the other nodes' locks.
            'lock_type = "file"',
            f"tmp_dir = {_toml_str(str(tmp))}",
            f"hooks_dir = {_toml_list([str(node.hooks_dir)])}",
            f"volume_path = {_toml_str(str(node.podman_dir / 'volumes'))}",
            "",
            "[network]",
            'network_backend = "cni"',
            f"network_config_dir = {_toml_str(str(node.cni_config_dir))}",
            f"cni_plugin_dirs = {_toml_list([str(d) for d in plugin_dirs])}",
            f"default_network = {_toml_str(NETWORK)}",
            "",
        ]
    )


def render_storage_conf(node: NodeSpec) -> str:
    return "\n".join(
        [
            f"# glia lab node {node.ref}: written by `glia lab up`",
            "[storage]",
            'driver = "overlay"',
            f"graphroot = {_toml_str(str(node.podman_dir / 'storage'))}",
            f"runroot = {_toml_str(str(node.podman_dir / 'run'))}",
            "",
        ]
    )


def render_cgroup_hook(node: NodeSpec, hook: Path, cgroup: Path) -> dict[str, Any]:
    """The OCI hook (oci-hooks(5), schema 1.0.0) putting each container into ``cgroup``."""
    return {
        "version": "1.0.0",
        "hook": {
            "path": str(hook),
            "args": [hook.name, "--cgroup", str(cgroup), "--log", str(node.oci_hook_log)],
        },
        "when": {"always": True},
        "stages": [CGROUP_HOOK_STAGE],
    }


def cgroup_parent(node: NodeSpec) -> str:
    """podman's ``--cgroup-parent`` for the node's containers: its cgroup, from each
    hierarchy's root (cgroupfs manager)."""
    return "/" + node.cgroup_name


def podman_env(node: NodeSpec) -> dict[str, str]:
    """What makes ``podman`` act on this node's storage and network configuration."""
    return {
        "CONTAINERS_CONF": str(node.containers_conf),
        "CONTAINERS_STORAGE_CONF": str(node.storage_conf),
    }


def default_command(name: str) -> list[str]:
    """busybox httpd on port 80 whose index page is the container's name."""
    script = f"mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www"
    return ["sh", "-c", script]


def build_rootfs(rootfs: Path) -> None:
    """A busybox-static root filesystem: /bin/busybox and a symlink per applet."""
    if (rootfs / "bin" / "busybox").exists():
        return
    if not BUSYBOX.exists():
        raise PodmanError(f"{BUSYBOX} is missing: install busybox-static (scripts/setup.sh)")
    staging = rootfs.with_name(rootfs.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "bin").mkdir(parents=True)
    for d in ("tmp", "www", "etc", "proc", "sys", "dev", "root"):
        (staging / d).mkdir()
    shutil.copy2(BUSYBOX, staging / "bin" / "busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (staging / "bin" / applet).symlink_to("busybox")
    (staging / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (staging / "etc" / "group").write_text("root:x:0:\n")
    staging.rename(rootfs)


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    id: str
    node: str  # "c1/n1"
    ip: str | None  # on the glia network; None when it has none (e.g. --network none)
    state: str  # podman's: running, exited, created...
    labels: dict[str, str]
    netns_path: str | None  # podman's /run/netns/netns-<uuid>, for cleanup


class NodePodman:
    """Podman as seen from one lab node."""

    def __init__(self, node: NodeSpec) -> None:
        self.node = node

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **podman_env(self.node)}

    def configured(self) -> bool:
        return self.node.containers_conf.exists() and self.node.storage_conf.exists()

    def argv(self, args: Sequence[str]) -> list[str]:
        """``podman ARGS`` in the node's namespace (or outside, once that is gone)."""
        podman = ["podman", *args]
        if netns.exists(self.node.netns):
            return netns.nsenter_argv(self.node.netns, podman)
        return podman

    def write_config(
        self,
        plugin_dirs: Sequence[Path],
        conflist: Mapping[str, Any] | None,
        *,
        hook: Path,
        cgroup: Path,
    ) -> None:
        """The node's podman files; ``hook`` is the ``glia-oci-hook`` executable that
        puts containers into the node's cgroup v2 directory ``cgroup``. ``conflist``:
        the ``glia`` network (None: ``glia cni install`` writes it, glia.lab.hostsetup)."""
        for d in ("storage", "run", "tmp", "volumes"):
            (self.node.podman_dir / d).mkdir(parents=True, exist_ok=True)
        self.node.cni_config_dir.mkdir(parents=True, exist_ok=True)
        self.node.hooks_dir.mkdir(parents=True, exist_ok=True)
        (self.node.hooks_dir / CGROUP_HOOK_FILE).write_text(
            json.dumps(render_cgroup_hook(self.node, hook, cgroup), indent=2) + "\n"
        )
        self.node.containers_conf.write_text(render_containers_conf(self.node, plugin_dirs))
        self.node.storage_conf.write_text(render_storage_conf(self.node))
        if conflist is not None:
            self.write_network(NETWORK, conflist)

    def write_network(self, name: str, conflist: Mapping[str, Any]) -> None:
        """The CNI network ``name`` of this node (``podman run --network name``)."""
        (self.node.cni_config_dir / f"{name}.conflist").write_text(
            json.dumps(conflist, indent=2) + "\n"
        )

    def run(self, args: Sequence[str], *, stdin: bytes | None = None, check: bool = True) -> str:
        try:
            proc = subprocess.run(
                self.argv(args),
                input=stdin,
                env=self.env,
                capture_output=True,
                timeout=PODMAN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PodmanError(
                f"{self.node.ref}: podman {' '.join(args)}: no answer in {PODMAN_TIMEOUT} s"
            ) from None
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise PodmanError(f"{self.node.ref}: podman {' '.join(args)} failed: {err}")
        return proc.stdout.decode(errors="replace")

    def import_image(self, rootfs: Path, image: str = IMAGE) -> None:
        """Import the busybox rootfs as ``image`` unless this node already has it."""
        probe = subprocess.run(
            self.argv(["image", "exists", image]), env=self.env, capture_output=True, check=False
        )
        if probe.returncode == 0:
            return
        tar = subprocess.run(
            ["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True
        ).stdout
        self.run(["import", "-", image], stdin=tar)

    def run_container(
        self,
        name: str,
        *,
        image: str = IMAGE,
        labels: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        network: str = NETWORK,
        extra_args: Sequence[str] = (),
    ) -> Container:
        """Start container ``name``; :class:`ContainerExists` if the node has one so named.

        Only the container this call created is ever removed (by the ID podman
        wrote to ``--cidfile``), never one that held the name already.
        """
        existing = self._existing(name)
        if existing is not None:
            raise ContainerExists(
                f"{self.node.ref}: a container named {name!r} exists already "
                f"(id {existing.id[:12]}, {existing.state}, IP {existing.ip or '-'}); "
                "choose another name, or remove that one first"
            )
        cid_dir = self.node.podman_dir / "cid"
        cid_dir.mkdir(parents=True, exist_ok=True)
        cidfile = cid_dir / f"{name}.{os.getpid()}.{time.monotonic_ns()}"
        args = ["run", "-d", "--name", name, "--network", network, "--cidfile", str(cidfile)]
        args += ["--cgroup-parent", cgroup_parent(self.node)]
        for k, v in (labels or {}).items():
            args += ["--label", f"{k}={v}"]
        args += [*extra_args, image, *(command if command else default_command(name))]
        try:
            self.run(args)
        except PodmanError as e:
            # podman writes the ID once it created the container: then the start
            # failed (e.g. CNI ADD refused) and the "created" container it left
            # would hold the name. No file: nothing was created (e.g. the name
            # was taken meanwhile), so nothing is removed.
            cid = _read_cid(cidfile)
            if cid:
                self.run(["rm", "-f", "-t", "0", "--ignore", cid], check=False)
            if "already in use" in str(e):
                raise ContainerExists(
                    f"{self.node.ref}: a container named {name!r} exists already; "
                    "choose another name, or remove that one first"
                ) from None
            raise
        finally:
            cidfile.unlink(missing_ok=True)
        return self.inspect(name)

    def exists(self, name: str) -> bool:
        """Whether the node's podman has a container ``name`` (running or not)."""
        if not self.configured():
            return False
        probe = subprocess.run(
            self.argv(["container", "exists", name]),
            env=self.env,
            capture_output=True,
            timeout=PODMAN_TIMEOUT,
            check=False,
        )
        return probe.returncode == 0  # 1: no such container

    def _existing(self, name: str) -> Container | None:
        if not self.exists(name):
            return None
        try:
            return self.inspect(name)
        except PodmanError:
            return None  # removed meanwhile

    def inspect(self, name: str) -> Container:
        out = self.run(["container", "inspect", name])
        return self._container(json.loads(out)[0])

    def containers(self) -> list[Container]:
        """Every container in this node's storage, running or not."""
        if not self.configured():
            return []
        ids = self.run(["ps", "-aq", "--no-trunc"]).split()
        if not ids:
            return []
        out = self.run(["container", "inspect", *ids])
        return [self._container(c) for c in json.loads(out)]

    def remove(self, name: str) -> None:
        self.run(["rm", "-f", "-t", "0", name])

    def remove_all(self) -> list[Container]:
        """Remove every container of the node; returns what was there."""
        found = self.containers()
        if found:
            # Pods first (`podman pod create`): their infra containers go only with the pod.
            self.run(["pod", "rm", "-a", "-f", "-t", "0"], check=False)
            self.run(["rm", "-af", "-t", "0"])
        return found

    def exec_argv(self, container: str, command: Sequence[str], tty: bool = False) -> list[str]:
        return self.argv(["exec", *(["-it"] if tty else ["-i"]), container, *command])

    def _container(self, data: Mapping[str, Any]) -> Container:
        settings = data.get("NetworkSettings") or {}
        networks = settings.get("Networks") or {}
        ip = next(
            (
                ip
                for n in (NETWORK, CHAINED_NETWORK, BRIDGE_NETWORK)
                if (ip := (networks.get(n) or {}).get("IPAddress"))
            ),
            None,
        )
        return Container(
            name=str(data.get("Name", "")).lstrip("/"),
            id=str(data.get("Id", "")),
            node=self.node.ref,
            ip=ip,
            state=str((data.get("State") or {}).get("Status", "unknown")),
            labels=dict((data.get("Config") or {}).get("Labels") or {}),
            netns_path=settings.get("SandboxKey") or None,
        )


def _read_cid(path: Path) -> str | None:
    try:
        cid = path.read_text().strip()
    except FileNotFoundError:
        return None
    return cid if cid and all(ch in "0123456789abcdef" for ch in cid) else None
