"""glia-cni's compiled fast path (native/glia-cni.c, built by `make bpf`) against a real
ApiServer: it must print, byte for byte, what the Python plugin prints, and hand
whatever it cannot carry to the Python plugin.

The agent behind the API is the plain state object of test_agent_api with an
endpoint manager that records its calls (no kernel, no kvstore): the wire, the
in-process client and the fallback are under test, not the endpoint lifecycle.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_agent_api import AgentState
from test_agent_client import add_result, short_tmpdir

from glia.agent.api import ApiServer
from glia.cni import shim
from glia.cni.deletion_queue import DeletionQueue
from glia.cni.spec import CniError
from glia.lab.base import bin_dir, cni_plugin

FAST = cni_plugin()
PYTHON = bin_dir() / "glia-cni"
ENV = {
    "CNI_CONTAINERID": "f00dcafe",
    "CNI_NETNS": "/run/netns/netns-1",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web",
    "CNI_PATH": "/usr/lib/cni",
}


class RecordingEndpoints:
    """The endpoint manager's CNI calls: recorded; ADD of pod ``bad`` fails with code 7."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def add(self, req: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("add", req))
        if (req.get("args") or {}).get("K8S_POD_NAME") == "bad":
            raise CniError(7, "bad pod", "the name is bad")
        return add_result(req)[1]  # type: ignore[no-any-return]

    async def delete(self, req: dict[str, Any]) -> None:
        self.calls.append(("del", req))

    async def check(self, req: dict[str, Any]) -> None:
        self.calls.append(("check", req))

    async def gc(self, valid: list[tuple[str, str]]) -> int:
        self.calls.append(("gc", valid))
        return 0


@dataclass
class Agent:
    socket: str
    state: AgentState
    endpoints: RecordingEndpoints
    exec_requests: list[int] = field(default_factory=list)


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    with short_tmpdir() as d:
        state = AgentState()
        endpoints = RecordingEndpoints()
        state.endpoints = endpoints  # type: ignore[assignment]
        state.ready.set()
        path = os.path.join(d, "agent.sock")
        server = ApiServer(state, path)  # type: ignore[arg-type]
        await server.start()
        try:
            yield Agent(path, state, endpoints)
        finally:
            await server.stop()


def conf(socket: str, **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "glia",
        "type": "glia-cni",
        "agentSocket": socket,
        "agentWaitSeconds": 0,
        **extra,
    }


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def _run(plugin: Path, env: dict[str, str], stdin: bytes) -> Outcome:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GLIA_CNI_DEBUG": "1", **env}
    p = subprocess.run([str(plugin)], env=full, input=stdin, capture_output=True, timeout=60)
    return Outcome(p.returncode, p.stdout.decode(), p.stderr.decode())


async def both(env: dict[str, str], stdin: bytes | dict[str, Any]) -> tuple[Outcome, Outcome]:
    """(fast path, Python plugin) on one invocation; their stdout and exit code must agree."""
    raw = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
    fast = await asyncio.to_thread(_run, FAST, env, raw)
    python = await asyncio.to_thread(_run, PYTHON, env, raw)
    assert (fast.code, fast.stdout) == (python.code, python.stdout)
    return fast, python


LEFT = "fast path left"


# -- the build --------------------------------------------------------------------


def test_the_fast_path_is_built_with_this_checkouts_python_plugin() -> None:
    assert os.access(FAST, os.X_OK), "run `make bpf`"
    header = (FAST.parents[1] / "native" / "glia-cni-shim.h").read_text()
    assert header == shim.header(PYTHON), "the header is stale: run `make bpf`"


def test_version_is_the_python_plugins_without_an_agent() -> None:
    fast = _run(FAST, {"CNI_COMMAND": "VERSION"}, b"garbage")
    python = _run(PYTHON, {"CNI_COMMAND": "VERSION"}, b"garbage")
    assert fast == Outcome(0, python.stdout, "")
    assert json.loads(fast.stdout)["supportedVersions"][-1] == "1.1.0"


