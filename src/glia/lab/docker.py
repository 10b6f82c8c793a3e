"""A dockerd per lab node, on demand, with glia as its network and IPAM driver.

Used by the Docker e2e tests (tests/e2e/test_docker.py) and by lab teardown
(:func:`stop_all`); docs/docker.md tells how. Nothing starts a dockerd unless
asked: :meth:`NodeDocker.start`.

Each node's dockerd runs like a separate host's: in the node's network
namespace (``nsenter --net``), with data root, exec root, pid file, API socket
and log under ``<node>/docker/``, no bridge, no iptables, its containers below
the node's cgroup. Plugin discovery is per node: dockerd reads plugin specs
only from the fixed ``/etc/docker/plugins`` (and sockets from
``/run/docker/plugins``), so it runs in a private mount namespace
(``unshare --mount``, kept by a holder process so a restarted dockerd finds
its containers' namespaces again) where the node's own ``<node>/docker/etc``
is bind-mounted on ``/etc/docker``; its ``plugins/glia.spec`` names the node
agent's driver socket, and whose ``/run/docker`` and ``/run/containerd`` are
its own (:func:`holder_script`). No host path is written, and another dockerd
on the machine never sees glia. Its ``daemon.json`` hands the node agent's DNS
to its containers (:mod:`glia.docker.daemon_config`). The binaries are
Debian's ``docker.io`` ones, named by full path (``/usr/local/bin`` may hold an
unrelated docker client).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from glia.agent.client import AgentClient, AgentClientError
from glia.docker.daemon_config import daemon_dns
from glia.lab import netns
from glia.lab.podman import cgroup_parent
from glia.lab.topology import IMAGE, NodeSpec, Topology

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"
NETWORK = "glia"  # the docker network on every node: -d glia --ipam-driver glia --subnet <pod CIDR>
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
CLI_TIMEOUT = 60.0


class DockerError(RuntimeError):
    """A docker command or dockerd on a lab node failed."""


def dockerd_args(node: NodeSpec, cgroup_parent: str) -> list[str]:
    d = node.docker_dir
    return [
        DOCKERD,
        f"--data-root={d / 'data'}",
        f"--exec-root={d / 'exec'}",
        f"--pidfile={d / 'dockerd.pid'}",
        f"--host=unix://{d / 'docker.sock'}",
        f"--config-file={d / 'daemon.json'}",
        f"--cgroup-parent={cgroup_parent}",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--userland-proxy=false",
        "--live-restore",  # a restarted dockerd keeps its containers (and endpoints)
    ]


def holder_argv(node: NodeSpec) -> list[str]:
    """The process that keeps the node's docker mount namespace: a private one whose
    /etc/docker is the node's (its plugins dir names the node's agent). dockerd
    joins it, also after a restart: the container namespaces dockerd bind-mounts
    under its exec root live in it, and a restarted dockerd (live restore) needs them."""
    return [
        "nsenter",
        f"--net={netns.NETNS_DIR / node.netns}",
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        holder_script(node),
    ]


# /run in the holder: a tmpfs with every entry of the host's /run bound back
# (symlinks copied) except dockerd's and containerd's fixed directories, which
# start empty there. dockerd creates /run/docker/plugins and containerd its shim
# sockets' /run/containerd/s whatever their flags say; so they live and die with
# the namespace, and no host path is created (a mount over the host's own
# /run/docker would need that directory on the host). The tmpfs is filled on
# /tmp (outside /run, where the lab's own directories may be) and then moved
# onto /run. A restarted dockerd joins the same namespace and finds the shims'
# sockets again (live restore).
PRIVATE_RUN = ("docker", "containerd")
RUN_FS = "glia-docker-run"  # the tmpfs' source name in mountinfo
STAGE = "/tmp"


def holder_script(node: NodeSpec) -> str:
    etc = _quote(str(node.docker_dir / "etc"))
    skip = "|".join(PRIVATE_RUN)
    return "\n".join(
        [
            "set -e",
            f"mount --bind {etc} /etc/docker",
            f"mount -t tmpfs -o mode=0755 {RUN_FS} {STAGE}",
            "for e in /run/* /run/.[!.]*; do",
            '  [ -e "$e" ] || [ -L "$e" ] || continue',
            '  n="${e##*/}"',
            f'  case "$n" in {skip}) continue ;; esac',
            f'  if [ -L "$e" ]; then cp -P "$e" "{STAGE}/$n"',
            f'  elif [ -d "$e" ]; then mkdir "{STAGE}/$n" && mount --rbind "$e" "{STAGE}/$n"',
            f'  else : > "{STAGE}/$n" && mount --bind "$e" "{STAGE}/$n"; fi',
            "done",
            f"mount --move {STAGE} /run",
            "exec sleep infinity",
        ]
    )


def daemon_json(node: NodeSpec) -> str:
    """The node's daemon.json: its containers' DNS is the node agent's (docs/docker.md)."""
    return json.dumps(daemon_dns(str(node.ip)), indent=2) + "\n"


