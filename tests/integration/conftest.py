"""etcd fixtures for integration tests: a real etcd with TLS, client-cert auth and RBAC.

``etcd``: one server for the whole session, on 127.0.0.1 with free ports, in a
``glia-test-*`` temp dir (users ``root``, ``glia`` read-write on ``glia/``,
``glia-remote`` read-only on ``glia/state/``). Tests share it, so each one
works under its own key prefix (``etcd_prefix``).

``etcd_factory``: a fresh server of the same kind for tests that stop,
kill or restart etcd; ``etcd_cluster_factory(n)``: an n-member cluster of
them. Both are removed after the test.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from glia.lab.etcd import EtcdError, EtcdMember, EtcdServer, free_tcp_port


def _start_etcd(base: Path, name: str) -> EtcdServer:
    """Start and bootstrap an etcd; new ports if the picked ones were taken meanwhile."""
    last: EtcdError | None = None
    for _ in range(3):
        client_port = free_tcp_port()
        peer_port = free_tcp_port()
        if peer_port == client_port:
            continue
        srv = EtcdServer(
            name, base / f"glia-etcd-{name}", ("127.0.0.1", client_port), peer_port, base / "pki"
        )
        try:
            srv.start()
            srv.wait_ready(timeout=30)
            srv.bootstrap_auth()
            return srv
        except EtcdError as e:
            srv.cleanup()
            last = e
    raise RuntimeError(f"could not start a test etcd: {last}")


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    base = Path(tempfile.mkdtemp(prefix="glia-test-etcd-"))
    srv: EtcdServer | None = None
    try:
        srv = _start_etcd(base, "session")
        yield srv
    finally:
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def etcd_factory() -> Iterator[Callable[[], EtcdServer]]:
    base = Path(tempfile.mkdtemp(prefix="glia-test-etcd-"))
    servers: list[EtcdServer] = []

    def make() -> EtcdServer:
        srv = _start_etcd(base, f"own{len(servers)}")
        servers.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in servers:
            srv.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _start_cluster(base: Path, n: int, name: str) -> list[EtcdServer]:
    ports: set[int] = set()
    while len(ports) < 2 * n:
        ports.add(free_tcp_port())
    it = iter(sorted(ports))
    members = [EtcdMember(f"{name}-m{i}", "127.0.0.1", next(it), next(it)) for i in range(n)]
    servers = [
        EtcdServer(
            m.name,
            base / f"glia-etcd-{m.name}",
            (m.ip, m.client_port),
            m.peer_port,
            base / "pki",
            members=members,
            cluster_token=f"glia-{name}",
        )
        for m in members
    ]
    try:
        for srv in servers:
            srv.start()
        for srv in servers:
            srv.wait_ready(timeout=30)
        servers[0].bootstrap_auth()
    except BaseException:
        for srv in servers:
            srv.cleanup()
        raise
    return servers


@pytest.fixture
def etcd_cluster_factory() -> Iterator[Callable[[int], list[EtcdServer]]]:
    base = Path(tempfile.mkdtemp(prefix="glia-test-etcd-"))
    servers: list[EtcdServer] = []

    def make(n: int) -> list[EtcdServer]:
        started = _start_cluster(base, n, f"c{len(servers)}")
        servers.extend(started)
        return started

    try:
        yield make
    finally:
        for srv in servers:
            srv.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix of this test's own, writable by ``glia`` and readable by ``glia-remote``."""
    return f"glia/state/test-{uuid.uuid4().hex[:12]}/"
