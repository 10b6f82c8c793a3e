"""The pure CNI protocol layer: env and config validation, invocations, prevResult, results."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glia.cni import invocation, prevresult, result, spec
from glia.cni.config import conflist
from glia.cni.spec import CniError

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/run/netns/netns-1",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default",
    "CNI_PATH": "/opt/cni/bin",
}
CONF: dict[str, Any] = {"cniVersion": "1.0.0", "name": "glia", "type": "glia-cni"}


def raw(conf: dict[str, Any]) -> bytes:
    return json.dumps(conf).encode()


def code_of(fn: Any, *args: Any) -> int:
    with pytest.raises(CniError) as ei:
        fn(*args)
    return ei.value.code


def test_cni_args() -> None:
    assert spec.parse_cni_args(ENV["CNI_ARGS"]) == {
        "K8S_POD_NAME": "web",
        "K8S_POD_NAMESPACE": "default",
    }
    assert spec.parse_cni_args("") == {}
    assert spec.parse_cni_args("A=1;;B=x=y;") == {"A": "1", "B": "x=y"}
    assert code_of(spec.parse_cni_args, "K8S_POD_NAME") == 4
    assert code_of(spec.parse_cni_args, "=x") == 4


def test_invocation_from_podman_like_input() -> None:
    conf = {**CONF, "runtimeConfig": {"aliases": {"glia": ["web"]}}}
    inv = invocation.parse_invocation(ENV, raw(conf))
    assert inv == invocation.Invocation(
        command="ADD",
        container_id="abc123",
        netns="/run/netns/netns-1",
        ifname="eth0",
        args={"K8S_POD_NAME": "web", "K8S_POD_NAMESPACE": "default"},
        config=conf,
        cni_version="1.0.0",
    )
    assert invocation.agent_request(inv) == {
        "command": "ADD",
        "container_id": "abc123",
        "netns": "/run/netns/netns-1",
        "ifname": "eth0",
        "args": {"K8S_POD_NAME": "web", "K8S_POD_NAMESPACE": "default"},
        "config": conf,
        "prev_result": None,
    }


@pytest.mark.parametrize(
    ("missing", "cmd", "msg"),
    [
        ("CNI_CONTAINERID", "ADD", "required env variables [CNI_CONTAINERID] missing"),
        ("CNI_NETNS", "ADD", "required env variables [CNI_NETNS] missing"),
        ("CNI_IFNAME", "CHECK", "required env variables [CNI_IFNAME] missing"),
        ("CNI_CONTAINERID", "DEL", "required env variables [CNI_CONTAINERID] missing"),
    ],
)
def test_missing_env(missing: str, cmd: str, msg: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing} | {"CNI_COMMAND": cmd}
    with pytest.raises(CniError) as ei:
        invocation.parse_invocation(env, raw(CONF))
    assert (ei.value.code, ei.value.msg) == (4, msg)


def test_env_optional_where_the_spec_says() -> None:
    # DEL without netns (the container is already gone), GC/STATUS without a container.
    env = {k: v for k, v in ENV.items() if k != "CNI_NETNS"} | {"CNI_COMMAND": "DEL"}
    assert invocation.parse_invocation(env, raw(CONF)).netns == ""
    v11 = {**CONF, "cniVersion": "1.1.0", "cni.dev/valid-attachments": []}
    for cmd in ("GC", "STATUS"):
        assert invocation.parse_invocation({"CNI_COMMAND": cmd}, raw(v11)).command == cmd
    # CNI_PATH is never needed: glia-cni delegates to no plugin.
    env = {k: v for k, v in ENV.items() if k != "CNI_PATH"}
    assert invocation.parse_invocation(env, raw(CONF)).command == "ADD"


@pytest.mark.parametrize(
    ("var", "value", "msg"),
    [
        ("CNI_COMMAND", "add", "unknown CNI_COMMAND: add"),
        ("CNI_CONTAINERID", "-abc", "invalid characters in containerID"),
        ("CNI_CONTAINERID", "a b", "invalid characters in containerID"),
        ("CNI_CONTAINERID", "abc\n", "invalid characters in containerID"),
        ("CNI_IFNAME", "a" * 16, "interface name is too long"),
        ("CNI_IFNAME", "..", "interface name is . or .."),
        ("CNI_IFNAME", "eth/0", "interface name contains / or : or whitespace characters"),
        ("CNI_IFNAME", "eth 0", "interface name contains / or : or whitespace characters"),
        ("CNI_NETNS", "netns-1", "CNI_NETNS must be an absolute path"),
        ("CNI_ARGS", "K8S_POD_NAME", "invalid CNI_ARGS"),
    ],
)
def test_invalid_env(var: str, value: str, msg: str) -> None:
    with pytest.raises(CniError) as ei:
        invocation.parse_invocation(ENV | {var: value}, raw(CONF))
    assert (ei.value.code, ei.value.msg) == (4, msg)


def test_ifname_of_15_chars_is_fine() -> None:
    assert invocation.parse_invocation(ENV | {"CNI_IFNAME": "a" * 15}, raw(CONF)).ifname == "a" * 15


@pytest.mark.parametrize(
    ("stdin", "code", "msg"),
    [
        (b"", 6, "error unmarshall network config"),
        (b"{not json", 6, "error unmarshall network config"),
        (b"[1]", 6, "error unmarshall network config: not a JSON object"),
        (b"\xff\xfe\xfd", 6, "error unmarshall network config"),
        (b"[" * 100000, 6, "error unmarshall network config"),
        (b'{"cniVersion": 1, "name": "x"}', 6, "cniVersion is not a string"),
        (b'{"cniVersion": "1.0.0"}', 7, "missing network name"),
        (b'{"cniVersion": "1.0.0", "name": "a/b"}', 7, "invalid characters found in network name"),
        (b'{"cniVersion": "0.2.0", "name": "x"}', 1, "incompatible CNI versions"),
        (b'{"name": "x"}', 1, "incompatible CNI versions"),
        (b'{"cniVersion": "2.0.0", "name": "x"}', 1, "incompatible CNI versions"),
    ],
)
def test_invalid_config(stdin: bytes, code: int, msg: str) -> None:
    with pytest.raises(CniError) as ei:
        invocation.parse_invocation(ENV, stdin)
    assert ei.value.code == code
    assert msg in ei.value.msg


def test_incompatible_version_details() -> None:
    with pytest.raises(CniError) as ei:
        invocation.parse_invocation(ENV, b'{"name": "x"}')
    assert ei.value.details == (
        'config is "0.1.0", plugin supports ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]'
    )


@pytest.mark.parametrize(
    ("cmd", "version"),
    [("CHECK", "0.3.1"), ("GC", "1.0.0"), ("STATUS", "1.0.0"), ("GC", "0.4.0")],
)
def test_verb_needs_a_recent_enough_version(cmd: str, version: str) -> None:
    conf = {**CONF, "cniVersion": version, "prevResult": {}, "cni.dev/valid-attachments": []}
    with pytest.raises(CniError) as ei:
        invocation.parse_invocation(ENV | {"CNI_COMMAND": cmd}, raw(conf))
    assert (ei.value.code, ei.value.msg) == (1, f"config version does not allow {cmd}")


def test_add_may_be_chained_and_check_needs_prev_result() -> None:
    # Chained (docs/chaining.md): the prevResult goes to the agent, which judges it.
    inv = invocation.parse_invocation(ENV, raw({**CONF, "prevResult": {"ips": []}}))
    assert invocation.agent_request(inv)["prev_result"] == {"ips": []}
    with pytest.raises(CniError) as ei:
        invocation.parse_invocation(ENV | {"CNI_COMMAND": "CHECK"}, raw(CONF))
    assert (ei.value.code, ei.value.msg) == (7, "CHECK needs the prevResult of the ADD")


def test_plugin_settings() -> None:
    s = spec.plugin_settings(CONF, "/run/glia/agent.sock")
    assert s == spec.PluginSettings("/run/glia/agent.sock", "/run/glia/cni-delete-queue", 5.0)
    conf = {**CONF, "agentSocket": "/run/glia/lab/nodes/c1-n1/agent.sock", "agentWaitSeconds": 0}
    s = spec.plugin_settings(conf, "/x.sock")
    assert s == spec.PluginSettings(
        "/run/glia/lab/nodes/c1-n1/agent.sock", "/run/glia/lab/nodes/c1-n1/cni-delete-queue", 0.0
    )
    assert spec.plugin_settings({"deleteQueueDir": "/q"}, "/a.sock").delete_queue_dir == "/q"
    assert spec.default_delete_queue_dir("/agent.sock") == "/cni-delete-queue"
    for bad in (
        {"agentSocket": "relative.sock"},
        {"agentSocket": 3},
        {"deleteQueueDir": ""},
        {"agentWaitSeconds": -1},
        {"agentWaitSeconds": True},
        {"agentWaitSeconds": "5"},
    ):
        assert code_of(spec.plugin_settings, bad, "/a.sock") == 7


def test_gc_request() -> None:
    att = [{"containerID": "c1", "ifname": "eth0"}]
    conf = {**CONF, "cniVersion": "1.1.0", "cni.dev/valid-attachments": att}
    inv = invocation.parse_invocation({"CNI_COMMAND": "GC"}, raw(conf))
    assert invocation.gc_request(inv) == {"valid_attachments": att, "config": conf}
    # libcni also writes the older spelling.
    conf2 = {**CONF, "cniVersion": "1.1.0", "cni.dev/attachments": att}
    assert spec.valid_attachments(conf2) == att
    assert code_of(spec.valid_attachments, CONF) == 7
    assert code_of(spec.valid_attachments, {"cni.dev/valid-attachments": {}}) == 7
    assert code_of(spec.valid_attachments, {"cni.dev/valid-attachments": [{"containerID": 1}]}) == 7


def test_prev_result_is_normalized_to_1_0() -> None:
    prev = {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"version": "4", "address": "10.1.1.5/24", "interface": 0}],
    }
    conf = {**CONF, "cniVersion": "0.4.0", "prevResult": prev}
    inv = invocation.parse_invocation(ENV | {"CNI_COMMAND": "DEL"}, raw(conf))
    assert invocation.agent_request(inv)["prev_result"] == {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"address": "10.1.1.5/24", "interface": 0}],
    }


RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:05", "sandbox": "/run/netns/x"}],
    "ips": [
        {"address": "10.1.1.5/24", "gateway": "10.1.1.1", "interface": 0},
        {"address": "fd00::5/64", "interface": 0},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.1.1"}],
    "dns": {},
}


def test_results_per_version() -> None:
    for v in ("1.0.0", "1.1.0"):
        assert result.add_result(RESULT, v) == {**RESULT, "cniVersion": v}
    for v in ("0.3.0", "0.3.1", "0.4.0"):
        out = result.add_result(RESULT, v)
        assert out["cniVersion"] == v
        assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
        assert out["interfaces"] == RESULT["interfaces"]
    assert RESULT["cniVersion"] == "1.0.0"  # not modified in place


def test_invalid_results_are_internal_errors() -> None:
    assert code_of(result.add_result, {"ips": "x"}, "1.0.0") == 999
    assert code_of(result.add_result, {"dns": []}, "1.0.0") == 999
    assert code_of(result.add_result, {"ips": [{"address": "nope"}]}, "0.4.0") == 999
    assert code_of(result.add_result, {"ips": [7]}, "0.4.0") == 999


def test_version_output_and_error_json() -> None:
    assert result.version_output() == {
        "cniVersion": "1.0.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }
    assert CniError(7, "bad", "why").to_json("1.0.0") == {
        "cniVersion": "1.0.0",
        "code": 7,
        "msg": "bad",
        "details": "why",
    }
    assert CniError(4, "bad").to_json("0.4.0") == {"cniVersion": "0.4.0", "code": 4, "msg": "bad"}
    assert result.error_version("0.4.0") == "0.4.0"
    assert result.error_version("9.9.9") == "1.0.0"
    assert result.error_version(None) == "1.0.0"


def test_conflist() -> None:
    c = conflist("/run/glia/lab/nodes/c1-n1/agent.sock")
    assert c == {
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": "glia",
        "plugins": [
            {
                "type": "glia-cni",
                "agentSocket": "/run/glia/lab/nodes/c1-n1/agent.sock",
                "mtu": 1450,
                # podman hands --network-alias and several --ip over only if declared
                # and -p, served by the agent on the lb maps (no portmap: docs/hostport.md)
                "capabilities": {"aliases": True, "ips": True, "portMappings": True},
            },
        ],
    }
    # What a runtime hands the plugin (the list's version and name + the plugin entry) is valid.
    plugin_conf = {"cniVersion": c["cniVersion"], "name": c["name"], **c["plugins"][0]}
    inv = invocation.parse_invocation(ENV, raw(plugin_conf))
    assert spec.plugin_settings(inv.config, "/x").agent_socket == c["plugins"][0]["agentSocket"]
    with pytest.raises(ValueError):
        conflist("relative.sock")
    with pytest.raises(ValueError):
        conflist("/a.sock", name="bad name")
    with pytest.raises(ValueError):
        conflist("/a.sock", mtu=100)


@given(st.text(max_size=40))
def test_cni_args_never_raise_anything_but_cni_errors(text: str) -> None:
    try:
        out = spec.parse_cni_args(text)
    except CniError as e:
        assert e.code == 4
    else:
        assert all(k and k != "IgnoreUnknown" for k in out)


@given(st.text(max_size=20))
def test_ifname_rules(name: str) -> None:
    try:
        spec.validate_ifname(name)
    except CniError as e:
        assert e.code == 4
    else:
        assert len(name.encode()) <= 15 and name not in (".", "..")
        assert not any(c in "/:" or c.isspace() for c in name)


# -- limits, plugin type, prevResult -------------------------------------------------


def test_container_id_length_is_limited_where_an_endpoint_is_made_or_read() -> None:
    ok = "a" * spec.MAX_CONTAINER_ID
    assert invocation.parse_invocation(ENV | {"CNI_CONTAINERID": ok}, raw(CONF)).container_id == ok
    for cmd in ("ADD", "CHECK"):
        conf = {**CONF, "prevResult": RESULT} if cmd == "CHECK" else CONF
        with pytest.raises(CniError) as ei:
            invocation.parse_invocation(
                ENV | {"CNI_COMMAND": cmd, "CNI_CONTAINERID": "a" * 250}, raw(conf)
            )
        assert (ei.value.code, ei.value.msg) == (4, "CNI_CONTAINERID is longer than 128 characters")
        assert ei.value.details.startswith("250 characters: aaaa")
    # DEL takes any length: an endpoint made before the limit existed can still go.
    env = ENV | {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "a" * 250}
    assert invocation.parse_invocation(env, raw(CONF)).container_id == "a" * 250


def test_netns_path_rules() -> None:
    spec.check_netns_path("/run/netns/x")
    for bad, msg in [
        ("run/netns/x", "CNI_NETNS must be an absolute path"),
        ("/run/\0x", "CNI_NETNS contains a NUL character"),
        ("/" + "n" * 4095, "CNI_NETNS is longer than 4095 bytes (PATH_MAX)"),
    ]:
        with pytest.raises(CniError) as ei:
            spec.check_netns_path(bad)
        assert (ei.value.code, ei.value.msg) == (4, msg)


@pytest.mark.parametrize(
    ("conf", "msg"),
    [
        ({"cniVersion": "1.0.0", "name": "glia"}, "missing plugin type"),
        ({**CONF, "type": ""}, "missing plugin type"),
        ({**CONF, "type": 7}, "missing plugin type"),
        ({**CONF, "type": "../glia-cni"}, "invalid characters found in plugin type"),
    ],
)
def test_a_config_needs_a_plugin_type(conf: dict[str, Any], msg: str) -> None:
    with pytest.raises(CniError) as ei:
        invocation.parse_invocation(ENV, raw(conf))
    assert ei.value.code == 7
    assert ei.value.msg.startswith(msg)


def test_an_old_config_without_type_is_told_about_its_version_first() -> None:
    with pytest.raises(CniError) as ei:
        invocation.parse_invocation(ENV, b'{"cniVersion": "0.2.0", "name": "x"}')
    assert ei.value.code == 1


@pytest.mark.parametrize(
    ("prev", "msg"),
    [
        ({"interfaces": {}}, "prevResult.interfaces: expected a list, got {}"),
        ({"interfaces": [1]}, "prevResult.interfaces[0]: expected an object, got 1"),
        (
            {"interfaces": [{}]},
            "prevResult.interfaces[0].name: expected an interface name, got null",
        ),
        (
            {"interfaces": [{"name": "e", "mac": 1}]},
            "prevResult.interfaces[0].mac: expected a string",
        ),
        (
            {"interfaces": [{"name": "e", "mtu": -1}]},
            "prevResult.interfaces[0].mtu: expected a number",
        ),
        ({"ips": "x"}, 'prevResult.ips: expected a list, got "x"'),
        ({"ips": [{}]}, "prevResult.ips[0].address: expected an address with its prefix length"),
        ({"ips": [{"address": "10.1.1.5"}]}, "prevResult.ips[0].address: expected an address with"),
        ({"ips": [{"address": "10.1.1.5/33"}]}, "prevResult.ips[0].address: expected an address"),
        (
            {"ips": [{"address": "10.1.1.5/24", "gateway": "x"}]},
            "prevResult.ips[0].gateway: expected an IP",
        ),
        (
            {"ips": [{"address": "10.1.1.5/24", "interface": 0}]},
            "prevResult.ips[0].interface: expected absent (prevResult has no interfaces), got 0",
        ),
        (
            {**RESULT, "ips": [{"address": "10.1.1.5/24", "interface": 1}]},
            "prevResult.ips[0].interface: expected an index of prevResult.interfaces (0..0), got 1",
        ),
        (
            {**RESULT, "ips": [{"address": "10.1.1.5/24", "interface": True}]},
            "prevResult.ips[0].interface: expected an index",
        ),
        ({"routes": [{"gw": "10.0.0.1"}]}, "prevResult.routes[0].dst: expected an address with"),
        ({"routes": [{"dst": "0.0.0.0/0", "gw": 5}]}, "prevResult.routes[0].gw: expected an IP"),
        ({"dns": []}, "prevResult.dns: expected an object, got []"),
        ({"dns": {"nameservers": [1]}}, "prevResult.dns.nameservers: expected a list of strings"),
        ({"dns": {"domain": 1}}, "prevResult.dns.domain: expected a string, got 1"),
    ],
)
def test_check_refuses_a_malformed_prev_result_naming_the_field(prev: Any, msg: str) -> None:
    conf = {**CONF, "prevResult": prev}
    with pytest.raises(CniError) as ei:
        invocation.parse_invocation(ENV | {"CNI_COMMAND": "CHECK"}, raw(conf))
    assert ei.value.code == 7
    assert ei.value.msg.startswith("invalid prevResult: " + msg), ei.value.msg


def test_well_formed_prev_results_pass() -> None:
    for version in spec.SUPPORTED_VERSIONS:
        shaped = result.result_for_version(RESULT, version)
        prevresult.check_prev_result(prevresult.normalize_prev_result(shaped))
        conf = {**CONF, "cniVersion": version, "prevResult": shaped}
        if version >= "0.4.0":
            env = ENV | {"CNI_COMMAND": "CHECK"}
            assert invocation.parse_invocation(env, raw(conf)).command == "CHECK"
    prevresult.check_prev_result({})  # nothing expected is still a result
    assert code_of(prevresult.check_prev_result, []) == 7
    prevresult.check_prev_result({**RESULT, "extra": {"any": "thing"}, "dns": {"domain": "x"}})


def test_del_with_a_malformed_prev_result_still_goes_to_the_agent_without_it() -> None:
    conf = {**CONF, "prevResult": {"ips": "x"}}
    inv = invocation.parse_invocation(ENV | {"CNI_COMMAND": "DEL"}, raw(conf))
    assert invocation.agent_request(inv)["prev_result"] is None


_env_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS", "/run/netns/x", "eth0", "a" * 250]),
)
_configs = st.one_of(
    st.binary(max_size=60),
    st.builds(
        lambda c: json.dumps(c).encode(),
        st.dictionaries(
            st.sampled_from(["cniVersion", "name", "type", "prevResult", "x"]),
            st.one_of(
                st.sampled_from(["1.0.0", "0.4.0", "glia", "glia-cni", "a/b", ""]),
                st.just(RESULT),
                st.none(),
                st.integers(),
                st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
            ),
        ),
    ),
)


@given(
    st.dictionaries(
        st.sampled_from(["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"]),
        _env_values,
    ),
    _configs,
)
def test_any_invocation_is_parsed_or_refused_with_a_spec_code(
    env: dict[str, str], stdin: bytes
) -> None:
    try:
        inv = invocation.parse_invocation(env, stdin)
    except CniError as e:
        assert e.code in (1, 2, 4, 6, 7), e.msg
        assert e.msg
    else:
        assert inv.command in spec.COMMANDS
        if inv.command in ("ADD", "CHECK"):
            assert 0 < len(inv.container_id) <= spec.MAX_CONTAINER_ID
            assert inv.netns.startswith("/")
        if inv.command == "CHECK":
            prevresult.check_prev_result(inv.config["prevResult"])
        assert isinstance(inv.config.get("type"), str)