def launch_argv(node: NodeSpec, cgroup_parent: str, holder: int) -> list[str]:
    """dockerd in the node's network namespace and the holder's mount namespace."""
    return [
        "nsenter",
        f"--net={netns.NETNS_DIR / node.netns}",
        f"--mount=/proc/{holder}/ns/mnt",
        *dockerd_args(node, cgroup_parent),
    ]


def plugin_spec(node: NodeSpec) -> str:
    return f"unix://{node.docker_plugin_socket}\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class NodeDocker:
    def __init__(self, node: NodeSpec) -> None:
        self.node = node
        self.dir = node.docker_dir
        self.socket = self.dir / "docker.sock"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_CONFIG": str(self.dir / "cli"), "DOCKER_HOST": ""}

    def cli(self, args: Sequence[str], *, stdin: bytes | None = None, check: bool = True) -> str:
        argv = [DOCKER, "-H", f"unix://{self.socket}", *args]
        try:
            proc = subprocess.run(
                argv, input=stdin, capture_output=True, env=self.env(), timeout=CLI_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise DockerError(
                f"{self.node.ref}: docker {' '.join(args)[:200]}: timed out"
            ) from None
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise DockerError(f"{self.node.ref}: docker {' '.join(args)[:200]}: {err}")
        return proc.stdout.decode(errors="replace")

    def pid(self) -> int | None:
        return _alive(self.dir / "dockerd.pid")

    def holder_pid(self) -> int | None:
        """The mount namespace holder's pid if it is running."""
        return _alive(self.dir / "mountns.pid")

    def holder(self) -> int:
        """The mount namespace holder's pid, started if it is not running."""
        pid = _alive(self.dir / "mountns.pid")
        if pid is not None:
            return pid
        (self.dir / "etc" / "plugins").mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            holder_argv(self.node),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        mine = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise DockerError(f"{self.node.ref}: mount namespace: {err.strip()[:300]}")
            try:
                ready = (
                    os.readlink(f"/proc/{proc.pid}/ns/mnt") != mine
                    and b"sleep" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                )
            except OSError:
                ready = False
            if ready:
                if proc.stderr:
                    proc.stderr.close()
                (self.dir / "mountns.pid").write_text(f"{proc.pid}\n")
                return proc.pid
            time.sleep(0.05)
        raise DockerError(f"{self.node.ref}: the docker mount namespace did not come up")

    def stop_holder(self) -> bool:
        pid = _alive(self.dir / "mountns.pid")
        try:
            ours = pid is not None and b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            ours = False
        if pid is None or not ours:
            return False
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return True

    def running(self) -> bool:
        if self.pid() is None or not self.socket.exists():
            return False
        return self.cli(["version", "--format", "{{.Server.Version}}"], check=False).strip() != ""

    def start(self, rootfs: Path) -> None:
        """Start dockerd (if it is not running), import the lab image, create the network."""
        if not self.running():
            self._launch(cgroup_parent(self.node))
        if not self.cli(["image", "ls", "-q", IMAGE]).strip():
            tar = subprocess.run(
                ["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True
            )
            self.cli(["import", "-", IMAGE], stdin=tar.stdout)
        names = self.cli(["network", "ls", "--format", "{{.Name}}"]).split()
        if NETWORK not in names:
            # --subnet as docs/docker.md says: dockerd checks a pool it did not name
            # against the node's routes, where every pod has one (and `--ip` needs it).
            create = ["network", "create", "-d", "glia", "--ipam-driver", "glia"]
            self.cli([*create, "--subnet", self.pod_cidr(), NETWORK])

    def pod_cidr(self) -> str:
        """The node's pod CIDR, as its agent reports it (``glia status``)."""
        try:
            node = AgentClient(str(self.node.socket), timeout=10).status().get("node") or {}
        except AgentClientError as e:
            raise DockerError(f"{self.node.ref}: the agent does not answer: {e}") from None
        cidr = node.get("pod_cidr") if isinstance(node, dict) else None
        if not isinstance(cidr, str) or not cidr:
            raise DockerError(f"{self.node.ref}: the agent reports no pod CIDR yet")
        return cidr

    def _launch(self, cgroup_parent: str) -> None:
        (self.dir / "etc" / "plugins").mkdir(parents=True, exist_ok=True)
        (self.dir / "cli").mkdir(parents=True, exist_ok=True)
        (self.dir / "etc" / "plugins" / "glia.spec").write_text(plugin_spec(self.node))
        (self.dir / "daemon.json").write_text(daemon_json(self.node))
        self.socket.unlink(missing_ok=True)
        log = open(self.dir / "dockerd.log", "ab")  # noqa: SIM115 - handed to dockerd
        try:
            proc = subprocess.Popen(
                launch_argv(self.node, cgroup_parent, self.holder()),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DockerError(
                    f"{self.node.ref}: dockerd exited {proc.returncode}: {self._tail()}"
                )
            if self.socket.exists() and self.running():
                return
            time.sleep(0.2)
        raise DockerError(
            f"{self.node.ref}: dockerd not up after {START_TIMEOUT:g} s: {self._tail()}"
        )

    def _tail(self) -> str:
        try:
            return (self.dir / "dockerd.log").read_text(errors="replace")[-800:]
        except OSError:
            return "(no log)"

    def remove_all(self) -> list[str]:
        """Remove every container (their endpoints go through the driver); their names."""
        names = self.cli(["ps", "-a", "--format", "{{.Names}}"]).split()
        if names:
            self.cli(["rm", "-f", *names])
        return names

    def stop(self) -> bool:
        """SIGTERM dockerd and wait for it (its containers stay: live restore); False if
        it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if _gone(pid):
                return True
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        _gone(pid)
        return True


def stop_all(
    topo: Topology, problems: list[str], note: Callable[[str], None]
) -> tuple[list[str], list[str]]:
    """Lab teardown: every node's docker containers removed (``<node>/<name>``), then
    its dockerd stopped (``dockerd <node>``): the two lists."""
    containers: list[str] = []
    daemons: list[str] = []
    for node in topo.nodes:
        dk = NodeDocker(node)
        if dk.pid() is None and _alive(dk.dir / "mountns.pid") is None:
            continue
        try:
            if dk.running():
                gone = dk.remove_all()
                if gone:
                    note(f"{node.ref}: removed docker containers {', '.join(gone)}")
                containers += [f"{node.ref}/{n}" for n in gone]
        except DockerError as e:
            problems.append(str(e))
        if dk.stop():
            daemons.append(f"dockerd {node.ref}")
        if dk.stop_holder():
            daemons.append(f"docker mount namespace {node.ref}")
    return containers, daemons


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _gone(pid: int) -> bool:
    """Exited: reaped (when this process started it) or a zombie of another parent."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
