"""``glia config agent|operator``: a host's config file from a few facts about it.

Called by :mod:`glia.cli.deploy`. An operator knows the cluster, the node, its
address, the etcd URLs and where ``glia etcd bootstrap`` put the certificates;
everything else has a default (docs/config.md). :func:`agent` and
:func:`operator` turn those facts into the file's content, with the
certificate paths ``glia etcd bootstrap`` names (``<pki>/glia-agent-<node>.crt``
...) so the two commands fit together, then check it with the daemon's own
loader, so a file this module writes always starts the daemon. ``overrides``
(``--set KEY=VALUE``) reach any other key; a dotted key goes into a mapping
(``runtime_env.CONTAINERS_CONF=...``, ``etcd.dial_timeout=2``).

The generators are pure (they return the YAML text); :func:`write_file` writes it.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from glia.agent.config import AgentConfig
from glia.kvstore.rbac import CONFIG_USER, OPERATOR_USER, agent_user
from glia.model import codec
from glia.model.cluster import validate_name
from glia.operator.config import OperatorConfig


class ConfigGenError(ValueError):
    """A fact or an override is wrong; ``str()`` names which and why."""


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value); the value is read as YAML (``[a, b]``, ``true``, ``2``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigGenError(f"--set {text!r}: expected KEY=VALUE")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigGenError(f"--set {key}: the value is not valid YAML ({e})") from None
    return key, value


def _etcd(endpoints: Sequence[str], pki: Path, user: str) -> dict[str, Any]:
    if not endpoints:
        raise ConfigGenError("--etcd: at least one etcd client URL is needed")
    for url in endpoints:
        if not url.startswith("https://"):
            raise ConfigGenError(f"--etcd {url!r}: glia talks to etcd over TLS only (https://)")
    if not pki.is_absolute():
        raise ConfigGenError(
            f"--pki {str(pki)!r}: must be an absolute path (the daemon's cwd is /)"
        )
    return {
        "endpoints": list(endpoints),
        "ca_file": str(pki / "ca.crt"),
        "cert_file": str(pki / f"{user}.crt"),
        "key_file": str(pki / f"{user}.key"),
    }


def _network(what: str, text: str) -> str:
    try:
        return str(ipaddress.IPv4Network(text, strict=True))
    except ValueError as e:
        raise ConfigGenError(f"{what} {text!r}: not an IPv4 network ({e})") from None


def _apply(data: dict[str, Any], overrides: Sequence[tuple[str, Any]]) -> None:
    for key, value in overrides:
        parts = key.split(".")
        at = data
        for i, part in enumerate(parts[:-1]):
            inner = at.get(part)
            if inner is None:
                inner = at[part] = {}
            if not isinstance(inner, dict):
                raise ConfigGenError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
            at = inner
        at[parts[-1]] = value


def _checked(cls: type[Any], data: dict[str, Any]) -> str:
    try:
        codec.check_keys(cls, data)
        codec.from_dict(cls, data)
    except codec.InvalidValue as e:
        raise ConfigGenError(f"{e} (every key: docs/config.md)") from None
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def _header(path: str, command: str) -> str:
    return (
        f"# {path}: written by `glia config {command}`; every key, its type, default\n"
        "# and meaning: docs/config.md (`glia config reference`).\n"
    )


def agent(
    *,
    cluster: str,
    cluster_id: int,
    node: str,
    node_ip: str,
    etcd: Sequence[str],
    pki: Path,
    pod_pool: str,
    service_cidr: str,
    node_networks: Sequence[str] = (),
    apply: bool = True,
    overrides: Sequence[tuple[str, Any]] = (),
    path: str = "/etc/glia/agent.yaml",
) -> str:
    """The agent's config file for ``node`` (docs/config.md "Agent")."""
    try:
        validate_name("cluster", cluster)
        validate_name("node", node)
    except ValueError as e:
        raise ConfigGenError(str(e)) from None
    try:
        ipaddress.IPv4Address(node_ip)
    except ValueError:
        raise ConfigGenError(f"--node-ip {node_ip!r}: not an IPv4 address") from None
    data: dict[str, Any] = {
        "cluster": cluster,
        "cluster_id": cluster_id,
        "node": node,
        "node_ip": node_ip,
        "etcd": _etcd(etcd, pki, agent_user(node)),
    }
    if apply:
        data["config_etcd"] = _etcd(etcd, pki, CONFIG_USER)
    data["pod_pool"] = _network("--pod-pool", pod_pool)
    data["service_cidr"] = _network("--service-cidr", service_cidr)
    if node_networks:
        data["node_networks"] = [_network("--node-network", n) for n in node_networks]
    _apply(data, overrides)
    return _header(path, "agent") + _checked(AgentConfig, data)


def operator(
    *,
    cluster: str,
    cluster_id: int,
    etcd: Sequence[str],
    pki: Path,
    pod_pool: str,
    service_cidr: str,
    node_mask_size: int = 24,
    overrides: Sequence[tuple[str, Any]] = (),
    path: str = "/etc/glia/operator.yaml",
) -> str:
    """The operator's config file for ``cluster`` (docs/config.md "Operator")."""
    try:
        validate_name("cluster", cluster)
    except ValueError as e:
        raise ConfigGenError(str(e)) from None
    pool = ipaddress.IPv4Network(_network("--pod-pool", pod_pool))
    if not pool.prefixlen < node_mask_size <= 30:
        raise ConfigGenError(
            f"--node-mask-size {node_mask_size}: must be longer than the pod pool's "
            f"/{pool.prefixlen} and at most 30"
        )
    data: dict[str, Any] = {
        "cluster": cluster,
        "cluster_id": cluster_id,
        "pod_pool": str(pool),
        "node_mask_size": node_mask_size,
        "service_cidr": _network("--service-cidr", service_cidr),
        "etcd": _etcd(etcd, pki, OPERATOR_USER),
    }
    _apply(data, overrides)
    return _header(path, "operator") + _checked(OperatorConfig, data)


def write_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (0644): a daemon never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def overrides_of(texts: Sequence[str]) -> list[tuple[str, Any]]:
    return [parse_override(t) for t in texts]
