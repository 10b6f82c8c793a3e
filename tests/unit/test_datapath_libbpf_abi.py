"""The ctypes mirrors of libbpf's option structs match libbpf's own headers.

A small C program compiled against /usr/include/bpf prints each struct's size
and field offsets; the Python side must agree, or every libbpf call would read
garbage options.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from glia.datapath import libbpf

MIRRORS: list[type[ctypes.Structure]] = [
    libbpf.bpf_object_open_opts,
    libbpf.bpf_tc_hook,
    libbpf.bpf_tc_opts,
    libbpf.bpf_test_run_opts,
    libbpf.bpf_map_batch_opts,
    libbpf.ring_buffer_opts,
]
# bpf_map_info is mirrored only up to `name`: the kernel fills what fits.
PREFIX_MIRRORS: list[type[ctypes.Structure]] = [libbpf.bpf_map_info]


def _fields(cls: type[ctypes.Structure]) -> list[str]:
    return [name for name, *_ in cls._fields_ if not name.startswith("_")]


def _program() -> str:
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <bpf/bpf.h>",
        "#include <bpf/libbpf.h>",
        "int main(void) {",
        '  printf("{");',
    ]
    for cls in MIRRORS + PREFIX_MIRRORS:
        name = cls.__name__
        lines.append(f'  printf("\\"{name}\\": {{\\"size\\": %zu", sizeof(struct {name}));')
        for field in _fields(cls):
            lines.append(f'  printf(", \\"{field}\\": %zu", offsetof(struct {name}, {field}));')
        lines.append('  printf("},");')
    lines += ['  printf("\\"end\\": {}}");', "  return 0;", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def layout() -> dict[str, dict[str, int]]:
    with tempfile.TemporaryDirectory(prefix="glia-test-abi-") as tmp:
        src, exe = Path(tmp) / "abi.c", Path(tmp) / "abi"
        src.write_text(_program())
        subprocess.run(
            ["clang", "-I/usr/include/x86_64-linux-gnu", "-o", str(exe), str(src)],
            check=True,
            capture_output=True,
        )
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    data: dict[str, dict[str, int]] = json.loads(out)
    return data


@pytest.mark.parametrize("cls", MIRRORS + PREFIX_MIRRORS, ids=lambda c: c.__name__)
def test_offsets_match_the_c_headers(
    layout: dict[str, dict[str, int]], cls: type[ctypes.Structure]
) -> None:
    c = layout[cls.__name__]
    assert {f: getattr(cls, f).offset for f in _fields(cls)} == {f: c[f] for f in _fields(cls)}
    if cls in MIRRORS:
        assert ctypes.sizeof(cls) == c["size"]
    else:
        assert ctypes.sizeof(cls) <= c["size"]
