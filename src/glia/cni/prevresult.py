"""A chained or CHECK ``prevResult``, pure: its shape checked, its format made 1.0.

A ``prevResult`` is the result of an earlier ADD, handed back in the network
configuration: by the runtime on CHECK (what to compare the container
against) and on DEL, and by the plugin before glia in a chain
(docs/chaining.md). Called by :mod:`glia.cni.invocation` in the plugin and
again by the agent (glia.endpoint.request, glia.endpoint.chained_request).

Standard library only, imported by a process that must start fast.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, NoReturn

from glia.cni.spec import ERR_INVALID_CONFIG, CniError


def check_prev_result(prev: Any) -> None:
    """A 1.0 result's shape (code 7, naming the field): what CHECK compares against.

    Spec "Success" result: ``interfaces`` [{name, mac?, mtu?, sandbox?}], ``ips``
    [{address (CIDR), gateway?, interface? (an index of interfaces)}], ``routes``
    [{dst (CIDR), gw?}], ``dns`` {nameservers?, domain?, search?, options?}. Keys
    the spec does not name are allowed: a chained plugin may add its own.
    """
    if not isinstance(prev, dict):
        _bad_prev("prevResult", "a JSON object", prev)
    interfaces = _prev_list(prev, "interfaces")
    for i, itf in enumerate(interfaces):
        where = f"prevResult.interfaces[{i}]"
        if not isinstance(itf, dict):
            _bad_prev(where, "an object", itf)
        if not isinstance(itf.get("name"), str) or not itf["name"]:
            _bad_prev(f"{where}.name", "an interface name", itf.get("name"))
        for key in ("mac", "sandbox", "socketPath", "pciID"):
            if key in itf and not isinstance(itf[key], str):
                _bad_prev(f"{where}.{key}", "a string", itf[key])
        if "mtu" in itf and not _is_uint(itf["mtu"]):
            _bad_prev(f"{where}.mtu", "a number of bytes", itf["mtu"])
    for i, ip in enumerate(_prev_list(prev, "ips")):
        where = f"prevResult.ips[{i}]"
        if not isinstance(ip, dict):
            _bad_prev(where, "an object", ip)
        _prev_cidr(ip.get("address"), f"{where}.address")
        if ip.get("gateway") is not None:
            _prev_ip(ip["gateway"], f"{where}.gateway")
        index = ip.get("interface")
        if index is not None and (not _is_uint(index) or index >= len(interfaces)):
            _bad_prev(
                f"{where}.interface",
                f"an index of prevResult.interfaces (0..{len(interfaces) - 1})"
                if interfaces
                else "absent (prevResult has no interfaces)",
                index,
            )
    for i, route in enumerate(_prev_list(prev, "routes")):
        where = f"prevResult.routes[{i}]"
        if not isinstance(route, dict):
            _bad_prev(where, "an object", route)
        _prev_cidr(route.get("dst"), f"{where}.dst")
        if route.get("gw") is not None:
            _prev_ip(route["gw"], f"{where}.gw")
    dns = prev.get("dns")
    if dns is not None:
        if not isinstance(dns, dict):
            _bad_prev("prevResult.dns", "an object", dns)
        if "domain" in dns and not isinstance(dns["domain"], str):
            _bad_prev("prevResult.dns.domain", "a string", dns["domain"])
        for key in ("nameservers", "search", "options"):
            value = dns.get(key)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                _bad_prev(f"prevResult.dns.{key}", "a list of strings", value)


def _prev_list(prev: dict[str, Any], key: str) -> list[Any]:
    value = prev.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        _bad_prev(f"prevResult.{key}", "a list", value)
    return value


def _prev_cidr(value: Any, where: str) -> None:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        ipaddress.ip_interface(value)
        if "/" not in value:
            raise ValueError(value)
    except ValueError:
        _bad_prev(where, "an address with its prefix length (CIDR)", value)


def _prev_ip(value: Any, where: str) -> None:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        ipaddress.ip_address(value)
    except ValueError:
        _bad_prev(where, "an IP address", value)


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bad_prev(where: str, expected: str, got: Any) -> NoReturn:
    try:
        shown = json.dumps(got)
    except (TypeError, ValueError):
        shown = repr(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise CniError(
        ERR_INVALID_CONFIG,
        f"invalid prevResult: {where}: expected {expected}, got {shown}",
        "CHECK compares the container's networking with the prevResult of its ADD",
    )


def normalize_prev_result(prev: dict[str, Any]) -> dict[str, Any]:
    """A 0.3/0.4 prevResult in the 1.0 shape (no per-IP ``version``), so the agent sees one."""
    out = dict(prev)
    ips = prev.get("ips")
    if isinstance(ips, list):
        out["ips"] = [
            {k: v for k, v in ip.items() if k != "version"} if isinstance(ip, dict) else ip
            for ip in ips
        ]
    return out
