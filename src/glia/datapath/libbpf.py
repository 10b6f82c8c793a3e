"""ctypes bindings to libbpf 1.1 (``libbpf.so.1``): the subset glia uses.

Called by the other glia.datapath modules only. Every pointer-returning
function has ``restype = c_void_p`` (the default int would truncate pointers);
the option structs mirror /usr/include/bpf/{libbpf,bpf}.h and their sizes are
asserted at import, and compared with the C headers by a unit test.

libbpf's messages are captured (see :func:`recent_log`) so that a failed load
can report the verifier's output instead of printing it to stderr.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import logging
import platform
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any

from glia.datapath.errors import BPFError, DatapathError

log = logging.getLogger(__name__)

# enum bpf_tc_attach_point
BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
# enum bpf_tc_flags
BPF_TC_F_REPLACE = 1
# map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2


class bpf_object_open_opts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p),
        ("_attach_prog_fd", c_uint32),  # removed field, kept as padding
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_char_p),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]


class bpf_tc_hook(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("ifindex", c_int),
        ("attach_point", c_int),
        ("parent", c_uint32),
    ]


class bpf_tc_opts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("prog_fd", c_int),
        ("flags", c_uint32),
        ("prog_id", c_uint32),
        ("handle", c_uint32),
        ("priority", c_uint32),
    ]


class bpf_test_run_opts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class bpf_map_batch_opts(Structure):
    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class ring_buffer_opts(Structure):
    _fields_ = [("sz", c_size_t)]


class bpf_map_info(Structure):
    """The head of struct bpf_map_info (linux/bpf.h); the kernel fills what fits."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", ctypes.c_char * 16),
    ]


# Sizes measured on this machine (FIELD-NOTES.md); a mismatch means a libbpf
# with another ABI, where every call would silently misbehave.
_EXPECTED_SIZES = {
    bpf_object_open_opts: 80,
    bpf_tc_hook: 24,
    bpf_tc_opts: 32,
    bpf_test_run_opts: 80,
    bpf_map_batch_opts: 24,
    ring_buffer_opts: 8,
}
for _cls, _size in _EXPECTED_SIZES.items():
    if ctypes.sizeof(_cls) != _size:
        raise ImportError(f"{_cls.__name__} is {ctypes.sizeof(_cls)} bytes, libbpf 1.1 has {_size}")


def new_opts(cls: type[Any], **fields: Any) -> Any:
    """An options struct with ``sz`` set, as libbpf's OPTS macros do."""
    opts = cls(**fields)
    opts.sz = ctypes.sizeof(cls)
    return opts


RingBufferSampleFn = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
_PrintFn = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "bpf_object__open_file": (c_void_p, [c_char_p, POINTER(bpf_object_open_opts)]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_program__pin": (c_int, [c_void_p, c_char_p]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_obj_pin": (c_int, [c_int, c_char_p]),
    "bpf_link_create": (c_int, [c_int, c_int, c_int, c_void_p]),
    "bpf_link_update": (c_int, [c_int, c_int, c_void_p]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_batch": (
        c_int,
        [c_int, c_void_p, c_void_p, POINTER(c_uint32), POINTER(bpf_map_batch_opts)],
    ),
    "bpf_map_lookup_batch": (
        c_int,
        [
            c_int,
            c_void_p,
            c_void_p,
            c_void_p,
            c_void_p,
            POINTER(c_uint32),
            POINTER(bpf_map_batch_opts),
        ],
    ),
    "bpf_map_delete_batch": (
        c_int,
        [c_int, c_void_p, POINTER(c_uint32), POINTER(bpf_map_batch_opts)],
    ),
    "bpf_prog_test_run_opts": (c_int, [c_int, POINTER(bpf_test_run_opts)]),
    "bpf_tc_hook_create": (c_int, [POINTER(bpf_tc_hook)]),
    "bpf_tc_attach": (c_int, [POINTER(bpf_tc_hook), POINTER(bpf_tc_opts)]),
    "bpf_tc_detach": (c_int, [POINTER(bpf_tc_hook), POINTER(bpf_tc_opts)]),
    "bpf_tc_query": (c_int, [POINTER(bpf_tc_hook), POINTER(bpf_tc_opts)]),
    "ring_buffer__new": (
        c_void_p,
        [c_int, RingBufferSampleFn, c_void_p, POINTER(ring_buffer_opts)],
    ),
    "ring_buffer__poll": (c_int, [c_void_p, c_int]),
    "ring_buffer__consume": (c_int, [c_void_p]),
    "ring_buffer__epoll_fd": (c_int, [c_void_p]),
    "ring_buffer__free": (None, [c_void_p]),
    "libbpf_num_possible_cpus": (c_int, []),
    "libbpf_set_print": (c_void_p, [_PrintFn]),
}

_LIBBPF_WARN = 0  # enum libbpf_print_level
_recent: collections.deque[str] = collections.deque(maxlen=400)
_recent_lock = threading.Lock()
_PRINT_BUF = 64 * 1024


def _on_print(level: int, fmt: bytes, args: int) -> int:
    # va_list is a pointer on x86_64, so libc's vsnprintf can format it here.
    buf = ctypes.create_string_buffer(_PRINT_BUF)
    _libc().vsnprintf(buf, _PRINT_BUF, fmt, args)
    text = buf.value.decode(errors="replace").rstrip("\n")
    if level == _LIBBPF_WARN:  # debug chatter stays out of error messages
        with _recent_lock:
            _recent.extend(text.splitlines())
    log.debug("libbpf[%d]: %s", level, text)
    return 0


_print_cb = _PrintFn(_on_print)  # module-level: libbpf keeps the pointer


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
    libc.vsnprintf.restype = c_int
    return libc


@functools.cache
def lib() -> ctypes.CDLL:
    """The loaded libbpf with argument and return types declared."""
    try:
        so = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as e:
        raise DatapathError(
            f"cannot load libbpf.so.1 ({e}): install libbpf1 (scripts/setup.sh does)"
        ) from None
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(so, name)
        fn.restype = restype
        fn.argtypes = argtypes
    if platform.machine() == "x86_64":
        so.libbpf_set_print(_print_cb)
    return so


def recent_log(clear: bool = False) -> list[str]:
    """libbpf's latest warnings (verifier logs, pinned-map mismatches)."""
    with _recent_lock:
        lines = list(_recent)
        if clear:
            _recent.clear()
    return lines


def check(ret: int, what: str) -> int:
    """libbpf 1.x returns -errno on failure; raise a BPFError naming ``what``."""
    if ret < 0:
        raise BPFError(what, -ret)
    return ret


def check_ptr(ptr: int | None, what: str) -> int:
    """Pointer-returning calls give NULL and set errno on failure."""
    if not ptr:
        raise BPFError(what, ctypes.get_errno() or 22)
    return ptr


def num_possible_cpus() -> int:
    return check(lib().libbpf_num_possible_cpus(), "counting possible CPUs")


def map_info(fd: int) -> bpf_map_info:
    info = bpf_map_info()
    size = c_uint32(ctypes.sizeof(info))
    check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "map info")
    return info


def obj_get(path: str) -> int:
    """An fd for a pinned object (map or program)."""
    return check(lib().bpf_obj_get(path.encode()), f"opening pinned {path}")
