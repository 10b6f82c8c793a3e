"""The agent API's HTTP contract in one place: error bodies, codes, the body limit, JSON bodies.

Used by :mod:`glia.agent.api` (the server and its error middleware) and
:mod:`glia.agent.api_config` (the declared-resource routes); documented in
docs/agent-api.md, section "Errors". Every error the API answers, its own or
aiohttp's (unknown route, wrong method, body too large), is
``{"error": {"code": int, "msg": str, "details": str}}`` with an HTTP status
>= 400. ``code`` follows the CNI spec's error codes, so the CNI plugin can pass
it on unchanged: 7 the request is wrong (sending it again will fail again), 11
try again later, 50 the agent is not ready, 999 an internal error.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from glia.cni.spec import ERR_IO, ERR_NOT_AVAILABLE, ERR_TRY_AGAIN_LATER

CODE_INVALID = 7  # CNI "invalid network config": the request is wrong
CODE_TRY_AGAIN = 11  # CNI "try again later"
CODE_NOT_READY = 50  # CNI "plugin not available"
CODE_INTERNAL = 999  # what libcni uses for an error without a code

# Largest request body the API reads. `glia apply -f` sends a file's Services
# in one body: 1,000 Services of ~500 bytes of JSON each are ~0.5 MiB, and
# Services with many ports, selectors and annotations reach a few KiB each, so
# 8 MiB leaves room for 1,000 of them and still bounds what one client makes
# the agent hold in memory.
MAX_REQUEST_BODY = 8 * 1024 * 1024
_READ_CHUNK = 64 * 1024


class ApiError(Exception):
    """A failure with its HTTP status and error body; raised by handlers, answered as JSON."""

    def __init__(self, status: int, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.details = status, code, msg, details

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.msg, self.details)


def error_response(
    status: int, code: int, msg: str, details: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "msg": msg, "details": details}}, status=status, headers=headers
    )


def _size(n: int) -> str:
    return f"{n} bytes" + (f" ({n / 1024 / 1024:g} MiB)" if n >= 1024 * 1024 else "")


def too_large(size: int | None, limit: int = MAX_REQUEST_BODY) -> ApiError:
    """The 413 error, naming the body's size when known and the limit."""
    what = f"request body of {size} bytes" if size is not None else "request body"
    return ApiError(
        413,
        CODE_INVALID,
        f"{what} exceeds the limit of {_size(limit)}",
        "split the request (e.g. the file given to `glia apply -f`) into smaller ones",
    )


async def read_body(request: web.Request, limit: int = MAX_REQUEST_BODY) -> bytes:
    """The whole body, at most ``limit`` bytes; :func:`too_large` otherwise.

    Read here rather than by aiohttp's ``client_max_size``, so the limit and its
    message are the same whichever application mounts the route.
    """
    size = request.content_length
    if size is not None and size > limit:
        raise too_large(size, limit)
    body = bytearray()
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) > limit:
            raise too_large(size, limit)
    return bytes(body)


async def read_json(request: web.Request) -> Any:
    """The body decoded as JSON; a 400 naming the problem, or the 413 of :func:`read_body`."""
    raw = await read_body(request)
    if not raw.strip():
        raise ApiError(400, CODE_INVALID, "request body is empty: expected JSON")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(
            400, CODE_INVALID, f"request body is not UTF-8 text (invalid byte at offset {e.start})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(
            400,
            CODE_INVALID,
            f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
        ) from None
    except RecursionError:
        raise ApiError(
            400, CODE_INVALID, "request body is not valid JSON: nested too deeply"
        ) from None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(
            400, CODE_INVALID, f"request body must be a JSON object, not {_json_kind(body)}"
        )
    return body


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def http_error(request: web.Request, e: web.HTTPException) -> web.Response:
    """aiohttp's own HTTP errors (no route, wrong method, too large) as the API's JSON error."""
    if isinstance(e, web.HTTPNotFound):
        return error_response(
            404,
            CODE_INVALID,
            f"no route {request.path} (the routes are listed in docs/agent-api.md)",
        )
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        return error_response(
            405,
            CODE_INVALID,
            f"method {request.method} is not allowed on {request.path} (allowed: {allowed})",
            headers={"Allow": ",".join(sorted(e.allowed_methods))},
        )
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        return too_large(request.content_length).response()
    code = CODE_INTERNAL if e.status >= 500 else CODE_INVALID
    return error_response(e.status, code, f"HTTP {e.status} {e.reason}", e.text or "")


def cni_http_status(code: int) -> int:
    """The HTTP status of a CNI error code: later (503), the agent's fault (500), the caller's."""
    if code in (ERR_TRY_AGAIN_LATER, ERR_NOT_AVAILABLE):
        return 503
    if code == ERR_IO or code >= 100:
        return 500
    return 400
