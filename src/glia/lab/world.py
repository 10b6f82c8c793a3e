"""The lab's "world": an HTTP server outside every pod pool, for egress tests.

Started by :meth:`glia.lab.lab.Lab.up` inside ``<lab>-world`` (a namespace on
the underlay, :mod:`glia.lab.underlay`) as ``python -m glia.lab.world``; run by
hand with ``glia lab exec``-style tools to see what the world sees. Every
answer names the client's address as the world saw it, so a test can tell a
masqueraded pod (the node's IP) from an unmasqueraded one (the pod's IP):

    GET / -> 200 "glia world: client 198.18.1.1\\n"

:func:`answer` is pure; :func:`main` is the shell.
"""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer(client_ip: str) -> bytes:
    """The page the world serves to ``client_ip``."""
    return f"glia world: client {client_ip}\n".encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = answer(self.client_address[0])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        line = f"{self.client_address[0]} {format % args}\n"
        sys.stdout.write(line)
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glia.lab.world")
    parser.add_argument("--bind", required=True, help="address to listen on")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--lab", required=True, help="the lab's name (identifies the process)")
    parser.add_argument("--dir", required=True, help="the lab's world directory (for `lab down`)")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.bind, args.port), _Handler)
    server.daemon_threads = True
    print(f"{args.lab} world serving on {args.bind}:{args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
