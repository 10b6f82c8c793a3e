"""What glia-cni prints, pure: ADD's result per spec version, VERSION's answer, errors' version.

The agent answers in the 1.0 result format; the runtime asked in the
configuration's ``cniVersion``, which may be older. Called by
:mod:`glia.cni.main` and :mod:`glia.cni.plugin`.

Standard library only, imported by a process that must start fast.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from glia.cni.spec import (
    ERR_INTERNAL,
    FALLBACK_VERSION,
    SUPPORTED_VERSIONS,
    VERSION_OUTPUT_VERSION,
    CniError,
    parse_version,
)


def version_output() -> dict[str, Any]:
    """What ``CNI_COMMAND=VERSION`` prints."""
    return {"cniVersion": VERSION_OUTPUT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}


def result_for_version(result: Mapping[str, Any], version: str) -> dict[str, Any]:
    """The agent's 1.0 result, stamped with the configuration's version and shaped for it.

    0.3.0-0.4.0 results carry ``"version": "4"|"6"`` per IP; otherwise they are
    the 1.0 format (libcni's types/100 ``convertTo04x``).
    """
    out = dict(result)
    out["cniVersion"] = version
    parsed = parse_version(version)
    if parsed is not None and parsed < (1, 0, 0):
        ips = result.get("ips") or []
        if not isinstance(ips, list):
            raise CniError(ERR_INTERNAL, "the agent returned an invalid result", "ips: not a list")
        converted = []
        for ip in ips:
            address = ip.get("address") if isinstance(ip, dict) else None
            try:
                if not isinstance(ip, dict) or not isinstance(address, str):
                    raise ValueError(address)
                family = ipaddress.ip_interface(address).version
            except ValueError:
                raise CniError(
                    ERR_INTERNAL, "the agent returned an invalid result", f"ips: {ip!r}"
                ) from None
            converted.append({**ip, "version": str(family)})
        out["ips"] = converted
    return out


def add_result(result: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Check the agent's ADD answer looks like a 1.0 result, then :func:`result_for_version`."""
    for key in ("interfaces", "ips", "routes"):
        if key in result and not isinstance(result[key], list):
            raise CniError(
                ERR_INTERNAL, "the agent returned an invalid result", f"{key}: not a list"
            )
    if "dns" in result and not isinstance(result["dns"], dict):
        raise CniError(ERR_INTERNAL, "the agent returned an invalid result", "dns: not an object")
    return result_for_version(result, version)


def error_version(conf_version: str | None) -> str:
    """The ``cniVersion`` of an error: the configuration's if we speak it."""
    if conf_version in SUPPORTED_VERSIONS:
        return conf_version
    return FALLBACK_VERSION
