"""Attach BPF programs to a device's tc ingress or egress hook (clsact, direct action).

Called by glia.datapath.loader.Datapath. libbpf's bpf_tc_* calls open their
netlink socket in the calling thread's network namespace, so callers run these
in the node's namespace (the agent lives there; tests use
glia.datapath.netns.run_in_netns).

glia owns one filter slot per device (fixed handle and priority), so attaching
again replaces the program atomically (BPF_TC_F_REPLACE): no window without a
program during an agent upgrade.
"""

from __future__ import annotations

import ctypes

from glia.datapath import libbpf

GLIA_TC_HANDLE = 0x91A  # "glia"'s filter handle on every device it manages
GLIA_TC_PRIORITY = 1

_EEXIST = 17
_ENOENT = 2
_ENODEV = 19
_EINVAL = 22


def _hook(ifindex: int, egress: bool = False) -> libbpf.bpf_tc_hook:
    point = libbpf.BPF_TC_EGRESS if egress else libbpf.BPF_TC_INGRESS
    hook: libbpf.bpf_tc_hook = libbpf.new_opts(
        libbpf.bpf_tc_hook, ifindex=ifindex, attach_point=point
    )
    return hook


def _slot(**extra: int) -> libbpf.bpf_tc_opts:
    opts: libbpf.bpf_tc_opts = libbpf.new_opts(
        libbpf.bpf_tc_opts, handle=GLIA_TC_HANDLE, priority=GLIA_TC_PRIORITY, **extra
    )
    return opts


def _name(egress: bool) -> str:
    return "egress" if egress else "ingress"


def attach_ingress(ifindex: int, prog_fd: int, *, egress: bool = False) -> None:
    """Create clsact if needed and put ``prog_fd`` in glia's ingress (or egress) slot."""
    lib = libbpf.lib()
    hook = _hook(ifindex)  # the qdisc is one for both directions
    ret = lib.bpf_tc_hook_create(ctypes.byref(hook))
    if ret != -_EEXIST:
        libbpf.check(ret, f"creating clsact on ifindex {ifindex}")
    hook = _hook(ifindex, egress)
    opts = _slot(prog_fd=prog_fd, flags=libbpf.BPF_TC_F_REPLACE)
    libbpf.check(
        lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)),
        f"attaching to tc {_name(egress)} of ifindex {ifindex}",
    )


def attach_egress(ifindex: int, prog_fd: int) -> None:
    attach_ingress(ifindex, prog_fd, egress=True)


def detach_ingress(ifindex: int, *, egress: bool = False) -> bool:
    """Remove glia's ingress (egress) filter; False if there was none (or no device)."""
    hook = _hook(ifindex, egress)
    opts = _slot()
    ret = libbpf.lib().bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts))
    # -EINVAL: no clsact qdisc on the device; -ENODEV: no such device.
    if ret in (-_ENOENT, -_ENODEV, -_EINVAL):
        return False
    libbpf.check(ret, f"detaching from tc {_name(egress)} of ifindex {ifindex}")
    return True


def detach_egress(ifindex: int) -> bool:
    return detach_ingress(ifindex, egress=True)


def ingress_prog_id(ifindex: int, *, egress: bool = False) -> int | None:
    """Id of the program in glia's ingress (egress) slot, None when empty."""
    hook = _hook(ifindex, egress)
    opts = _slot()
    ret = libbpf.lib().bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts))
    # libbpf 1.1 answers an empty slot (or no clsact) with -EINVAL.
    if ret in (-_ENOENT, -_ENODEV, -_EINVAL):
        return None
    libbpf.check(ret, f"querying tc {_name(egress)} of ifindex {ifindex}")
    return int(opts.prog_id)


def egress_prog_id(ifindex: int) -> int | None:
    return ingress_prog_id(ifindex, egress=True)
