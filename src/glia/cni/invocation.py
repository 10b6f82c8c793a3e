"""One run of glia-cni, pure: the whole invocation validated, and the agent's request.

Puts together the spec's checks (:mod:`glia.cni.spec`), the ``prevResult``
checks (:mod:`glia.cni.prevresult`) and podman's port mappings
(:mod:`glia.cni.ports`) in libcni's order, then shapes the body of the agent's
``/v1/cni/*`` calls. Called by :mod:`glia.cni.main` and :mod:`glia.cni.plugin`;
no I/O here, so everything is tested with plain dicts.

Standard library only, imported by a process that must start fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from glia.cni.ports import PortMappingError, port_mappings
from glia.cni.prevresult import check_prev_result, normalize_prev_result
from glia.cni.spec import (
    ERR_INVALID_CONFIG,
    CniError,
    check_env,
    check_plugin_type,
    check_version,
    command_of,
    config_version,
    parse_cni_args,
    parse_config,
    valid_attachments,
)


class Invocation(NamedTuple):
    """Everything one run of the plugin was given, validated."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]  # CNI_ARGS without the IgnoreUnknown directive
    config: dict[str, Any]  # the network configuration from stdin, as given
    cni_version: str


def parse_invocation(env: Mapping[str, str], stdin: bytes) -> Invocation:
    """Validate everything but VERSION, in libcni's order: env, config, version."""
    cmd = command_of(env)
    check_env(cmd, env)
    conf = parse_config(stdin)
    version = config_version(conf)
    check_version(cmd, version)
    check_plugin_type(conf)
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    if cmd == "ADD" and "prevResult" in conf:
        # Chained after the plugin that made the interface (docs/chaining.md): the
        # agent attaches to it; a prevResult it cannot read is refused here.
        if not isinstance(conf["prevResult"], dict):
            raise CniError(ERR_INVALID_CONFIG, "prevResult must be an object (a CNI result)")
        check_prev_result(normalize_prev_result(conf["prevResult"]))
    if cmd == "ADD":
        try:
            port_mappings(conf)
        except PortMappingError as e:
            raise CniError(ERR_INVALID_CONFIG, f"podman run -p: {e}") from None
    if cmd == "CHECK":
        if not isinstance(conf.get("prevResult"), dict):
            raise CniError(ERR_INVALID_CONFIG, "CHECK needs the prevResult of the ADD")
        check_prev_result(normalize_prev_result(conf["prevResult"]))
    return Invocation(
        command=cmd,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args=args,
        config=conf,
        cni_version=version,
    )


def agent_request(inv: Invocation) -> dict[str, Any]:
    """The ``CniRequest`` body of ``POST /v1/cni/{add,del,check}`` (docs/agent-api.md).

    ``prev_result`` is the configuration's, in the 1.0 shape; a malformed one
    (only DEL gets this far with one, and DEL must not fail for it) is left out.
    """
    prev = inv.config.get("prevResult")
    if isinstance(prev, dict):
        prev = normalize_prev_result(prev)
        try:
            check_prev_result(prev)
        except CniError:
            prev = None
    return {
        "command": inv.command,
        "container_id": inv.container_id,
        "netns": inv.netns,
        "ifname": inv.ifname,
        "args": inv.args,
        "config": inv.config,
        "prev_result": prev if isinstance(prev, dict) else None,
    }


def gc_request(inv: Invocation) -> dict[str, Any]:
    """The body of ``POST /v1/cni/gc``."""
    return {"valid_attachments": valid_attachments(inv.config), "config": inv.config}