# -- carried to the agent ---------------------------------------------------------


async def test_add_through_the_agent_prints_the_python_plugins_result(agent: Agent) -> None:
    fast, _ = await both({**ENV, "CNI_COMMAND": "ADD"}, conf(agent.socket))
    assert LEFT not in fast.stderr
    result = json.loads(fast.stdout)
    assert result["ips"][0]["address"] == "10.1.1.5/24"
    adds = [req for verb, req in agent.endpoints.calls if verb == "add"]
    assert len(adds) == 2 and adds[0] == adds[1]  # the same request either way
    assert adds[0]["container_id"] == "f00dcafe" and adds[0]["args"]["K8S_POD_NAME"] == "web"


async def test_agent_errors_keep_their_code_and_details(agent: Agent) -> None:
    env = {**ENV, "CNI_COMMAND": "ADD", "CNI_ARGS": "K8S_POD_NAME=bad"}
    fast, _ = await both(env, conf(agent.socket))
    assert LEFT not in fast.stderr
    assert fast.code == 1
    assert json.loads(fast.stdout) == {
        "cniVersion": "1.0.0",
        "code": 7,
        "msg": "bad pod",
        "details": "the name is bad",
    }


@pytest.mark.parametrize("verb", ["DEL", "CHECK", "STATUS"])
async def test_verbs_without_output(agent: Agent, verb: str) -> None:
    version = "1.1.0" if verb == "STATUS" else "1.0.0"
    prev = add_result({"ifname": "eth0", "netns": ENV["CNI_NETNS"]})[1]
    stdin = conf(agent.socket, cniVersion=version, prevResult=prev)
    fast, _ = await both({**ENV, "CNI_COMMAND": verb}, stdin)
    assert (fast.code, fast.stdout) == (0, "")
    assert LEFT not in fast.stderr


async def test_gc(agent: Agent) -> None:
    stdin = conf(
        agent.socket,
        cniVersion="1.1.0",
        **{"cni.dev/valid-attachments": [{"containerID": "abc", "ifname": "eth0"}]},
    )
    fast, _ = await both({**ENV, "CNI_COMMAND": "GC"}, stdin)
    assert (fast.code, LEFT in fast.stderr) == (0, False)
    assert ("gc", [("abc", "eth0")]) in agent.endpoints.calls


async def test_invalid_invocations_are_refused_alike(agent: Agent) -> None:
    missing_id = {k: v for k, v in ENV.items() if k != "CNI_CONTAINERID"}
    fast, _ = await both({**missing_id, "CNI_COMMAND": "ADD"}, conf(agent.socket))
    assert fast.code == 1 and json.loads(fast.stdout)["code"] == 4
    fast, _ = await both({**ENV, "CNI_COMMAND": "BOGUS"}, conf(agent.socket))
    assert fast.code == 1
    assert agent.endpoints.calls == []


async def test_only_the_top_level_agent_socket_counts(agent: Agent) -> None:
    stdin = {"args": {"agentSocket": "/nonexistent/a.sock"}, **conf(agent.socket)}
    stdin["plugins"] = [{"agentSocket": "/nonexistent/b.sock"}]
    fast, _ = await both({**ENV, "CNI_COMMAND": "ADD"}, stdin)
    assert fast.code == 0 and LEFT not in fast.stderr


async def test_the_last_of_repeated_keys_counts_as_in_python(agent: Agent) -> None:
    raw = json.dumps(conf(agent.socket))[:-1] + ', "agentSocket": "/nonexistent/x.sock"}'
    fast, _ = await both({**ENV, "CNI_COMMAND": "ADD"}, raw.encode())
    assert fast.code == 1 and "/nonexistent/x.sock" in fast.stdout + fast.stderr


