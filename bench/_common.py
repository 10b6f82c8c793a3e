"""Helpers shared by glia's benchmarks (``bench/*.py``), and a tiny load tool.

Imported by ``bench/pods.py`` and ``bench/services.py`` for: statistics
(percentiles, medians, ratios), JSON output, bar-chart plotting with the
glia/reference ratio written on the bars, named network namespaces (every
name starts with "glia"), commands started inside a cgroup v2, background
processes killed by PID, a poll-until helper, and an ICMP echo probe that
runs in a thread inside any namespace.

Run as a script it is the request/response tool the benchmarks start inside
namespaces with ``nsenter --net=... python bench/_common.py``:

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
import ctypes
import ctypes.util
import fcntl
import json
import math
import os
import platform
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and why."""


# --- statistics --------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in 0..100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def summary(values: Sequence[float], digits: int = 1) -> dict[str, float | int]:
    """n, min, p50, p90, p99, max and mean of ``values``, rounded to ``digits``."""
    if not values:
        raise ValueError("summary of no values")
    stats = {
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }
    return {"n": len(values), **{k: round(v, digits) for k, v in stats.items()}}


def ratio(value: float, reference: float, digits: int = 2) -> float | None:
    """``value / reference`` rounded, or None when the reference is zero."""
    return round(value / reference, digits) if reference else None


# --- output ------------------------------------------------------------------


