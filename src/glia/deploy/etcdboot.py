"""``glia etcd bootstrap``: one cluster's etcd CA, client certificates, users and roles.

Called by :mod:`glia.cli.deploy`. Two halves, so the first runs offline:

- :func:`issue_certs` writes into a directory a CA (``ca.crt``/``ca.key``,
  reused when present: put an existing etcd CA there to sign with it), a
  client certificate per etcd user of :func:`glia.kvstore.rbac.cluster_users`
  (``<user>.crt``/``<user>.key``, CN = user: an agent per node, the operator,
  the CLI path, the read-only remote user, the administrator ``glia``) and one
  for etcd's ``root``; optionally the etcd server's certificate. Files that
  still fit are kept (:mod:`glia.lab.pki`), so a second run changes nothing.
- :func:`apply_auth` creates the users and roles in a running etcd with root
  credentials, through ``etcdctl`` (as the lab does), and enables auth. Every
  step tolerates "already exists", so it may run again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from glia.kvstore.rbac import ROOT_USER as ROOT_USER  # re-exported for the CLI
from glia.kvstore.rbac import RoleSpec, bootstrap_commands, cluster_users
from glia.lab.pki import CertPaths, issue, make_ca
from glia.model.cluster import validate_name

CA_NAME = "ca"
SERVER_NAME = "etcd-server"


class BootstrapError(RuntimeError):
    """A step of the bootstrap failed; ``str()`` says which and why."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """An etcd client identity: CA to trust, certificate and key (CN = user)."""

    ca: Path  # CA certificate the etcd server's certificate chains to
    cert: Path  # client certificate
    key: Path  # its private key


def users_of(cluster: str, nodes: Sequence[str]) -> dict[str, RoleSpec]:
    """Every glia user of ``cluster``'s etcd with its role; ValueError names a bad name."""
    validate_name("cluster", cluster)
    if not nodes:
        raise ValueError("nodes: at least one node is needed")
    dupes = sorted({n for n in nodes if list(nodes).count(n) > 1})
    if dupes:
        raise ValueError(f"nodes: {', '.join(dupes)} given more than once")
    return cluster_users(cluster, list(nodes))


def issue_certs(
    out: Path,
    users: Mapping[str, RoleSpec],
    *,
    server_ips: Sequence[str] = (),
    server_dns: Sequence[str] = (),
) -> dict[str, CertPaths]:
    """Write the CA and a client certificate per user (and root) into ``out``.

    With ``server_ips``/``server_dns``, also the etcd server's certificate
    (``etcd-server.crt``, serverAuth and clientAuth for peers). Returns
    name -> paths, the CA under ``ca``.
    """
    out.mkdir(parents=True, exist_ok=True)
    ca = make_ca(out, CA_NAME)
    paths = {CA_NAME: ca}
    for user in [ROOT_USER, *users]:
        paths[user] = issue(ca, out, user, cn=user)
    if server_ips or server_dns:
        paths[SERVER_NAME] = issue(
            ca,
            out,
            SERVER_NAME,
            cn=SERVER_NAME,
            ips=server_ips,
            dns=server_dns,
            server=True,
            client=True,
        )
    return paths


def auth_commands(users: Mapping[str, RoleSpec]) -> list[list[str]]:
    """The etcdctl calls, in order: root, every role and user, then ``auth enable``."""
    return bootstrap_commands(dict(users))


def _tolerated(output: str) -> bool:
    # What etcd answers when a step was done by an earlier run.
    out = output.lower()
    return "already exists" in out or "already granted" in out or "already enabled" in out


def apply_auth(
    endpoints: Sequence[str],
    root: Credentials,
    users: Mapping[str, RoleSpec],
    *,
    etcdctl: str = "etcdctl",
    timeout: float = 15.0,
) -> list[str]:
    """Create ``users`` and their roles in the etcd at ``endpoints``; enable auth.

    ``root``: credentials of etcd's root user (before auth is enabled any
    certificate the server trusts will do). Returns the steps run, as text.
    """
    binary = shutil.which(etcdctl)
    if binary is None:
        raise BootstrapError(f"etcdctl not found ({etcdctl!r}): install etcd-client")
    for what, path in (("CA", root.ca), ("certificate", root.cert), ("key", root.key)):
        if not path.is_file():
            raise BootstrapError(f"root {what} {path}: no such file")
    base = [
        binary,
        f"--endpoints={','.join(endpoints)}",
        f"--cacert={root.ca}",
        f"--cert={root.cert}",
        f"--key={root.key}",
        "--dial-timeout=3s",
        "--command-timeout=5s",
    ]
    env = {**os.environ, "ETCDCTL_API": "3"}

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*base, *args], capture_output=True, text=True, timeout=timeout, env=env
            )
        except subprocess.TimeoutExpired:
            raise BootstrapError(
                f"etcdctl {' '.join(args)}: no answer in {timeout:.0f} s"
            ) from None

    # First whether etcd answers at all: otherwise every step would wait for it.
    health = run(["endpoint", "health"])
    if health.returncode != 0:
        raise BootstrapError(f"etcd at {','.join(endpoints)} does not answer: {_message(health)}")
    done: list[str] = []
    for args in auth_commands(users):
        r = run(args)
        if r.returncode != 0 and not _tolerated(r.stderr + r.stdout):
            raise BootstrapError(f"etcdctl {' '.join(args)}: {_message(r)}")
        done.append(" ".join(args))
    return done


def _message(r: subprocess.CompletedProcess[str]) -> str:
    # etcdctl logs JSON warnings before its own message: keep the message.
    lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
    plain = [ln for ln in lines if not ln.lstrip().startswith("{")]
    if plain:
        return "; ".join(ln.strip() for ln in plain)
    return lines[-1].strip() if lines else f"exit status {r.returncode}"
