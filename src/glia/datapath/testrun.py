"""Run a loaded program on one packet with BPF_PROG_TEST_RUN.

Used by the datapath's table tests (and benchmarks): the kernel runs the
program on a synthetic skb in the calling thread's network namespace, maps
included, and returns the verdict and the packet as the program left it.
Redirects are not carried out; their verdict (TC_ACT_REDIRECT) is returned.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from glia.datapath import libbpf
from glia.datapath.structs import sk_buff

TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7

_MAX_PACKET = 64 * 1024


@dataclass(frozen=True, slots=True)
class RunResult:
    retval: int  # the program's return value (TC_ACT_*)
    packet: bytes  # the packet after the program
    duration_ns: int  # average per repetition


def run_program(
    prog_fd: int, packet: bytes, *, ingress_ifindex: int = 0, repeat: int = 1
) -> RunResult:
    ctx = sk_buff(ingress_ifindex=ingress_ifindex)
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(_MAX_PACKET)
    opts = libbpf.new_opts(
        libbpf.bpf_test_run_opts,
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_size_in=len(packet),
        data_out=ctypes.cast(data_out, ctypes.c_void_p),
        data_size_out=_MAX_PACKET,
        ctx_in=ctypes.cast(ctypes.pointer(ctx), ctypes.c_void_p),
        ctx_size_in=ctypes.sizeof(ctx),
        repeat=repeat,
    )
    libbpf.check(
        libbpf.lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN"
    )
    return RunResult(
        retval=int(opts.retval),
        packet=data_out.raw[: opts.data_size_out],
        duration_ns=int(opts.duration),
    )