def write_json(path: Path, doc: Mapping[str, Any]) -> str:
    """Write ``doc`` as indented JSON to ``path`` (creating its folder); returns the text."""
    text = json.dumps(doc, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def log(text: str) -> None:
    """Progress for humans on stderr: stdout carries only the JSON document."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


class LogReporter:
    """A lab's reporter (``Lab.open(reporter=...)``) that logs its steps, not its notes."""

    def step(self, text: str) -> None:
        log(text)

    def note(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    is_glia: bool = False
    color: str | None = None  # default: glia blue, else the next reference colour


@dataclass(frozen=True)
class Group:
    """Bars side by side; each non-glia bar gets "glia/this" (first glia bar / it) on it."""

    label: str
    bars: tuple[Bar, ...]


GLIA_COLOR = "#2a7ab0"
REFERENCE_COLORS = ("#9a9a9a", "#c9a227", "#6bb36b")


def bar_panel(ax: Any, title: str, unit: str, groups: Sequence[Group]) -> None:
    """Grouped bars on matplotlib axes ``ax``, with the glia/reference ratios annotated.

    Each bar has its value on top; each reference bar also has "glia/this" inside
    (above it when the bar is too short to hold the text).
    """
    width = 0.8 / max(len(g.bars) for g in groups)
    top = max((b.value for g in groups for b in g.bars), default=1.0) or 1.0
    seen: dict[str, str] = {}
    for gi, group in enumerate(groups):
        glia = next((b for b in group.bars if b.is_glia), None)
        start = gi - width * (len(group.bars) - 1) / 2
        refs = 0
        for bi, bar in enumerate(group.bars):
            if bar.color is not None:
                color = bar.color
            elif bar.is_glia:
                color = GLIA_COLOR
            else:
                color = seen.get(bar.label) or REFERENCE_COLORS[refs % len(REFERENCE_COLORS)]
                refs += 1
            label = None if bar.label in seen else bar.label
            seen.setdefault(bar.label, color)
            x = start + bi * width
            ax.bar(x, bar.value, width * 0.95, color=color, label=label)
            text = f"{bar.value:.3g}"
            if glia is not None and not bar.is_glia and bar.value:
                note = f"glia/this\n{glia.value / bar.value:.2f}"
                if bar.value >= top * 0.2:  # inside the bar, clear of the neighbours' labels
                    ax.text(
                        x,
                        bar.value / 2,
                        note,
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white",
                        fontweight="bold",
                    )
                else:
                    text += "\n" + note
            ax.text(x, bar.value + top * 0.01, text, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), [g.label for g in groups], fontsize=8)
    ax.set_ylim(0, top * 1.35)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")


# --- processes and waiting -----------------------------------------------------


def run(
    argv: Sequence[str],
    *,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` capturing its output; BenchError naming the command on failure."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            env=dict(env) if env is not None else None,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(argv)}: no answer in {timeout:g} s") from None
    except FileNotFoundError:
        raise BenchError(f"{argv[0]}: not found") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise BenchError(f"{' '.join(argv)} exited with {proc.returncode}: {err}")
    return proc


def host_info(**extra: Any) -> dict[str, Any]:
    """What a run measured on: kernel, CPUs, Python, glia's commit (and whether src/ or
    bpf/ had uncommitted changes), the load before it; ``extra``: tool versions.
    Other work on the machine moves every figure: judge a run by its load."""
    repo = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    commit = run([*repo, "rev-parse", "--short", "HEAD"], check=False).stdout.decode().strip()
    status = [*repo, "status", "--porcelain", "--untracked-files=no", "src", "bpf"]
    changes = run(status, check=False).stdout.decode().strip()
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **extra,
        "glia_commit": commit or None,
        "glia_uncommitted_changes": bool(changes),
        "load_average_1m_before": round(os.getloadavg()[0], 2),
    }


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def interrupt_on_sigterm() -> None:
    """SIGTERM (a CI timeout) tears a benchmark down like Ctrl-C does."""
    signal.signal(signal.SIGTERM, _terminate)


def lab_bench_main(
    argv: Sequence[str] | None,
    *,
    description: str,
    result: str,
    lab: str,
    nodes: int,
    rounds: int,
    seconds: int,
    measure: Callable[[Any, int, int], dict[str, Any]],
) -> int:
    """main() of a benchmark on a lab of its own (one cluster of ``nodes``): build it,
    ``measure(lab, rounds, seconds)``, remove it (also on failure), write
    ``<out>/<result>.json`` and print it."""
    from glia.lab.lab import Lab  # here: the rr tools run this file in namespaces
    from glia.lab.topology import DEFAULT_LAB_DIR

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--lab", default=lab, help="the lab to build and remove")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--seconds", type=int, default=seconds)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    the_lab = Lab.open(
        args.lab, DEFAULT_LAB_DIR.with_name(f"lab-{args.lab}"), clusters=1, nodes=nodes
    )
    try:
        the_lab.up(recreate=True)
        doc = measure(the_lab, args.rounds, args.seconds)
    finally:
        the_lab.down()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{result}.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


class Background:
    """Processes a benchmark starts and must end: each one killed by its PID.

    With ``record``, each PID and its command line are also appended to that
    file, so the next run can end what a crashed one (SIGKILL, power loss of
    the terminal) left running: :func:`reap_recorded`.
    """

    def __init__(self, record: Path | None = None) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._record = record

    def start(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal reaches only us
        )
        self._procs.append(proc)
        if self._record is not None:
            self._record.parent.mkdir(parents=True, exist_ok=True)
            with self._record.open("a") as f:
                f.write(json.dumps({"pid": proc.pid, "argv": list(argv)}) + "\n")
        return proc

    def stop_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if proc.stderr is not None:
                proc.stderr.close()
        self._procs.clear()


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def reap_recorded(record: Path) -> int:
    """Kill the processes a crashed run recorded (``Background(record=...)``); how many.

    A PID is killed only while its command line is still the recorded one,
    so a PID the system has reused for something else is left alone. The
    record is removed afterwards.
    """
    killed = 0
    try:
        lines = record.read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in lines:
        try:
            entry = json.loads(line)
            pid, argv = int(entry["pid"]), list(entry["argv"])
        except (ValueError, KeyError, TypeError):
            continue
        # nsenter execs the command: the PID's command line is argv's tail.
        now = _cmdline(pid)
        if now and now == argv[len(argv) - len(now) :]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    record.unlink(missing_ok=True)
    return killed


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy; BenchError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


# --- network namespaces ----------------------------------------------------------


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


def nsenter(path: str, argv: Sequence[str]) -> list[str]:
    """``argv`` inside the namespace at ``path``, host mounts (and bpffs) in view."""
    return ["nsenter", f"--net={path}", *argv]


def _checked_name(name: str) -> str:
    if not name.startswith("glia"):
        raise BenchError(f"namespace {name!r}: a benchmark only makes names starting with glia")
    return name


def netns_add(name: str) -> str:
    """Create namespace ``name`` (loopback up); returns its path."""
    run(["ip", "netns", "add", _checked_name(name)])
    ip_batch(name, ["link set lo up"])
    return netns_path(name)


def netns_delete(name: str) -> None:
    if (NETNS_DIR / _checked_name(name)).exists():
        run(["ip", "netns", "delete", name], check=False)


def netns_names(prefix: str) -> list[str]:
    """Namespaces whose name starts with ``prefix`` (a "glia..." prefix)."""
    _checked_name(prefix)
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def ip_batch(ns: str, commands: Sequence[str], tool: str = "ip") -> None:
    """iproute2 (``ip`` or ``bridge``) commands inside namespace ``ns``, in one batch."""
    if commands:
        text = "\n".join(commands) + "\n"
        run([tool, "-n", _checked_name(ns), "-batch", "-"], input=text.encode())


def sysctl(ns: str, key: str, value: str) -> None:
    """Set a ``net.*`` sysctl inside namespace ``ns`` (its /proc/sys/net is per namespace)."""
    run(nsenter(netns_path(_checked_name(ns)), ["sysctl", "-q", "-w", f"{key}={value}"]))


def listening(path: str, port: int) -> bool:
    """Whether a TCP socket listens on ``port`` in the namespace at ``path``."""
    out = run(nsenter(path, ["ss", "-Hltn", f"sport = :{port}"]), check=False).stdout
    return bool(out.strip())


@contextlib.contextmanager
def _thread_in_netns(path: str) -> Iterator[None]:
    """The calling thread inside namespace ``path`` (only for threads that end afterwards)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise BenchError(f"setns({path}): {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    yield


def in_netns(path: str, fn: Callable[[], T]) -> T:
    """``fn()`` on a fresh thread inside namespace ``path``; the caller's thread never moves."""
    out: list[T] = []
    err: list[BaseException] = []

    def target() -> None:
        try:
            with _thread_in_netns(path):
                out.append(fn())
        except BaseException as e:
            err.append(e)

    thread = threading.Thread(target=target, name=f"glia-bench-netns:{Path(path).name}")
    thread.start()
    thread.join()
    if err:
        raise err[0]
    return out[0]


# --- ICMP echo -------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = b"glia-bench"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload


def is_echo_reply(packet: bytes, src: str, ident: int) -> bool:
    """Whether a raw-socket packet (IPv4 header included) is our echo reply from ``src``."""
    if len(packet) < 20:
        return False
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or socket.inet_ntoa(packet[12:16]) != src:
        return False
    icmp_type, _, _, got_ident, _ = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
    return bool(icmp_type == 0 and got_ident == ident)


def first_echo_reply(dst: str, timeout: float, every: float = 0.002) -> float:
    """Ping ``dst`` every ``every`` s until a reply; ``time.monotonic()`` of that reply.

    Runs in the calling thread's namespace (see :func:`in_netns`). Send errors
    (no route yet) count as "no reply yet". BenchError after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    ident = random.randrange(1, 0xFFFF)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        seq = 0
        while time.monotonic() < deadline:
            seq = (seq + 1) & 0xFFFF
            with contextlib.suppress(OSError):
                sock.sendto(echo_request(ident, seq), (dst, 0))
            next_send = time.monotonic() + every
            while (left := next_send - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    packet = sock.recv(2048)
                except (TimeoutError, OSError):
                    break
                if is_echo_reply(packet, dst, ident):
                    return time.monotonic()
    raise BenchError(f"no ICMP echo reply from {dst} within {timeout:.1f} s")


SIOCGIFADDR = 0x8915


def interface_ipv4(ifname: str) -> str | None:
    """The IPv4 address of ``ifname`` in the calling thread's namespace, None if none yet."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            req = struct.pack("256s", ifname.encode())
            got = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, req)
        except OSError:  # no such device, or no address yet
            return None
    return socket.inet_ntoa(got[20:24])


def new_netns(before: set[str], prefix: str = "netns-") -> Callable[[], str | None]:
    """A probe for a namespace named ``prefix...`` that appeared after ``before``.

    Answers only once the file is a mounted namespace (its creator makes the file,
    then bind-mounts the namespace onto it).
    """
    nsfs = os.stat("/proc/self/ns/net").st_dev

    def probe() -> str | None:
        for name in set(os.listdir(NETNS_DIR)) - before:
            path = str(NETNS_DIR / name)
            try:
                if name.startswith(prefix) and os.stat(path).st_dev == nsfs:
                    return path
            except FileNotFoundError:
                continue
        return None

    return probe


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
            ctx = _thread_in_netns(self._netns) if self._netns else contextlib.nullcontext()
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
