"""Remote cluster configuration: one YAML file per remote cluster, parsed and compared.

The agent reads a directory (docs/clustermesh.md) holding ``<cluster>.yaml``
for every remote cluster it should import, e.g. ``c2.yaml``::

    endpoints: [https://198.18.2.100:2379]   # the remote etcd, https only
    ca_file: c2/ca.crt                        # relative paths: from the directory
    cert_file: c2/remote.crt                  # the read-only user's certificate
    key_file: c2/remote.key
    cluster_id: 2                             # optional: the id c2 must have
    stale_after: 300                          # optional: seconds (default 300)

This module is pure: :func:`cluster_name_of` says which directory entries
are cluster files, :func:`parse` turns one file's text into a
:class:`RemoteClusterConfig` or a :class:`ConfigError` naming the file and
the field, and :func:`reconcile` compares a new scan of the directory with
the configuration in use; :func:`needs_reconnect` says whether a changed
file needs a new connection. Reading the directory and watching it is
:mod:`glia.clustermesh.configdir`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from glia.kvstore.config import EtcdConfig
from glia.model.cluster import MAX_CLUSTER_ID, validate_name
from glia.service import yamlload

SUFFIX = ".yaml"
MAX_FILE_BYTES = 64 << 10  # a cluster file is a few hundred bytes
MAX_ENDPOINTS = 16
MAX_PATH = 4096
DEFAULT_STALE_AFTER = 300.0  # issue 8: a remote's state outlives its etcd by 5 minutes
MAX_STALE_AFTER = 7 * 86400.0
REQUIRED = ("endpoints", "ca_file", "cert_file", "key_file")
OPTIONAL = ("cluster_id", "stale_after")


class ConfigError(ValueError):
    """A cluster file that cannot be used; ``str()`` names the file, the field and why."""


@dataclass(frozen=True, slots=True)
class RemoteClusterConfig:
    """How to reach and judge one remote cluster, from ``<name>.yaml``."""

    name: str  # the file's name without .yaml: the name the cluster must carry
    etcd: EtcdConfig  # its etcd: https endpoints, CA, the read-only user's certificate
    cluster_id: int | None = None
    """The id the remote cluster's record must carry; null: any."""
    stale_after: float = DEFAULT_STALE_AFTER
    """Seconds the remote's imported state outlives losing its etcd."""
    path: str = ""  # the file it came from
    # Of the file and of the TLS files it names: a new digest is a change
    # (a renewed certificate is one although the YAML is not).
    digest: str = ""
    # Of the TLS files alone (paths and content): with ``etcd`` and
    # ``cluster_id``, what decides whether a change needs a new connection.
    tls_digest: str = ""


def needs_reconnect(old: RemoteClusterConfig, new: RemoteClusterConfig) -> bool:
    """Whether ``new`` must be read over a new connection (checked and admitted again).

    Endpoints, TLS files (their paths or content) and the expected cluster id
    do; ``stale_after`` alone does not: it applies to the connection in use.
    """
    return (old.etcd, old.tls_digest, old.cluster_id) != (new.etcd, new.tls_digest, new.cluster_id)


def cluster_name_of(filename: str) -> str | None:
    """The cluster a directory entry configures; None for entries that are not cluster files.

    Ignored (None): hidden files (``.c2.yaml.swp``, ``..data``), and any name
    not ending in ``.yaml`` — editor backups (``c2.yaml~``, ``c2.yaml.swp``,
    ``#c2.yaml#``), certificates and keys kept next to the files. A ``.yml``
    file or a ``.yaml`` file whose stem is not a valid cluster name is a
    :class:`ConfigError`: someone meant it as a cluster file.
    """
    if filename.startswith("."):
        return None
    if filename.endswith(".yml"):
        raise ConfigError(f"{filename}: cluster files end in .yaml (rename it)")
    if not filename.endswith(SUFFIX):
        return None
    stem = filename[: -len(SUFFIX)]
    try:
        return validate_name("cluster", stem)
    except ValueError as e:
        raise ConfigError(f"{filename}: the file name must be <cluster>.yaml: {e}") from None


