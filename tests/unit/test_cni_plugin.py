"""glia-cni end to end against the fake agent: stdout, exit codes, error JSON, the DEL queue."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_agent_client import FakeAgent, error, running_fake_agent, short_tmpdir

from glia.agent.client import AgentClient
from glia.cni import main as cni_main
from glia.cni import plugin, prevresult, spec
from glia.cni.deletion_queue import DeletionQueue

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "f00dcafe",
    "CNI_NETNS": "/run/netns/netns-1",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web",
    "CNI_PATH": "/usr/lib/cni",
}
PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "sandbox": "/run/netns/netns-1"}],
    "ips": [{"address": "10.1.1.5/24", "interface": 0}],
}


def conf(agent: FakeAgent | str, **extra: Any) -> dict[str, Any]:
    path = agent.path if isinstance(agent, FakeAgent) else agent
    return {
        "cniVersion": "1.0.0",
        "name": "glia",
        "type": "glia-cni",
        "agentSocket": path,
        "agentWaitSeconds": 0,
        **extra,
    }


def invoke(
    env: dict[str, str], stdin: bytes | dict[str, Any], default_socket: str = "/nonexistent.sock"
) -> tuple[int, str, str]:
    raw = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    out, err = io.StringIO(), io.StringIO()
    rc = cni_main.run(env, io.BytesIO(raw), out, err, default_socket=default_socket)
    return rc, out.getvalue(), err.getvalue()


def cni_error(stdout: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(stdout)
    assert set(data) <= {"cniVersion", "code", "msg", "details"}
    return data


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with running_fake_agent() as a:
        yield a


# -- VERSION ----------------------------------------------------------------------


def test_version_needs_no_agent_and_no_config() -> None:
    rc, out, err = invoke({"CNI_COMMAND": "VERSION"}, b"garbage")
    assert rc == 0
    assert out == (
        '{"cniVersion": "1.0.0", "supportedVersions": '
        '["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}\n'
    )
    assert err == ""


# -- ADD --------------------------------------------------------------------------


def test_add_prints_the_agents_result(agent: FakeAgent) -> None:
    c = conf(agent, runtimeConfig={"aliases": {"glia": ["web"]}})
    rc, out, err = invoke(ENV, c)
    assert (rc, err) == (0, "")
    expected = {
        "cniVersion": "1.0.0",
        "dns": {},
        "interfaces": [
            {"mac": "02:00:00:00:00:05", "name": "eth0", "sandbox": "/run/netns/netns-1"}
        ],
        "ips": [{"address": "10.1.1.5/24", "gateway": "10.1.1.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.1.1"}],
    }
    assert out == json.dumps(expected, sort_keys=True) + "\n"
    assert agent.bodies("/v1/cni/add") == [
        {
            "command": "ADD",
            "container_id": "f00dcafe",
            "netns": "/run/netns/netns-1",
            "ifname": "eth0",
            "args": {"K8S_POD_NAME": "web"},
            "config": c,
            "prev_result": None,
        }
    ]


def test_add_result_takes_the_configs_version(agent: FakeAgent) -> None:
    rc, out, _ = invoke(ENV, conf(agent, cniVersion="1.1.0"))
    assert rc == 0 and json.loads(out)["cniVersion"] == "1.1.0"
    rc, out, _ = invoke(ENV, conf(agent, cniVersion="0.4.0"))
    result = json.loads(out)
    assert rc == 0 and result["cniVersion"] == "0.4.0"
    assert result["ips"] == [
        {"address": "10.1.1.5/24", "gateway": "10.1.1.1", "interface": 0, "version": "4"}
    ]


def test_add_uses_the_default_socket_without_agent_socket(agent: FakeAgent) -> None:
    c = conf(agent)
    del c["agentSocket"]
    rc, out, _ = invoke(ENV, c, default_socket=agent.path)
    assert rc == 0 and json.loads(out)["ips"]


def test_agent_errors_are_printed_with_their_code(agent: FakeAgent) -> None:
    agent.answer("POST", "/v1/cni/add", error(400, 7, "pod CIDR exhausted", "10.1.1.0/24"))
    rc, out, _ = invoke(ENV, conf(agent, cniVersion="0.4.0"))
    assert rc == 1
    assert out == (
        '{"cniVersion": "0.4.0", "code": 7, "details": "10.1.1.0/24", '
        '"msg": "pod CIDR exhausted"}\n'
    )


def test_add_with_the_agent_unreachable_is_try_again_later() -> None:
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        rc, out, _ = invoke(ENV, conf(path))
    assert rc == 1
    e = cni_error(out)
    assert (e["code"], e["msg"]) == (11, "the glia agent is not reachable")
    assert path in e["details"] and "No such file or directory" in e["details"]


def test_add_waits_for_an_agent_that_is_starting() -> None:
    with short_tmpdir() as d:
        agent = FakeAgent(os.path.join(d, "agent.sock"))
        timer = threading.Timer(0.3, agent.start)
        timer.start()
        try:
            rc, out, _ = invoke(ENV, conf(agent, agentWaitSeconds=10))
        finally:
            timer.join()
            agent.stop()
    assert rc == 0 and json.loads(out)["ips"]


def test_add_retries_while_the_agent_says_try_again(agent: FakeAgent) -> None:
    answers = [error(503, 11, "glia agent is not ready yet")] * 2

    def route(body: Any) -> tuple[int, Any]:
        if answers:
            return answers.pop()
        return 200, {"cniVersion": "1.0.0", "ips": [{"address": "10.1.1.9/24"}]}

    agent.answer("POST", "/v1/cni/add", route)
    rc, out, _ = invoke(ENV, conf(agent, agentWaitSeconds=10))
    assert rc == 0 and json.loads(out)["ips"] == [{"address": "10.1.1.9/24"}]
    assert len(agent.bodies("/v1/cni/add")) == 3
    # Without a wait, the agent's "try again" goes to the runtime.
    answers.append(error(503, 11, "glia agent is not ready yet"))
    rc, out, _ = invoke(ENV, conf(agent))
    assert rc == 1 and cni_error(out)["code"] == 11


def test_unexpected_agent_answer_is_an_internal_error(agent: FakeAgent) -> None:
    agent.answer("POST", "/v1/cni/add", (200, b"<html>"))
    rc, out, _ = invoke(ENV, conf(agent))
    e = cni_error(out)
    assert (rc, e["code"], e["msg"]) == (1, 999, "unexpected answer from the glia agent")
    agent.answer("POST", "/v1/cni/add", (200, {"ips": {"not": "a list"}}))
    rc, out, _ = invoke(ENV, conf(agent))
    e = cni_error(out)
    assert (rc, e["code"], e["msg"]) == (1, 999, "the agent returned an invalid result")


def test_agent_timeout_is_try_again_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "AgentClient", lambda path: AgentClient(path, timeout=0.2))
    import socket

    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        try:
            rc, out, _ = invoke(ENV, conf(path))
        finally:
            srv.close()
    e = cni_error(out)
    assert (rc, e["code"], e["msg"]) == (1, 11, "the glia agent did not answer in time")


# -- DEL --------------------------------------------------------------------------


def test_del_forwards_and_prints_nothing(agent: FakeAgent) -> None:
    env = ENV | {"CNI_COMMAND": "DEL"}
    c = conf(agent, prevResult=PREV)
    assert invoke(env, c) == (0, "", "")
    assert invoke(env, c) == (0, "", "")  # repeated DELs succeed
    bodies = agent.bodies("/v1/cni/del")
    assert len(bodies) == 2
    assert bodies[0]["command"] == "DEL"
    assert bodies[0]["prev_result"] == PREV


def test_del_without_netns(agent: FakeAgent) -> None:
    env = {k: v for k, v in ENV.items() if k != "CNI_NETNS"} | {"CNI_COMMAND": "DEL"}
    assert invoke(env, conf(agent)) == (0, "", "")
    assert agent.bodies("/v1/cni/del")[0]["netns"] == ""


def test_del_error_from_the_agent_fails(agent: FakeAgent) -> None:
    agent.answer("POST", "/v1/cni/del", error(500, 999, "netlink: device busy"))
    rc, out, _ = invoke(ENV | {"CNI_COMMAND": "DEL"}, conf(agent))
    assert rc == 1 and cni_error(out)["msg"] == "netlink: device busy"


def test_del_with_the_agent_down_is_queued() -> None:
    env = ENV | {"CNI_COMMAND": "DEL"}
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        c = conf(path, prevResult=PREV)
        rc, out, err = invoke(env, c)
        assert (rc, out) == (0, "")
        qdir = os.path.join(d, "cni-delete-queue")
        assert f"DEL of f00dcafe/eth0 queued in {qdir}/" in err
        # A repeated DEL replaces its entry instead of adding one.
        assert invoke(env, c)[0] == 0
        entries = DeletionQueue(qdir).pending()
    assert len(entries) == 1
    assert entries[0].request == {
        "command": "DEL",
        "container_id": "f00dcafe",
        "netns": "/run/netns/netns-1",
        "ifname": "eth0",
        "args": {"K8S_POD_NAME": "web"},
        "config": c,
        "prev_result": PREV,
    }


def test_del_that_cannot_be_queued_fails() -> None:
    with short_tmpdir() as d:
        blocker = os.path.join(d, "file")
        with open(blocker, "w"):
            pass
        c = conf(os.path.join(d, "agent.sock"), deleteQueueDir=os.path.join(blocker, "q"))
        rc, out, _ = invoke(ENV | {"CNI_COMMAND": "DEL"}, c)
    e = cni_error(out)
    assert (rc, e["code"]) == (1, 11)
    assert e["msg"] == "the glia agent is not reachable and the DEL could not be queued"


def test_del_waits_for_an_agent_that_is_starting() -> None:
    with short_tmpdir() as d:
        agent = FakeAgent(os.path.join(d, "agent.sock"))
        timer = threading.Timer(0.3, agent.start)
        timer.start()
        try:
            rc, out, _ = invoke(ENV | {"CNI_COMMAND": "DEL"}, conf(agent, agentWaitSeconds=10))
            assert (rc, out) == (0, "")
            assert len(agent.bodies("/v1/cni/del")) == 1
        finally:
            timer.join()
            agent.stop()
        assert DeletionQueue(os.path.join(d, "cni-delete-queue")).pending() == []


def test_del_is_answered_by_an_agent_that_started_while_it_waited_for_the_queue() -> None:
    # The agent holds the queue's exclusive lock while it creates its socket: a
    # DEL that found no socket must then be answered, not queued.
    with short_tmpdir() as d:
        agent = FakeAgent(os.path.join(d, "agent.sock"))
        queue = DeletionQueue(os.path.join(d, "cni-delete-queue"))
        lock = queue.lock(exclusive=True, timeout=1)

        def agent_starts() -> None:
            agent.start()
            lock.release()

        timer = threading.Timer(0.3, agent_starts)
        timer.start()
        try:
            rc, out, _ = invoke(ENV | {"CNI_COMMAND": "DEL"}, conf(agent))
            assert (rc, out) == (0, "")
            assert len(agent.bodies("/v1/cni/del")) == 1
            assert queue.pending() == []
        finally:
            timer.join()
            agent.stop()


# -- CHECK, GC, STATUS ------------------------------------------------------------


def test_check(agent: FakeAgent) -> None:
    env = ENV | {"CNI_COMMAND": "CHECK"}
    assert invoke(env, conf(agent, prevResult=PREV)) == (0, "", "")
    assert agent.bodies("/v1/cni/check")[0]["prev_result"] == PREV
    agent.answer("POST", "/v1/cni/check", error(400, 7, "eth0 has no address 10.1.1.5/24"))
    rc, out, _ = invoke(env, conf(agent, prevResult=PREV))
    assert rc == 1 and cni_error(out)["code"] == 7


def test_check_with_the_agent_unreachable_is_try_again_later() -> None:
    with short_tmpdir() as d:
        rc, out, _ = invoke(
            ENV | {"CNI_COMMAND": "CHECK"}, conf(os.path.join(d, "a.sock"), prevResult=PREV)
        )
    assert rc == 1 and cni_error(out)["code"] == 11


def test_gc(agent: FakeAgent) -> None:
    att = [{"containerID": "f00dcafe", "ifname": "eth0"}]
    c = conf(agent, cniVersion="1.1.0", **{"cni.dev/valid-attachments": att})
    assert invoke({"CNI_COMMAND": "GC", "CNI_PATH": "/usr/lib/cni"}, c) == (0, "", "")
    assert agent.bodies("/v1/cni/gc") == [{"valid_attachments": att, "config": c}]
    rc, out, _ = invoke({"CNI_COMMAND": "GC"}, conf(agent, cniVersion="1.1.0"))
    assert rc == 1 and cni_error(out)["code"] == 7  # no list: never "release everything"


def test_status(agent: FakeAgent) -> None:
    env = {"CNI_COMMAND": "STATUS"}
    assert invoke(env, conf(agent, cniVersion="1.1.0")) == (0, "", "")
    agent.answer("GET", "/v1/cni/status", error(503, 50, "glia agent is not ready", "kvstore: x"))
    rc, out, _ = invoke(env, conf(agent, cniVersion="1.1.0"))
    assert rc == 1
    assert out == (
        '{"cniVersion": "1.1.0", "code": 50, "details": "kvstore: x", '
        '"msg": "glia agent is not ready"}\n'
    )


def test_status_with_the_agent_unreachable_is_not_available() -> None:
    with short_tmpdir() as d:
        c = conf(os.path.join(d, "a.sock"), cniVersion="1.1.0", agentWaitSeconds=30)
        rc, out, _ = invoke({"CNI_COMMAND": "STATUS"}, c)  # answers at once: no wait
    assert rc == 1 and cni_error(out)["code"] == 50


# -- invalid input, internal errors -----------------------------------------------


def test_invalid_env_and_config_never_reach_the_agent(agent: FakeAgent) -> None:
    cases: list[tuple[dict[str, str], bytes | dict[str, Any], int]] = [
        (ENV | {"CNI_IFNAME": "a/b"}, conf(agent), 4),
        ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, conf(agent), 4),
        (ENV | {"CNI_COMMAND": "FROB"}, conf(agent), 4),
        (ENV, b"{", 6),
        (ENV, conf(agent, name=""), 7),
        (ENV, conf(agent, agentSocket="agent.sock"), 7),
        (ENV, conf(agent, cniVersion="0.2.0"), 1),
    ]
    for env, c, code in cases:
        rc, out, err = invoke(env, c)
        assert (rc, cni_error(out)["code"]) == (1, code), (env, c)
        assert "Traceback" not in err
    assert agent.requests == []


def test_error_version_follows_the_config() -> None:
    rc, out, _ = invoke(ENV | {"CNI_IFNAME": ""}, {"cniVersion": "0.4.0", "name": "x"})
    assert rc == 1
    assert cni_error(out) == {
        "cniVersion": "0.4.0",
        "code": 4,
        "msg": "required env variables [CNI_IFNAME] missing",
    }
    rc, out, _ = invoke(ENV, {"cniVersion": "7.0.0", "name": "x"})
    assert rc == 1 and cni_error(out)["cniVersion"] == "1.0.0"


def test_run_by_hand_says_what_it_is() -> None:
    rc, out, err = invoke({}, b"")
    assert rc == 1
    assert cni_error(out)["msg"] == "required env variables [CNI_COMMAND] missing"
    assert "glia-cni: CNI plugin of glia" in err
    assert "CNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0" in err


def test_unexpected_exception_is_code_999(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(plugin, "run", boom)
    rc, out, err = invoke(ENV, conf("/nonexistent.sock"))
    assert rc == 1
    assert cni_error(out) == {
        "cniVersion": "1.0.0",
        "code": 999,
        "msg": "glia-cni internal error: RuntimeError: boom",
    }
    assert "Traceback" not in err


def test_unreadable_stdin_is_an_io_error() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            raise OSError(5, "Input/output error")

    out, err = io.StringIO(), io.StringIO()
    rc = cni_main.run(ENV, io.BufferedReader(Broken()), out, err)
    assert rc == 1 and cni_error(out.getvalue())["code"] == 5


def test_closed_stdout_does_not_raise() -> None:
    out, err = io.StringIO(), io.StringIO()
    out.close()
    rc = cni_main.run({"CNI_COMMAND": "VERSION"}, io.BytesIO(b""), out, err)
    assert rc == 1
    assert "cannot write the error" in err.getvalue()


# -- the real executable ----------------------------------------------------------


def test_executable_end_to_end(agent: FakeAgent) -> None:
    env = {"PATH": os.environ.get("PATH", ""), **ENV}
    stdin = json.dumps(conf(agent)).encode()
    p = subprocess.run(
        [sys.executable, "-m", "glia.cni.main"],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["ips"][0]["address"] == "10.1.1.5/24"
    p = subprocess.run(
        [sys.executable, "-m", "glia.cni.main"],
        input=b"{",
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 1
    assert json.loads(p.stdout)["code"] == 6
    assert p.stderr == b""


def test_plugin_imports_only_the_standard_library() -> None:
    # The plugin runs once per container start: no pydantic, aiohttp, typer, rich.
    code = (
        "import sys; import glia.cni.main, glia.cni.plugin, glia.cni.deletion_queue; "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(p.stdout.split())
    glia_modules = {m for m in loaded if m.startswith("glia")}
    assert glia_modules == {
        "glia",
        "glia.agent",
        "glia.agent.client",
        "glia.cni",
        "glia.cni.deletion_queue",
        "glia.cni.invocation",
        "glia.cni.main",
        "glia.cni.plugin",
        "glia.cni.ports",
        "glia.cni.prevresult",
        "glia.cni.result",
        "glia.cni.spec",
    }
    heavy = {"pydantic", "aiohttp", "typer", "rich", "yaml", "grpc", "aetcd", "pyroute2"}
    assert not heavy & {m.split(".")[0] for m in loaded}


def test_version_does_not_import_the_http_client() -> None:
    code = (
        "import io, sys; from glia.cni import main; "
        "main.run({'CNI_COMMAND': 'VERSION'}, io.BytesIO(), io.StringIO(), sys.stderr); "
        "print('http.client' in sys.modules)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert p.stdout.strip() == "False"


# -- fuzz -------------------------------------------------------------------------


def _mostly(good: Any, *bad: Any, text: int = 0) -> st.SearchStrategy[Any]:
    """Mostly ``good``, so that fuzzing also gets past validation to the agent."""
    others: list[st.SearchStrategy[Any]] = [st.sampled_from(bad)] if bad else []
    if text:
        others.append(st.text(max_size=text))
    return st.one_of(*[st.just(good)] * 6, *others)


def _without(d: dict[str, Any], drop: set[str]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in drop}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
_env = st.builds(
    _without,
    st.fixed_dictionaries(
        {
            "CNI_COMMAND": st.sampled_from(
                ["ADD", "DEL", "CHECK", "GC", "STATUS"] * 3 + ["VERSION", "", "add", "X"]
            ),
            "CNI_CONTAINERID": _mostly("f00d", "", "-x", "a b", "a" * 128, "a" * 250, text=12),
            "CNI_NETNS": _mostly("/run/netns/x", "", "rel", "/" + "n" * 5000, text=12),
            "CNI_IFNAME": _mostly("eth0", "", "x" * 16, ".", text=18),
            "CNI_ARGS": _mostly("IgnoreUnknown=1;K8S_POD_NAME=x", "bad", ";", text=20),
        }
    ),
    st.sets(
        st.sampled_from(["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"]), max_size=1
    ),
)
_conf = st.builds(
    _without,
    st.fixed_dictionaries(
        {
            "cniVersion": _mostly("1.1.0", "1.0.0", "0.4.0", "0.2.0", "x", 1),
            "name": _mostly("glia", "", "a b", None, text=6),
            "type": _mostly("glia-cni", "", "a/b", None, 1),
            "prevResult": _mostly(
                PREV,
                {},
                [],
                "x",
                {"ips": "x"},
                {"ips": [{"address": "nope"}]},
                {**PREV, "ips": [{"address": "10.1.1.5/24", "interface": 7}]},
                {"interfaces": [{"name": 5}]},
                {"routes": [{"dst": "10.0.0.0/8", "gw": "x"}]},
                {"dns": {"nameservers": "x"}},
            ),
            "cni.dev/valid-attachments": _mostly(
                [{"containerID": "c", "ifname": "eth0"}], [], {}, [{"containerID": 1}]
            ),
            "agentWaitSeconds": _mostly(0, -1, "x", True),
            "extra": _json,
        }
    ),
    st.sets(
        st.sampled_from(["cniVersion", "name", "type", "prevResult", "agentWaitSeconds"]),
        max_size=1,
    ),
)


@pytest.fixture(scope="module")
def module_agent() -> Iterator[FakeAgent]:
    with running_fake_agent() as a:
        yield a


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(env=_env, conf_values=_conf, garbage=st.none() | st.none() | st.binary(max_size=40))
def test_fuzz_output_is_always_cni_json(
    module_agent: FakeAgent,
    env: dict[str, str],
    conf_values: dict[str, Any],
    garbage: bytes | None,
) -> None:
    # The agent socket is never random: everything the plugin reaches is the fake agent
    # (or its default, a path in the same temp dir), whatever the fuzzed config says.
    stdin = garbage if garbage is not None else json.dumps(conf_values).encode()
    seen = len(module_agent.requests)
    rc, out, err = invoke(env, stdin, default_socket=module_agent.path)
    assert rc in (0, 1)
    assert "Traceback" not in err
    if rc == 1:
        e = cni_error(out)
        assert isinstance(e["code"], int) and isinstance(e["msg"], str) and e["msg"]
        assert isinstance(e["cniVersion"], str)
        if e["code"] in (1, 2, 4, 6, 7):  # refused by the plugin: the agent heard nothing
            assert len(module_agent.requests) == seen, e
    elif env["CNI_COMMAND"] in ("ADD", "VERSION"):
        assert isinstance(json.loads(out), dict)
    else:
        assert out == ""
    for _, path, body in module_agent.requests[seen:]:
        # What reaches the agent passed every check the agent makes again.
        if path in ("/v1/cni/add", "/v1/cni/check"):
            assert len(body["container_id"]) <= spec.MAX_CONTAINER_ID
            assert body["config"]["type"] and "/" not in body["config"]["type"]
        if path == "/v1/cni/check":
            prevresult.check_prev_result(body["prev_result"])
