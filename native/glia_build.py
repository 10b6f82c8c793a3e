"""Compile glia's native parts: the eBPF objects (bpf/) and glia-cni's fast path (native/).

The one place that knows the compilers' flags. Called by ``make bpf`` (the
checkout's build/, with the test harness objects and the checkout's Python
plugin as the fast path's compiled-in fallback) and by setup.py when a wheel is
built (the objects and the fast path land in the package as ``glia/_bpf`` and
``glia/_bin/glia-cni``, with no compiled-in fallback: an installation puts the
Python plugin next to the fast path as ``glia-cni-python``, see
``glia cni install``). Standard library only: a wheel build runs it in an
isolated environment where only setuptools is installed.

Usage: ``python native/glia_build.py OUT_DIR [--fallback PATH] [--with-tests]``
writes OUT_DIR/bpf/*.bpf.o (and bpf/test/ with ``--with-tests``),
OUT_DIR/native/glia-cni-shim.h and OUT_DIR/bin/glia-cni; a file newer than
everything it is made from is left alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLANG = os.environ.get("CLANG", "clang")
# BPF objects: target bpf; the multiarch include dir has asm/types.h for linux/bpf.h.
BPF_CFLAGS = ("-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu")
FASTPATH_CFLAGS = ("-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror")
FASTPATH_SOURCE = "native/glia-cni.c"
FASTPATH_HEADER = "glia-cni-shim.h"


class BuildError(RuntimeError):
    """A compiler or the header generator failed; the message says which file and why."""


def _stale(target: Path, sources: Iterable[Path]) -> bool:
    if not target.exists():
        return True
    mtime = target.stat().st_mtime
    return any(s.stat().st_mtime > mtime for s in sources)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} not found (install clang)") from None
    if p.returncode != 0:
        raise BuildError(f"{what} failed ({' '.join(cmd)}):\n{p.stderr.strip()}")
    return p.stdout


def bpf_sources(root: Path = ROOT, with_tests: bool = False) -> list[Path]:
    """glia's programs (bpf/*.bpf.c), plus the tests' harness programs if asked."""
    sources = sorted((root / "bpf").glob("*.bpf.c"))
    if with_tests:
        sources += sorted((root / "bpf" / "test").glob("*.bpf.c"))
    return sources


def build_bpf(out_dir: Path, root: Path = ROOT, with_tests: bool = False) -> list[Path]:
    """Compile each BPF source to ``out_dir/<relative name>.bpf.o``; the objects' paths."""
    headers = sorted((root / "bpf" / "include").glob("*.h"))
    objects = []
    for src in bpf_sources(root, with_tests):
        rel = src.relative_to(root / "bpf")
        obj = out_dir / rel.parent / rel.name.replace(".bpf.c", ".bpf.o")
        if _stale(obj, [src, *headers]):
            obj.parent.mkdir(parents=True, exist_ok=True)
            cmd = [CLANG, *BPF_CFLAGS, f"-I{root / 'bpf' / 'include'}", "-c", str(src)]
            _run([*cmd, "-o", str(obj)], f"compiling {rel}")
        objects.append(obj)
    return objects


def write_header(header: Path, fallback: str, root: Path = ROOT) -> None:
    """The fast path's constants from Python (glia.cni.shim); rewritten only when they change."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    cmd = [sys.executable, "-m", "glia.cni.shim", "header", fallback]
    text = _run(cmd, "generating the fast path's header", env)
    if header.exists() and header.read_text() == text:
        return
    header.parent.mkdir(parents=True, exist_ok=True)
    tmp = header.with_name(header.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(header)


def build_fastpath(binary: Path, header_dir: Path, fallback: str, root: Path = ROOT) -> Path:
    """glia-cni's fast path at ``binary``; ``fallback`` "" compiles in no Python plugin."""
    header = header_dir / FASTPATH_HEADER
    write_header(header, fallback, root)
    source = root / FASTPATH_SOURCE
    if _stale(binary, [source, header]):
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_name(binary.name + ".tmp")
        cmd = [CLANG, *FASTPATH_CFLAGS, f"-I{header_dir}", "-o", str(tmp), str(source)]
        _run(cmd, f"compiling {FASTPATH_SOURCE}")
        tmp.replace(binary)
    return binary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Compile glia's BPF objects and glia-cni.")
    parser.add_argument("out", type=Path, help="output directory (bpf/, native/, bin/ in it)")
    parser.add_argument("--fallback", default="", help="the Python plugin compiled in, or none")
    parser.add_argument("--with-tests", action="store_true", help="also bpf/test/*.bpf.c")
    args = parser.parse_args(argv)
    if args.fallback and not os.path.isabs(args.fallback):
        parser.error(f"--fallback {args.fallback}: must be an absolute path")
    out: Path = args.out.resolve()
    try:
        build_bpf(out / "bpf", with_tests=args.with_tests)
        build_fastpath(out / "bin" / "glia-cni", out / "native", args.fallback)
    except BuildError as e:
        print(f"glia_build: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