def _endpoint(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a URL string, got {_kind(value)}")
    if not value.startswith("https://"):
        raise ConfigError(f"{what} {value!r} must be an https URL (https://host:port)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{what} {value!r} is not a URL ({e})") from None
    if not parts.hostname:
        raise ConfigError(f"{what} {value!r} has no host")
    if port == 0:
        raise ConfigError(f"{what} {value!r}: port 0 is not a port")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{what} {value!r}: no user or password in the URL (certificates only)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{what} {value!r}: expected https://host:port, nothing after it")
    return value


def _endpoints(value: object) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ENDPOINTS:
        raise ConfigError(f"endpoints must be a list of 1..{MAX_ENDPOINTS} https URLs")
    urls = [_endpoint(v, f"endpoints[{i}]") for i, v in enumerate(value)]
    for i, url in enumerate(urls):
        if url in urls[:i]:
            raise ConfigError(f"endpoints[{i}] {url!r} is listed twice")
    return urls


def _file(value: object, what: str, base_dir: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a file path, got {_kind(value)}")
    if "\0" in value or len(value) > MAX_PATH:
        raise ConfigError(f"{what} is not a usable path")
    path = Path(value)
    return str(path if path.is_absolute() else base_dir / path)


def _cluster_id(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"cluster_id must be an integer 1..{MAX_CLUSTER_ID}, got {_kind(value)}")
    if not 1 <= value <= MAX_CLUSTER_ID:
        raise ConfigError(f"cluster_id {value} is not in 1..{MAX_CLUSTER_ID}")
    return value


def _stale_after(value: object) -> float:
    if value is None:
        return DEFAULT_STALE_AFTER
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"stale_after must be a number of seconds, got {_kind(value)}")
    if not math.isfinite(value) or not 0 < value <= MAX_STALE_AFTER:
        raise ConfigError(f"stale_after {value} is not in (0, {MAX_STALE_AFTER:g}] seconds")
    return float(value)


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def parse(name: str, text: str, source: str, base_dir: Path) -> RemoteClusterConfig:
    """The configuration of cluster ``name`` from the YAML ``text`` of file ``source``.

    Relative file paths are taken from ``base_dir`` (the directory). Every
    problem is a :class:`ConfigError` starting with ``source``; nothing is
    read from disk here.
    """
    try:
        docs = yamlload.load(text, source)
    except yamlload.YamlError as e:
        raise ConfigError(str(e)) from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        got = f"{len(docs)} documents" if len(docs) != 1 else _kind(docs[0])
        raise ConfigError(f"{source}: expected one mapping with {', '.join(REQUIRED)}, got {got}")
    data: dict[Any, Any] = docs[0]
    unknown = [k for k in data if k not in REQUIRED + OPTIONAL]
    if unknown:
        raise ConfigError(
            f"{source}: unknown field {json.dumps(unknown[0], default=str)} "
            f"(known: {', '.join(REQUIRED + OPTIONAL)})"
        )
    missing = [k for k in REQUIRED if data.get(k) is None]
    if missing:
        raise ConfigError(f"{source}: {missing[0]} is missing")
    try:
        etcd = EtcdConfig(
            endpoints=_endpoints(data["endpoints"]),
            ca_file=_file(data["ca_file"], "ca_file", base_dir),
            cert_file=_file(data["cert_file"], "cert_file", base_dir),
            key_file=_file(data["key_file"], "key_file", base_dir),
        )
        return RemoteClusterConfig(
            name=validate_name("cluster", name),
            etcd=etcd,
            cluster_id=_cluster_id(data.get("cluster_id")),
            stale_after=_stale_after(data.get("stale_after")),
            path=source,
        )
    except ValueError as e:  # ConfigError, or the name (callers pass cluster_name_of()'s)
        raise ConfigError(f"{source}: {e}") from None


# --- comparing a scan with what is in use -------------------------------------------


@dataclass(frozen=True, slots=True)
class Scan:
    """One reading of the directory (:func:`glia.clustermesh.configdir.scan`)."""

    configs: dict[str, RemoteClusterConfig]  # the usable files, by cluster
    errors: dict[str, str] = field(default_factory=dict)  # path -> what is wrong with it
    broken: frozenset[str] = frozenset()  # clusters whose file exists but is not usable
    listed: bool = True  # False: the directory itself could not be read


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """What changed between two scans, as the watcher's callback receives it."""

    added: dict[str, RemoteClusterConfig]  # connect
    changed: dict[str, RemoteClusterConfig]  # take this configuration (needs_reconnect: how)
    removed: list[str]  # disconnect and withdraw (sorted)
    errors: dict[str, str]  # every current problem (not only new ones), path -> message
    errors_changed: bool = False

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed or self.errors_changed)


def reconcile(
    current: Mapping[str, RemoteClusterConfig], scan: Scan, errors: Mapping[str, str]
) -> tuple[dict[str, RemoteClusterConfig], ConfigDiff]:
    """The configuration to use after ``scan``, and how it differs from ``current``.

    ``errors``: the problems reported last time. A cluster whose file is
    broken keeps its last usable configuration (an editor saving in two
    steps, a half-copied certificate must not withdraw a cluster's state);
    only a removed file removes it. A directory that cannot be read changes
    nothing.
    """
    if not scan.listed:
        new = dict(current)
    else:
        new = dict(scan.configs)
        for name in scan.broken:
            if name in current and name not in new:
                new[name] = current[name]
    diff = ConfigDiff(
        added={n: c for n, c in sorted(new.items()) if n not in current},
        changed={n: c for n, c in sorted(new.items()) if n in current and current[n] != c},
        removed=sorted(n for n in current if n not in new),
        errors=dict(sorted(scan.errors.items())),
        errors_changed=dict(errors) != scan.errors,
    )
    return new, diff
