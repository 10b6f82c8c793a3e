"""Reading and watching the directory of remote cluster files.

:func:`scan` reads the directory once: every cluster file
(:func:`glia.clustermesh.config.cluster_name_of`) is parsed, the TLS files it
names are read and checked (a PEM CA, a PEM certificate, a PEM key that
belongs to it), and each problem is reported against its file; one broken
file never affects the others.

:class:`ConfigWatcher` (the agent, one per process) scans again every
``interval`` seconds and hands what changed to a callback: clusters added
(connect), changed (the file or one of its TLS files differs: new settings,
or a new connection, :func:`~glia.clustermesh.config.needs_reconnect`) and
removed (disconnect and withdraw), plus the current problems. Polling with a
digest of each file's content rather than inotify: it sees changes on any
filesystem (NFS, a Kubernetes secret volume that swaps a symlink, an editor
that renames over the file), needs no watch per TLS file, and costs a few
small reads per cluster per interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from glia.aiotasks import cancel_and_wait
from glia.clustermesh.config import (
    MAX_FILE_BYTES,
    ConfigDiff,
    ConfigError,
    RemoteClusterConfig,
    Scan,
    cluster_name_of,
    parse,
    reconcile,
)

log = logging.getLogger(__name__)

MAX_TLS_FILE_BYTES = 1 << 20  # a CA bundle of a few hundred certificates
DEFAULT_INTERVAL = 1.0

Callback = Callable[[ConfigDiff], Awaitable[None]]


def _read(path: str, limit: int, what: str) -> bytes:
    """At most ``limit`` bytes of the regular file ``path`` (a FIFO would block; refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    return b"".join(chunks)


def _check_tls(cfg: RemoteClusterConfig, ca: bytes, cert: bytes, key: bytes) -> None:
    etcd = cfg.etcd
    try:
        x509.load_pem_x509_certificates(ca)
    except ValueError:
        raise ConfigError(f"ca_file {etcd.ca_file} holds no PEM certificate") from None
    try:
        crt = x509.load_pem_x509_certificate(cert)
    except ValueError:
        raise ConfigError(f"cert_file {etcd.cert_file} is not a PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as e:  # TypeError: the key wants a password
        raise ConfigError(
            f"key_file {etcd.key_file} is not an unencrypted PEM private key ({e})"
        ) from None
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(der, spki) != crt.public_key().public_bytes(der, spki):
        raise ConfigError(f"key_file {etcd.key_file} is not the key of cert_file {etcd.cert_file}")


# cluster -> (digest of its files, what they gave): unchanged files are not
# parsed and their keys not loaded again every interval.
Cache = dict[str, tuple[str, RemoteClusterConfig | str]]


def load_file(path: Path, name: str, cache: Cache | None = None) -> RemoteClusterConfig:
    """Cluster ``name``'s configuration from ``path``, its TLS files read and checked."""
    source = str(path)
    try:
        raw = _read(source, MAX_FILE_BYTES, "cluster file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    cfg = parse(name, text, source, path.parent)  # its errors name the source already
    files = (
        ("ca_file", cfg.etcd.ca_file),
        ("cert_file", cfg.etcd.cert_file),
        ("key_file", cfg.etcd.key_file),
    )
    tls_digest = hashlib.sha256()
    tls: list[bytes] = []
    try:
        for what, file in files:
            assert file is not None  # parse() requires all three
            data = _read(file, MAX_TLS_FILE_BYTES, what)
            tls.append(data)
            for part in (file.encode("utf-8", "surrogateescape"), data):
                tls_digest.update(len(part).to_bytes(8, "big") + part)
        tls_hex = tls_digest.hexdigest()
        hexdigest = hashlib.sha256(raw + tls_hex.encode()).hexdigest()
        known = cache.get(name) if cache is not None else None
        if known is not None and known[0] == hexdigest:
            if isinstance(known[1], str):
                raise ConfigError(known[1])
            return known[1]
        try:
            _check_tls(cfg, tls[0], tls[1], tls[2])
        except ConfigError as e:
            if cache is not None:
                cache[name] = (hexdigest, str(e))
            raise
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    out = dataclasses.replace(cfg, digest=hexdigest, tls_digest=tls_hex)
    if cache is not None:
        cache[name] = (hexdigest, out)
    return out


def scan(directory: str | Path, cache: Cache | None = None) -> Scan:
    """Every cluster file of ``directory``: the usable ones and the problems of the others.

    A directory that does not exist holds no cluster (it may be created
    later); one that cannot be read gives ``listed=False`` (nothing can be
    concluded about its files). ``cache``: see :data:`Cache`; entries of
    clusters whose file is gone are dropped from it.
    """
    d = Path(directory).absolute()
    try:
        entries = sorted(os.listdir(d))
    except FileNotFoundError:
        if cache is not None:
            cache.clear()
        return Scan({})
    except OSError as e:
        why = "not a directory" if e.errno == errno.ENOTDIR else (e.strerror or str(e))
        return Scan({}, {str(d): f"{d}: cannot list the cluster directory: {why}"}, listed=False)
    configs: dict[str, RemoteClusterConfig] = {}
    errors: dict[str, str] = {}
    broken: set[str] = set()
    for entry in entries:
        path = d / entry
        try:
            name = cluster_name_of(entry)
        except ConfigError as e:
            errors[str(path)] = f"{d}/{e}"
            continue
        if name is None:
            continue
        try:
            configs[name] = load_file(path, name, cache)
        except ConfigError as e:
            errors[str(path)] = str(e)
            broken.add(name)
    if cache is not None:
        for gone in [n for n in cache if n not in configs and n not in broken]:
            del cache[gone]
    return Scan(configs, errors, frozenset(broken))


class ConfigWatcher:
    """Watches a cluster directory and reports each change to ``on_change`` once.

    The first poll (:meth:`start`) always calls ``on_change``, with every
    usable cluster as added. Later polls call it only when something
    changed. ``on_change`` runs in the watcher's task and should return
    quickly (start connections in the background); an exception it raises is
    logged and the change is not delivered again.
    """

    def __init__(
        self, directory: str | Path, on_change: Callback, interval: float = DEFAULT_INTERVAL
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.directory = Path(directory)
        self.interval = interval
        self._on_change = on_change
        self._cache: Cache = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._first = True
        self.configs: dict[str, RemoteClusterConfig] = {}  # in use, by cluster
        self.errors: dict[str, str] = {}  # current problems, path -> message
        self.polls = 0

    async def start(self) -> None:
        """Scan once, deliver the initial configuration, then poll in the background."""
        await self.poll()
        self._task = asyncio.create_task(self._loop(), name=f"clustermesh-config {self.directory}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def poll(self) -> ConfigDiff:
        """Scan now (also the background loop's step); returns what changed."""
        async with self._lock:
            result = await asyncio.to_thread(scan, self.directory, self._cache)
            self.configs, diff = reconcile(self.configs, result, self.errors)
            for path, why in diff.errors.items():
                if self.errors.get(path) != why:  # each problem once, not every interval
                    log.warning("clustermesh config: %s", why)
            self.errors = diff.errors
            self.polls += 1
            first, self._first = self._first, False
            if diff.empty and not first:
                return diff
            for name in diff.added:
                log.info("clustermesh config: cluster %s added", name)
            for name in diff.changed:
                log.info("clustermesh config: cluster %s changed", name)
            for name in diff.removed:
                log.info("clustermesh config: cluster %s removed", name)
            try:
                await self._on_change(diff)
            except Exception:
                log.exception("clustermesh config: handling a change failed")
            return diff

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except Exception:  # a bug in scanning must not end the watch
                log.exception("clustermesh config: scanning %s failed", self.directory)
