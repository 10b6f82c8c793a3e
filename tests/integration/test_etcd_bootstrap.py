"""``glia etcd bootstrap`` against a real etcd: users and roles that keep each writer to its keys.

The etcd is started the way tests/integration/conftest.py starts one (TLS,
client-certificate auth) but left without users: the bootstrap creates them,
with the CA it wrote offline, and enables auth. Then each certificate is used
with etcdctl as a deployment would use it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from glia.cli.main import app
from glia.kvstore import keys
from glia.lab.etcd import EtcdError, EtcdServer, free_tcp_port
from glia.lab.pki import CertPaths, issue

CLUSTER = "c1"
NODES = "n1,n2"


def _invoke(out: Path, *extra: str) -> Result:
    args = ["etcd", "bootstrap", "--cluster", CLUSTER, "--nodes", NODES, "--out", str(out)]
    return CliRunner().invoke(app, [*args, *extra])


def _bootstrap(out: Path, *extra: str) -> dict[str, object]:
    r = _invoke(out, *extra, "-o", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)  # type: ignore[no-any-return]


@pytest.fixture
def bare_etcd() -> Iterator[tuple[EtcdServer, Path]]:
    """A TLS etcd trusting the bootstrap's CA, with no users and auth off."""
    base = Path(tempfile.mkdtemp(prefix="glia-test-etcdboot-"))
    out = base / "pki-out"
    _bootstrap(out)  # offline: the CA the etcd will trust
    srv: EtcdServer | None = None
    try:
        last: EtcdError | None = None
        for _ in range(3):
            client_port, peer_port = free_tcp_port(), free_tcp_port()
            if client_port == peer_port:
                continue
            srv = EtcdServer(
                "boot",
                base / "glia-etcd-boot",
                ("127.0.0.1", client_port),
                peer_port,
                base / "pki-server",
                ca=CertPaths(out / "ca.crt", out / "ca.key"),
            )
            try:
                srv.start()
                srv.wait_ready(timeout=30)
                break
            except EtcdError as e:
                srv.cleanup()
                srv, last = None, e
        if srv is None:
            raise RuntimeError(f"could not start a test etcd: {last}")
        yield srv, out
    finally:
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _ctl(srv: EtcdServer, out: Path, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        "etcdctl",
        f"--endpoints={srv.client_url}",
        f"--cacert={out / 'ca.crt'}",
        f"--cert={out / f'{user}.crt'}",
        f"--key={out / f'{user}.key'}",
        "--dial-timeout=3s",
        "--command-timeout=5s",
        *args,
    ]
    env = {**os.environ, "ETCDCTL_API": "3"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, env=env)


def _can_write(srv: EtcdServer, out: Path, user: str, key: str) -> bool:
    r = _ctl(srv, out, user, "put", key, "x")
    if r.returncode == 0:
        return True
    assert "permission denied" in r.stderr, r.stderr  # not some other failure
    return False


def test_bootstrap_keeps_each_writer_to_its_keys_and_runs_twice(
    bare_etcd: tuple[EtcdServer, Path],
) -> None:
    srv, out = bare_etcd
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    data = _bootstrap(out, "--endpoint", srv.client_url)
    assert data["etcd"]["steps"][-1] == "auth enable"  # type: ignore[index]

    agent1 = "glia-agent-n1"
    n1_ep = keys.endpoints(CLUSTER, "n1") + "default/web"
    assert _can_write(srv, out, agent1, keys.node(CLUSTER, "n1"))
    assert _can_write(srv, out, agent1, n1_ep)
    assert not _can_write(srv, out, agent1, keys.node(CLUSTER, "n2"))
    assert not _can_write(srv, out, agent1, keys.endpoints(CLUSTER, "n2") + "default/web")
    assert not _can_write(srv, out, agent1, keys.cluster_info(CLUSTER))  # the operator's
    assert not _can_write(srv, out, agent1, keys.podcidrs(CLUSTER) + "nodes/n1")  # the operator's
    assert _can_write(srv, out, "glia-agent-n2", keys.node(CLUSTER, "n2"))
    assert _can_write(srv, out, "glia-operator", keys.cluster_info(CLUSTER))
    assert not _can_write(srv, out, "glia-operator", keys.node(CLUSTER, "n1"))
    assert not _can_write(srv, out, "glia-remote", keys.node(CLUSTER, "n1"))
    r = _ctl(srv, out, "glia-remote", "get", keys.node(CLUSTER, "n1"), "--print-value-only")
    assert (r.returncode, r.stdout.strip()) == (0, "x")

    # Auth is on: a certificate of the same CA whose CN is no etcd user gets nothing.
    stranger = issue(
        CertPaths(out / "ca.crt", out / "ca.key"), out, "glia-agent-n9", cn="glia-agent-n9"
    )
    assert not _can_write(srv, out, "glia-agent-n9", keys.node(CLUSTER, "n9"))
    stranger.cert.unlink()
    stranger.key.unlink()

    # The second run changes nothing and fails nowhere.
    roles = _ctl(srv, out, "root", "role", "get", agent1).stdout
    users = _ctl(srv, out, "root", "user", "list").stdout
    _bootstrap(out, "--endpoint", srv.client_url)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _ctl(srv, out, "root", "role", "get", agent1).stdout == roles
    assert _ctl(srv, out, "root", "user", "list").stdout == users
    assert set(users.split()) == {
        "root",
        "glia",
        "glia-remote",
        "glia-operator",
        "glia-config",
        agent1,
        "glia-agent-n2",
    }
    assert _can_write(srv, out, agent1, keys.node(CLUSTER, "n1"))
    assert not _can_write(srv, out, agent1, keys.node(CLUSTER, "n2"))


def test_a_wrong_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    port = free_tcp_port()
    r = _invoke(tmp_path, "--endpoint", f"https://127.0.0.1:{port}")
    assert r.exit_code == 1
    want = f"glia etcd bootstrap: etcd at https://127.0.0.1:{port} does not answer: "
    assert r.output.startswith(want), r.output
