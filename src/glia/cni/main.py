"""``glia-cni``: the executable a container runtime runs for each CNI verb.

Entry point of the console script (``glia-cni = glia.cni.main:main``). All
input (environment, stdin) and output (stdout, stderr) are parameters of
:func:`run` so tests drive it in-process. On success it prints the result (ADD)
or nothing and exits 0; on any failure it prints CNI error JSON on stdout and
exits 1. It never lets a traceback out: an unexpected exception becomes code 999
with its message.

Import budget: this runs once per container start, so only the standard
library is imported (see ``python -X importtime -m glia.cni.main``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from glia.cni import invocation, result, spec
from glia.cni.spec import CniError

if TYPE_CHECKING:
    from glia.cni.plugin import CniAgent

ABOUT = "glia-cni: CNI plugin of glia (forwards to the glia agent's API)"


def run(
    env: Mapping[str, str],
    stdin: IO[bytes],
    stdout: IO[str],
    stderr: IO[str],
    *,
    default_socket: str = spec.DEFAULT_AGENT_SOCKET,
    client: CniAgent | None = None,
) -> int:
    """One plugin run; returns the exit code (0 or 1).

    ``client``: the agent to call instead of the one at the configuration's
    socket (the agent passes itself when it runs an invocation of the fast path).
    """
    raw = b""
    try:
        cmd = spec.command_of(env)
        if cmd == "VERSION":
            # VERSION needs no configuration and no agent (libcni ignores stdin too).
            _print(stdout, result.version_output())
            return 0
        try:
            raw = stdin.read()
        except (OSError, ValueError) as e:
            raise CniError(spec.ERR_IO, f"error reading from stdin: {e}") from e
        inv = invocation.parse_invocation(env, raw)
        settings = spec.plugin_settings(inv.config, default_socket)

        # Imported here so that VERSION and invalid invocations skip http.client.
        from glia.cni import plugin

        out = plugin.run(inv, settings, lambda line: _note(stderr, line), client)
        if out is not None:
            _print(stdout, out)
        return 0
    except CniError as e:
        if e.code == spec.ERR_INVALID_ENV and not env.get("CNI_COMMAND"):
            # Someone ran the binary by hand: say what it is, as libcni's skel does.
            versions = ", ".join(spec.SUPPORTED_VERSIONS)
            _note(stderr, f"{ABOUT}\nCNI protocol versions supported: {versions}")
        return _fail(stdout, stderr, e, raw)
    except (Exception, KeyboardInterrupt) as e:
        err = CniError(spec.ERR_INTERNAL, f"glia-cni internal error: {type(e).__name__}: {e}")
        return _fail(stdout, stderr, err, raw)


def _fail(stdout: IO[str], stderr: IO[str], err: CniError, raw: bytes) -> int:
    try:
        _print(stdout, err.to_json(result.error_version(_declared_version(raw))))
    except Exception as e:  # stdout closed: nothing left to tell the runtime
        _note(stderr, f"glia-cni: cannot write the error ({err.msg}): {e}")
    return 1


def _note(stderr: IO[str], text: str) -> None:
    """A line for humans on stderr; losing it must not change the outcome."""
    with contextlib.suppress(Exception):
        print(text, file=stderr, flush=True)


def _declared_version(raw: bytes) -> str | None:
    try:
        conf = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    version = conf.get("cniVersion") if isinstance(conf, dict) else None
    return version if isinstance(version, str) else None


def _print(stdout: IO[str], obj: dict[str, Any]) -> None:
    stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    stdout.flush()


def main() -> None:
    # A runtime may start us with stdin closed; that reads as an empty configuration.
    stdin = sys.stdin.buffer if sys.stdin is not None else io.BytesIO()
    sys.exit(run(os.environ, stdin, sys.stdout, sys.stderr))


if __name__ == "__main__":
    main()
