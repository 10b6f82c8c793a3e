"""A real etcd server (Debian's 3.4) for the lab and the integration tests.

Called by the lab (one etcd per cluster, inside the cluster's etcd network
namespace, optionally three members) and by ``tests/integration/conftest.py``
(one etcd on 127.0.0.1). TLS on client and peer URLs, client-certificate auth
(the certificate's CN is the etcd user), RBAC set up by
:meth:`EtcdServer.bootstrap_auth` with the users and roles of
:mod:`glia.kvstore.rbac` (one user per writer: an agent per node, the
operator, the CLI path, the read-only remote user; root for bootstrap).

The process is started by PID (``nsenter --net=/run/netns/NS etcd ...`` when
it lives in a namespace: nsenter execs etcd, so the PID is etcd's) and ended by
PID. A PID file next to the data dir lets a later run end an etcd that a
crashed run left behind. Data dirs must be named ``glia*``: :meth:`cleanup` and
a fresh :meth:`start` delete them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from glia.kvstore.config import EtcdConfig
from glia.kvstore.rbac import RO_USER as RO_USER  # re-exported for the lab and tests
from glia.kvstore.rbac import ROLE_RO, ROLE_RW, ROOT_USER, RoleSpec, bootstrap_commands
from glia.kvstore.rbac import RW_USER as RW_USER
from glia.lab.pki import CertPaths, issue, make_ca

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class EtcdError(RuntimeError):
    """Starting, stopping or configuring the etcd process failed."""


DEFAULT_USERS: Mapping[str, RoleSpec] = {RW_USER: ROLE_RW, RO_USER: ROLE_RO}
# One transaction of `glia apply` holds two operations per Service (its
# config and its ClusterIP reservation) and as many compares; etcd's default
# of 128 would cap a file at ~64 Services. 1,000 Services need 2,000.
MAX_TXN_OPS = 10000
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # etcd's default is 1.5 MiB


@dataclass(frozen=True, slots=True)
class EtcdMember:
    """Where one member of an etcd cluster listens."""

    name: str
    ip: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return f"https://{_host(self.ip)}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{_host(self.ip)}:{self.peer_port}"


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for tests on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """One etcd member: its process, certificates, and auth bootstrap."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        client_addr: tuple[str, int],
        peer_port: int,
        pki_dir: Path,
        *,
        netns: str | None = None,
        log_file: Path | None = None,
        members: Sequence[EtcdMember] = (),
        cluster_token: str | None = None,
        ca: CertPaths | None = None,
        listen_localhost: bool = True,
        auto_compaction_retention: str = "0",
        etcd_bin: str = "etcd",
        etcdctl_bin: str = "etcdctl",
    ) -> None:
        """``members``: the whole cluster including this one (empty: a single member).

        ``listen_localhost`` also serves clients on 127.0.0.1 inside the
        namespace, where :meth:`etcdctl` bootstraps auth.
        """
        if not _NAME_RE.match(name):
            raise ValueError(f"etcd member name {name!r}: letters, digits, '.', '_', '-' only")
        if not data_dir.name.startswith("glia"):
            raise ValueError(f"etcd data dir {data_dir} must be named glia* (it gets deleted)")
        self.name = name
        self.data_dir = data_dir
        self.ip, self.client_port = client_addr
        self.peer_port = peer_port
        self.pki_dir = pki_dir
        self.netns = netns
        self.log_file = log_file or data_dir.with_name(f"{data_dir.name}.log")
        self.pid_file = data_dir.with_name(f"{data_dir.name}.pid")
        me = EtcdMember(name, self.ip, self.client_port, peer_port)
        self.members = tuple(members) or (me,)
        if me not in self.members:
            raise ValueError(f"etcd members {self.members} do not include this member {me}")
        self.cluster_token = cluster_token or f"glia-{name}"
        self.listen_localhost = listen_localhost and self.ip != "127.0.0.1"
        self.auto_compaction_retention = auto_compaction_retention
        self.etcd_bin = etcd_bin
        self.etcdctl_bin = etcdctl_bin
        self._ca = ca
        self.proc: subprocess.Popen[bytes] | None = None

    # --- certificates ------------------------------------------------------

    @property
    def ca(self) -> CertPaths:
        if self._ca is None:
            self._ca = make_ca(self.pki_dir)
        return self._ca

    def server_cert(self) -> CertPaths:
        # Serves clients and peers, and is the client cert towards peers.
        return issue(
            self.ca,
            self.pki_dir,
            f"server-{self.name}",
            cn=self.name,
            ips=sorted({self.ip, "127.0.0.1"}),
            dns=[self.name, "localhost"],
            server=True,
            client=True,
        )

    def user_cert(self, user: str) -> CertPaths:
        """The client certificate of etcd user ``user`` (CN = user)."""
        if not _NAME_RE.match(user):
            raise ValueError(f"etcd user name {user!r}: letters, digits, '.', '_', '-' only")
        return issue(self.ca, self.pki_dir, f"user-{user}", cn=user)

    def client_config(self, user: str = RW_USER) -> EtcdConfig:
        cert = self.user_cert(user)
        urls = [m.client_url for m in self.members]
        mine = EtcdMember(self.name, self.ip, self.client_port, self.peer_port).client_url
        urls.sort(key=lambda u: u != mine)
        return EtcdConfig(
            endpoints=urls,
            ca_file=str(self.ca.cert),
            cert_file=str(cert.cert),
            key_file=str(cert.key),
        )

    # --- process -----------------------------------------------------------

    @property
    def client_url(self) -> str:
        return f"https://{_host(self.ip)}:{self.client_port}"

    @property
    def local_client_url(self) -> str:
        """The URL reachable from inside the member's namespace, for etcdctl."""
        if self.listen_localhost:
            return f"https://127.0.0.1:{self.client_port}"
        return self.client_url

    def _ns(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []

    def command(self) -> list[str]:
        cert = self.server_cert()
        me = next(m for m in self.members if m.name == self.name)
        listen = [self.client_url] + ([self.local_client_url] if self.listen_localhost else [])
        return [
            *self._ns(),
            self.etcd_bin,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={','.join(listen)}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={me.peer_url}",
            f"--initial-advertise-peer-urls={me.peer_url}",
            "--initial-cluster=" + ",".join(f"{m.name}={m.peer_url}" for m in self.members),
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self.cluster_token}",
            f"--cert-file={cert.cert}",
            f"--key-file={cert.key}",
            f"--trusted-ca-file={self.ca.cert}",
            "--client-cert-auth",
            f"--peer-cert-file={cert.cert}",
            f"--peer-key-file={cert.key}",
            f"--peer-trusted-ca-file={self.ca.cert}",
            "--peer-client-cert-auth",
            f"--auto-compaction-retention={self.auto_compaction_retention}",
            "--logger=zap",
            "--log-outputs=stderr",
            "--enable-v2=false",
            f"--max-txn-ops={MAX_TXN_OPS}",
            f"--max-request-bytes={MAX_REQUEST_BYTES}",
        ]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, keep_data: bool = False) -> None:
        """Start etcd; a leftover data dir is wiped unless ``keep_data`` (a restart)."""
        if self.running:
            raise EtcdError(f"etcd {self.name} is already running (pid {self.pid})")
        self._reap_leftover()
        if not keep_data and self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        with open(self.log_file, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                raise EtcdError(f"cannot start etcd {self.name}: {e}") from None
        self.pid_file.write_text(f"{self.proc.pid}\n")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``etcdctl endpoint health`` until it answers or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self.proc is None:
                raise EtcdError(f"etcd {self.name} was not started")
            if self.proc.poll() is not None:
                raise EtcdError(
                    f"etcd {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            r = self.etcdctl("endpoint", "health", check=False, timeout=5.0)
            if r.returncode == 0:
                return
            last = (r.stderr or r.stdout).strip()
            if time.monotonic() >= deadline:
                raise EtcdError(
                    f"etcd {self.name} not ready after {timeout:.0f} s: {last}\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would (for crash tests)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self.pid_file.unlink(missing_ok=True)

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(keep_data=True)
        self.wait_ready(timeout)

    def cleanup(self) -> None:
        """Stop, and delete the data dir (the log file stays)."""
        self.stop()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _reap_leftover(self) -> None:
        """End an etcd a crashed earlier run started on this data dir (from its PID file)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            argv = []
        # Only if that PID is still our etcd: PIDs get reused.
        if f"--data-dir={self.data_dir}".encode() in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    # --- etcdctl and auth --------------------------------------------------

    def etcdctl(
        self, *args: str, user: str = ROOT_USER, check: bool = True, timeout: float = 15.0
    ) -> subprocess.CompletedProcess[str]:
        """Run etcdctl against this member (inside its namespace) as ``user``."""
        cert = self.user_cert(user)
        cmd = [
            *self._ns(),
            self.etcdctl_bin,
            f"--endpoints={self.local_client_url}",
            f"--cacert={self.ca.cert}",
            f"--cert={cert.cert}",
            f"--key={cert.key}",
            "--dial-timeout=2s",
            "--command-timeout=5s",
            *args,
        ]
        env = {**os.environ, "ETCDCTL_API": "3"}
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise EtcdError(f"etcdctl {' '.join(args)} timed out after {timeout:.0f} s") from None
        if check and r.returncode != 0:
            raise EtcdError(f"etcdctl {' '.join(args)} failed: {(r.stderr or r.stdout).strip()}")
        return r

    def _etcdctl_idempotent(self, *args: str) -> None:
        r = self.etcdctl(*args, check=False)
        out = (r.stderr + r.stdout).lower()
        if r.returncode != 0 and "already exists" not in out and "already granted" not in out:
            raise EtcdError(f"etcdctl {' '.join(args)} failed: {(r.stderr or r.stdout).strip()}")

    def bootstrap_auth(self, users: Mapping[str, RoleSpec] | None = None) -> None:
        """Create root, glia (glia-rw), glia-remote (glia-ro) and ``users``; enable auth.

        ``users``: user -> role, e.g. :func:`glia.kvstore.rbac.cluster_users`.

        Safe to run again (on a restarted cluster): existing users, roles and
        grants are kept. Users have no password: etcd authenticates them by the
        CN of their client certificate, issued here.
        """
        wanted = {**DEFAULT_USERS, **(users or {})}
        self.user_cert(ROOT_USER)
        for user in wanted:
            self.user_cert(user)
        *steps, enable = bootstrap_commands(dict(wanted))
        for args in steps:
            self._etcdctl_idempotent(*args)
        self.etcdctl(*enable)
