"""The request/response load tool of glia's benchmarks (``bench/_loadtool.py``).

Run as a script it is the request/response tool the benchmarks start inside
namespaces with ``nsenter --net=... python bench/_loadtool.py``:

- ``rr-server --port P``: accepts connections one after the other and answers
  every byte with one byte;
- ``rr-client --host H --port P --count N --connects M``: N one-byte round
  trips over one connection (``TCP_NODELAY``), then M fresh connections each
  doing one round trip; prints ``{"rr_us": [...], "crr_us": [...]}``;
- ``http-crr --target LABEL,NETNS,HOST,PORT[,CGROUP] [--target ...] --count N``:
  N rounds, each making one request per target in turn (the order rotating
  from round to round): a fresh connection, ``GET /`` with ``Connection:
  close``, the whole answer read until the server closes. The connections
  are made by one worker process per target (so every target's connection
  starts alike, with a wake-up of its own worker: with a process per cgroup,
  the first target after a switch of process paid some 10 µs more, measured),
  which joins the target's cgroup v2 (none: the tool's own) once at start
  (moving a process between cgroups is far slower than a connection) and
  holds a thread that entered the target's NETNS once (a setns right before a connection slows that
  connection down by some 100 µs). The tool hands the workers one
  connection at a time over pipes and each worker times just the
  connection, so paths in different namespaces and cgroups are measured
  interleaved, connection by connection, and drift of a noisy machine hits
  them alike. Prints ``{"crr_us": {LABEL: [...]}}``. For HTTP servers such
  as nginx, which ``rr-server``'s one-byte protocol cannot talk to; the
  cgroup is how a client gets (or avoids) cgroup BPF programs such as
  glia's socket load-balancer.

Only the standard library is imported at the top, so the tool starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import BenchError, thread_in_netns  # bench/ is a folder of scripts

# --- request/response tool ------------------------------------------------------


def rr_server(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port))
        srv.listen(128)
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while data := conn.recv(1):
                    conn.sendall(data)


def _round_trip(sock: socket.socket) -> None:
    sock.sendall(b"x")
    if not sock.recv(1):
        raise BenchError("the server closed the connection")


def rr_client(host: str, port: int, count: int, connects: int, warmup: int) -> dict[str, Any]:
    """Round-trip times in µs: ``count`` on one connection, ``connects`` on fresh ones."""
    clock = time.perf_counter_ns
    rr: list[float] = []
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(warmup):
            _round_trip(sock)
        for _ in range(count):
            t0 = clock()
            _round_trip(sock)
            rr.append((clock() - t0) / 1000)
    crr: list[float] = []
    for _ in range(connects):
        t0 = clock()
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _round_trip(sock)
        crr.append((clock() - t0) / 1000)
    return {"rr_us": [round(v, 2) for v in rr], "crr_us": [round(v, 2) for v in crr]}


@dataclass(frozen=True)
class HttpTarget:
    label: str
    netns: str  # path of the namespace to connect from ("" = the tool's own)
    host: str
    port: int
    cgroup: str = ""  # cgroup v2 directory of the connecting process ("" = the tool's own)

    @classmethod
    def parse(cls, text: str) -> HttpTarget:
        parts = text.split(",")
        if len(parts) in (4, 5):
            with contextlib.suppress(ValueError):
                return cls(parts[0], parts[1], parts[2], int(parts[3]), *parts[4:])
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL,NETNS,HOST,PORT[,CGROUP]")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> HttpTarget:
        return cls(**json.loads(text))


def _http_once(target: HttpTarget) -> float:
    """µs for one connect + ``GET /`` + answer until close, from the calling thread."""
    request = f"GET / HTTP/1.1\r\nHost: {target.host}\r\nConnection: close\r\n\r\n".encode()
    t0 = time.perf_counter_ns()
    with socket.create_connection((target.host, target.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    elapsed = (time.perf_counter_ns() - t0) / 1000
    if not got.startswith(b"HTTP/1.1 200"):
        where = f"{target.label} ({target.host}:{target.port})"
        raise BenchError(f"unexpected answer from {where}: {got[:60]!r}")
    return elapsed


class _NetnsWorker:
    """A thread inside one namespace, making one connection each time it is asked."""

    def __init__(self, netns: str) -> None:
        self._netns = netns
        self._ask: queue.SimpleQueue[HttpTarget | None] = queue.SimpleQueue()
        self._answer: queue.SimpleQueue[float | BaseException] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=f"glia-bench-crr:{netns}")
        self._thread.start()

    def _serve(self) -> None:
        try:
            ctx = thread_in_netns(self._netns) if self._netns else contextlib.nullcontext()
            with ctx:
                while (target := self._ask.get()) is not None:
                    try:
                        self._answer.put(_http_once(target))
                    except (OSError, BenchError) as e:
                        self._answer.put(e)
        except BaseException as e:  # setns failed: every later question gets this answer
            self._answer.put(e)

    def once(self, target: HttpTarget) -> float:
        self._ask.put(target)
        got = self._answer.get()
        if isinstance(got, BaseException):
            raise BenchError(f"{target.label} ({target.host}:{target.port}): {got}")
        return got

    def stop(self) -> None:
        self._ask.put(None)
        self._thread.join()


# --- cgroups -------------------------------------------------------------------

# Runs argv in the cgroup v2 directory $0: the shell joins it, then execs (same PID).
_JOIN_CGROUP = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


def in_cgroup(cgroup: Path | str, argv: Sequence[str]) -> list[str]:
    """``argv`` started inside the cgroup v2 directory ``cgroup`` (its children too)."""
    return ["sh", "-c", _JOIN_CGROUP, str(cgroup), *argv]


def join_cgroup(cgroup: str) -> None:
    """Move the calling process, all its threads, into the cgroup v2 directory ``cgroup``.

    Once, at a process's start: moving a process between cgroups is slow,
    far slower than a connection.
    """
    procs = Path(cgroup) / "cgroup.procs"
    pid = str(os.getpid())
    try:
        procs.write_text(pid)
        inside = pid in procs.read_text().split()
    except OSError as e:
        raise BenchError(f"joining cgroup {cgroup}: {e.strerror or e}") from None
    if not inside:
        raise BenchError(f"joined cgroup {cgroup}, yet {procs} does not list pid {pid}")


class _CgroupWorker:
    """An ``http-crr-worker`` process in one cgroup, making one connection when asked.

    It speaks JSON lines over its stdin and stdout: a target in, ``{"us": ...}``
    or ``{"error": ...}`` out; it ends when its stdin closes.
    """

    def __init__(self, cgroup: str) -> None:
        self._where = f"cgroup {cgroup}" if cgroup else "the tool's cgroup"
        argv = [sys.executable, str(Path(__file__).resolve()), "http-crr-worker"]
        self._proc = subprocess.Popen(
            [*argv, *(["--cgroup", cgroup] if cgroup else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            ready = self._read()
        except BenchError:
            self.stop()
            raise
        if "error" in ready:
            self.stop()
            raise BenchError(f"http-crr worker in {self._where}: {ready['error']}")

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            raise BenchError(f"the http-crr worker in {self._where} exited with {code}")
        got: dict[str, Any] = json.loads(line)
        return got

    def once(self, target: HttpTarget) -> float:
        assert self._proc.stdin is not None
        self._proc.stdin.write(target.to_json().encode() + b"\n")
        self._proc.stdin.flush()
        got = self._read()
        if "error" in got:
            raise BenchError(str(got["error"]))
        return float(got["us"])

    def stop(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()  # our own child, by its PID
            self._proc.wait(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def http_crr_worker(cgroup: str) -> int:
    """The worker side of :class:`_CgroupWorker`: join ``cgroup`` once, then serve."""
    out = sys.stdout
    try:
        if cgroup:
            join_cgroup(cgroup)
    except BenchError as e:
        out.write(json.dumps({"error": str(e)}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps({"ready": cgroup}) + "\n")
    out.flush()
    threads: dict[str, _NetnsWorker] = {}
    try:
        while line := sys.stdin.buffer.readline():
            target = HttpTarget.from_json(line)
            if target.netns not in threads:
                threads[target.netns] = _NetnsWorker(target.netns)
            try:
                answer: dict[str, Any] = {"us": threads[target.netns].once(target)}
            except BenchError as e:
                answer = {"error": str(e)}
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        for worker in threads.values():
            worker.stop()
    return 0


def http_crr(targets: Sequence[HttpTarget], count: int, warmup: int) -> dict[str, Any]:
    """µs per fresh connection + ``GET /`` + the answer read until the server closes,
    per target, the targets interleaved (see the module docstring)."""
    out: dict[str, list[float]] = {t.label: [] for t in targets}
    workers: dict[str, _CgroupWorker] = {}
    try:
        for t in targets:
            workers[t.label] = _CgroupWorker(t.cgroup)
        for i in range(warmup + count):
            k = i % len(targets)
            for target in [*targets[k:], *targets[:k]]:
                us = workers[target.label].once(target)
                if i >= warmup:
                    out[target.label].append(round(us, 2))
    finally:
        for worker in workers.values():
            worker.stop()
    return {"crr_us": out}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="request/response load for glia's benchmarks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    srv = sub.add_parser("rr-server")
    srv.add_argument("--port", type=int, required=True)
    cli = sub.add_parser("rr-client")
    cli.add_argument("--host", required=True)
    cli.add_argument("--port", type=int, required=True)
    cli.add_argument("--count", type=int, default=5000)
    cli.add_argument("--connects", type=int, default=0)
    cli.add_argument("--warmup", type=int, default=200)
    http = sub.add_parser("http-crr")
    http.add_argument("--target", action="append", required=True, type=HttpTarget.parse)
    http.add_argument("--count", type=int, default=1000)
    http.add_argument("--warmup", type=int, default=50)
    worker = sub.add_parser("http-crr-worker", help="one of http-crr's processes (internal)")
    worker.add_argument("--cgroup", default="")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "rr-server":
            rr_server(args.port)
        elif args.cmd == "http-crr":
            print(json.dumps(http_crr(args.target, args.count, args.warmup)))
        elif args.cmd == "http-crr-worker":
            return http_crr_worker(args.cgroup)
        else:
            result = rr_client(args.host, args.port, args.count, args.connects, args.warmup)
            print(json.dumps(result))
    except (OSError, BenchError) as e:
        print(f"{args.cmd}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
