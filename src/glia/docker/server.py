"""The plugin socket dockerd talks to: ``POST /<Call>`` with JSON, answered with JSON.

Started by :mod:`glia.agent.docker_start` on the agent's ``docker_plugin_socket``.
Every answer is HTTP 200 with the call's result, or an error status with
``{"Err": "..."}`` (what libnetwork's plugin client shows the user); a body
that is not JSON is refused the same way.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from glia.docker.driver import DockerDriver
from glia.docker.protocol import DriverError

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_BODY = 1024 * 1024  # libnetwork's requests are a few hundred bytes


def _answer(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def make_app(driver: DockerDriver) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        call = request.match_info["call"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return _answer({"Err": f"glia: {call[:80]}: the body is not JSON"}, 400)
        try:
            answer = await driver.call(call, body)
        except DriverError as e:
            log.warning("docker %s refused: %s", call, e)
            return _answer({"Err": str(e)}, 400)
        except Exception as e:  # an answer dockerd can show beats a dropped connection
            log.exception("docker %s failed", call)
            return _answer({"Err": f"glia: {call} failed: {e}"}, 500)
        log.debug("docker %s -> %s", call, answer)
        return _answer(answer)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/{call}", handle)
    return app


class PluginServer:
    def __init__(self, driver: DockerDriver, path: str) -> None:
        self._app = make_app(driver)
        self._path = path
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(self._path):
            os.unlink(self._path)  # a dead agent's socket
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, self._path).start()
        os.chmod(self._path, 0o600)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