# -- handed to the Python plugin ------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[1, 2]",
        b'{"cniVersion": "1.0.0", "name": ',
        b'{"agentSocket": 5}',
        b"\xef\xbb\xbf{}",
    ],
    ids=["empty", "not-an-object", "truncated", "socket-not-a-string", "bom"],
)
async def test_what_the_scan_cannot_read_goes_to_the_python_plugin(
    agent: Agent, raw: bytes
) -> None:
    fast, _ = await both({**ENV, "CNI_COMMAND": "ADD"}, raw)
    assert fast.code == 1 and LEFT in fast.stderr


async def test_an_escaped_socket_path_goes_to_the_python_plugin(agent: Agent) -> None:
    raw = json.dumps(conf(agent.socket)).replace("/", "\\/").encode()
    fast, _ = await both({**ENV, "CNI_COMMAND": "ADD"}, raw)
    assert fast.code == 0 and LEFT in fast.stderr
    assert json.loads(fast.stdout)["ips"]


async def test_an_agent_that_is_not_ready_sends_it_to_the_python_plugin(agent: Agent) -> None:
    agent.state.ready.clear()
    fast, _ = await both({**ENV, "CNI_COMMAND": "ADD"}, conf(agent.socket))
    assert LEFT in fast.stderr
    assert fast.code == 1 and json.loads(fast.stdout)["code"] == 11
    assert agent.endpoints.calls == []


async def test_del_with_the_agent_down_is_queued_by_the_python_plugin() -> None:
    with short_tmpdir() as d:
        socket = os.path.join(d, "agent.sock")
        queue = os.path.join(d, "queue")
        stdin = json.dumps(conf(socket, deleteQueueDir=queue)).encode()
        fast = await asyncio.to_thread(_run, FAST, {**ENV, "CNI_COMMAND": "DEL"}, stdin)
        assert (fast.code, fast.stdout) == (0, "")
        assert LEFT in fast.stderr and "queued" in fast.stderr
        (entry,) = DeletionQueue(queue).pending()
        assert entry.request is not None and entry.request["container_id"] == "f00dcafe"


# -- the wire -------------------------------------------------------------------------


def test_exec_request_round_trip() -> None:
    env = {**ENV, "CNI_COMMAND": "ADD", "PATH": "/bin", "CNI_ARGS": "A=b=c;\xe9"}
    body = shim.encode_request(env, b'{"x": "\\u0000"}')
    got_env, stdin = shim.decode_request(body)
    assert got_env == {k: v for k, v in env.items() if k.startswith("CNI_")}
    assert stdin == b'{"x": "\\u0000"}'


@given(
    st.dictionaries(
        st.from_regex(r"CNI_[A-Z_]{1,12}", fullmatch=True),
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30
        ),
    ),
    st.binary(max_size=200),
)
def test_exec_request_round_trip_fuzz(env: dict[str, str], stdin: bytes) -> None:
    assert shim.decode_request(shim.encode_request(env, stdin)) == (env, stdin)


@pytest.mark.parametrize("body", [b"", b"CNI_COMMAND=ADD\0", b"PATH=/bin\0\0{}", b"NOEQ\0\0"])
def test_malformed_exec_requests_are_refused(body: bytes) -> None:
    with pytest.raises(shim.ExecRequestError):
        shim.decode_request(body)


JSONISH = ['"agentSocket"', '"a"', "{", "}", "[", "]", ",", ":", '"x\\"y"', "1", " "]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(JSONISH), max_size=12))
def test_fuzz_any_configuration_prints_what_the_python_plugin_prints(parts: list[str]) -> None:
    # No agent: whatever the scan makes of it, both end in the same CNI error.
    raw = ("{" + "".join(parts)).encode()
    env = {**ENV, "CNI_COMMAND": "ADD"}
    fast, python = _run(FAST, env, raw), _run(PYTHON, env, raw)
    assert (fast.code, fast.stdout) == (python.code, python.stdout)
