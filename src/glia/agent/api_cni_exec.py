"""``POST /v1/cni/exec``: run a glia-cni invocation of the compiled fast path here.

The wire is :mod:`glia.cni.shim`'s. The invocation goes through the Python
plugin's own :func:`glia.cni.main.run`, in a thread of a pool of this module
(the plugin's code blocks; the default executor must stay free for the
endpoint manager's work that the call waits for), with an in-process client in
place of the HTTP one. So the fast path prints, byte for byte, what the Python
plugin would print talking to this agent. While the agent is not ready the
route answers 503 and the fast path runs the Python plugin, which waits.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiohttp import web

from glia.agent.api_http import CODE_INTERNAL, cni_http_status, error_response, read_body
from glia.agent.client import AgentError
from glia.cni import main as cni_main
from glia.cni import shim
from glia.cni.spec import ERR_TRY_AGAIN_LATER, CniError
from glia.kvstore.errors import KVStoreError

if TYPE_CHECKING:
    from glia.agent.api import ApiServer

log = logging.getLogger(__name__)

# Concurrent invocations that run at once; more queue. Each thread mostly waits
# for the event loop, so this bounds memory, not CPU.
WORKERS = 16


class LocalAgent:
    """:class:`glia.cni.plugin.CniAgent` calling the API's methods on the event loop.

    Errors become the :class:`AgentError` the HTTP client would raise for the
    same answer, so the plugin's code treats them alike.
    """

    def __init__(self, api: ApiServer, loop: asyncio.AbstractEventLoop) -> None:
        self._api = api
        self._loop = loop

    def _call(self, make: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(self._guarded(make), self._loop).result()

    async def _guarded(
        self, make: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
    ) -> dict[str, Any]:
        try:
            return await make()
        except CniError as e:
            raise AgentError(e.code, e.msg, e.details, cni_http_status(e.code)) from None
        except KVStoreError as e:
            raise AgentError(ERR_TRY_AGAIN_LATER, f"kvstore: {e}", "", 503) from None
        except Exception as e:
            log.exception("CNI call of the fast path failed")
            raise AgentError(CODE_INTERNAL, f"{type(e).__name__}: {e}", "", 500) from None

    def cni_add(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self._api.cni_add(req))

    def cni_del(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self._api.cni_del(req))

    def cni_check(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self._api.cni_check(req))

    def cni_gc(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self._api.cni_gc(req))

    def cni_status(self) -> dict[str, Any]:
        return self._call(self._api.cni_status)


def run_invocation(env: dict[str, str], stdin: bytes, agent: LocalAgent) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of the plugin's run on this invocation."""
    out, err = io.StringIO(), io.StringIO()
    code = cni_main.run(env, io.BytesIO(stdin), out, err, client=agent)
    return code, out.getvalue(), err.getvalue()


def add_routes(app: web.Application, api: ApiServer) -> None:
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="glia-cni-exec")

    async def shutdown(_: web.Application) -> None:
        pool.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(shutdown)
    app.router.add_post(shim.EXEC_PATH, _handler(api, pool))


def _handler(
    api: ApiServer, pool: ThreadPoolExecutor
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        body = await read_body(request, shim.MAX_INPUT + 64 * 1024)
        try:
            env, stdin = shim.decode_request(body)
        except shim.ExecRequestError as e:
            return error_response(400, CODE_INTERNAL, f"not a glia-cni exec request: {e}")
        if not api.ready:
            # The Python plugin waits for readiness (agentWaitSeconds); this route does not.
            return error_response(503, ERR_TRY_AGAIN_LATER, "glia agent is not ready yet")
        loop = asyncio.get_running_loop()
        code, out, err = await loop.run_in_executor(
            pool, run_invocation, env, stdin, LocalAgent(api, loop)
        )
        stdout = out.encode()
        return web.Response(
            body=stdout + err.encode(errors="replace"),
            content_type="application/octet-stream",
            headers={shim.EXIT_HEADER: str(code), shim.STDOUT_HEADER: str(len(stdout))},
        )

    return handle
