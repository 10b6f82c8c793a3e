"""Run a loaded program on one packet with BPF_PROG_TEST_RUN.

Used by the datapath's table tests (and benchmarks): the kernel runs the
program on a synthetic skb in the calling thread's network namespace, maps
included, and returns the verdict and the packet as the program left it.
Redirects are not carried out; their verdict (TC_ACT_REDIRECT) is returned.

A test run gives the program no tunnel metadata; :class:`TunnelKeyHarness`
loads bpf/test/tunnel_key.bpf.c, which sets a tunnel key (as glia_vxlan does
on receive) and tail-calls the program under test, so from_overlay can be
run on a decapsulated packet "from" any outer source with any VNI.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from glia.datapath import libbpf
from glia.datapath.errors import BPFError, DatapathError
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
    prog_fd: int,
    packet: bytes,
    *,
    ingress_ifindex: int = 0,
    ifindex: int = 0,
    repeat: int = 1,
    cb: tuple[int, ...] = (),
) -> RunResult:
    """``cb``: the first words of ``skb->cb`` (up to 5), which a test run may set.
    ``ifindex``: the device the packet is on (``skb->ifindex``; it must exist in
    the calling thread's namespace; 0 = its loopback), as a tc egress program
    sees the device it sends by."""
    if len(cb) > 5:
        raise DatapathError(f"skb->cb has 5 words, not {len(cb)}")
    ctx = sk_buff(ingress_ifindex=ingress_ifindex, ifindex=ifindex)
    for i, word in enumerate(cb):
        ctx.cb[i] = word
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


TUNNEL_KEY_OBJECT = Path("test") / "tunnel_key.bpf.o"
# Verdicts of the harness itself (bpf/test/tunnel_key.bpf.c), never a program's.
HARNESS_SET_KEY_FAILED = 1001
HARNESS_TAIL_CALL_FAILED = 1002


class TunnelKeyHarness:
    """bpf/test/tunnel_key.bpf.c loaded, tail-calling the program ``target_fd``.

    Only for tests and benchmarks: its prog array is not pinned, and it
    touches none of glia's maps (the program it calls uses the maps of its
    own load).
    """

    def __init__(self, obj_dir: Path, target_fd: int) -> None:
        lib = libbpf.lib()
        path = Path(obj_dir) / TUNNEL_KEY_OBJECT
        if not path.is_file():
            raise DatapathError(f"{path} not found: build the BPF objects with `make bpf`")
        opts = libbpf.new_opts(libbpf.bpf_object_open_opts)
        obj = lib.bpf_object__open_file(str(path).encode(), ctypes.byref(opts))
        if not obj:
            raise BPFError(f"opening {path}", ctypes.get_errno() or 22)
        self._obj: int | None = obj
        try:
            libbpf.check(lib.bpf_object__load(obj), f"loading {path}")
            prog = libbpf.check_ptr(
                lib.bpf_object__find_program_by_name(obj, b"with_tunnel_key"), "with_tunnel_key"
            )
            self.prog_fd = libbpf.check(lib.bpf_program__fd(prog), "fd of with_tunnel_key")
            jump = libbpf.check_ptr(
                lib.bpf_object__find_map_by_name(obj, b"glia_test_next"), "glia_test_next"
            )
            slot, fd = ctypes.c_uint32(0), ctypes.c_uint32(target_fd)
            libbpf.check(
                lib.bpf_map_update_elem(
                    lib.bpf_map__fd(jump), ctypes.byref(slot), ctypes.byref(fd), libbpf.BPF_ANY
                ),
                "putting the program under test into glia_test_next",
            )
        except BaseException:
            self.close()
            raise

    def run(
        self,
        packet: bytes,
        *,
        outer_src: str,
        vni: int,
        outer_dst: str = "0.0.0.0",
        ingress_ifindex: int = 0,
    ) -> RunResult:
        """Run the target on ``packet`` as if glia_vxlan had decapsulated it, sent
        from ``outer_src`` to ``outer_dst`` with ``vni``; harness failures raise."""
        src, dst = (struct.unpack("!I", socket.inet_aton(ip))[0] for ip in (outer_src, outer_dst))
        result = run_program(
            self.prog_fd, packet, ingress_ifindex=ingress_ifindex, cb=(src, vni, dst)
        )
        if result.retval in (HARNESS_SET_KEY_FAILED, HARNESS_TAIL_CALL_FAILED):
            what = "set the tunnel key" if result.retval == HARNESS_SET_KEY_FAILED else "tail-call"
            raise DatapathError(f"tunnel key harness could not {what} (verdict {result.retval})")
        return result

    def close(self) -> None:
        if self._obj is not None:
            libbpf.lib().bpf_object__close(self._obj)
            self._obj = None

    def __enter__(self) -> TunnelKeyHarness:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
