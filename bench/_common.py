"""Helpers shared by glia's benchmarks (``bench/*.py``), and a tiny load tool.

Imported by ``bench/pods.py`` and ``bench/services.py`` for: statistics
(percentiles, medians, ratios), JSON output, bar-chart plotting with the
glia/reference ratio written on the bars, named network namespaces (every
name starts with "glia"), commands started inside a cgroup v2, background
processes killed by PID, a poll-until helper, and an ICMP echo probe that
runs in a thread inside any namespace.

The load tool the benchmarks start inside namespaces is ``bench/_loadtool.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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
    quick: tuple[int, int] | None = None,
    plot: Callable[[dict[str, Any], Path], None] | None = None,
) -> int:
    """main() of a benchmark on a lab of its own (one cluster of ``nodes``): build it,
    ``measure(lab, rounds, seconds)``, remove it (also on failure), write
    ``<out>/<result>.json`` (and ``plot`` it to ``<result>.png``) and print it.

    ``quick``: (rounds, seconds) of a ``--quick`` smoke run, which writes
    ``<result>-quick.json``/``.png`` so it never overwrites a full run's result."""
    from glia.lab.lab import Lab  # here: the rr tools run this file in namespaces
    from glia.lab.topology import DEFAULT_LAB_DIR

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--lab", default=lab, help="the lab to build and remove")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--seconds", type=int, default=seconds)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    if quick is not None:
        parser.add_argument(
            "--quick",
            action="store_true",
            help=f"smoke run: {quick[0]} rounds of {quick[1]} s, written to {result}-quick.*",
        )
    args = parser.parse_args(argv)
    if getattr(args, "quick", False):
        assert quick is not None
        args.rounds, args.seconds = quick
        result = f"{result}-quick"
    the_lab = Lab.open(
        args.lab, DEFAULT_LAB_DIR.with_name(f"lab-{args.lab}"), clusters=1, nodes=nodes
    )
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    try:
        the_lab.up(recreate=True)
        measured = measure(the_lab, args.rounds, args.seconds)
    finally:
        the_lab.down()
    # When and how long, in every result of this skeleton (first, so a reader sees them).
    doc = {"date": date, "duration_s": round(time.monotonic() - started, 1), **measured}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{result}.json").write_text(json.dumps(doc, indent=2) + "\n")
    if plot is not None:
        plot(doc, args.out / f"{result}.png")
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
def thread_in_netns(path: str) -> Iterator[None]:
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
            with thread_in_netns(path):
                out.append(fn())
        except BaseException as e:
            err.append(e)

    thread = threading.Thread(target=target, name=f"glia-bench-netns:{Path(path).name}")
    thread.start()
    thread.join()
    if err:
        raise err[0]
    return out[0]
