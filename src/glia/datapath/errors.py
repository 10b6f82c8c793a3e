"""Errors raised by glia's datapath layer (BPF objects, maps, tc, netlink).

Callers (agent, CLI) catch :class:`DatapathError` and show its message; it
always says what was being done and, for kernel errors, the errno text.
"""

from __future__ import annotations

import os


class DatapathError(Exception):
    """A datapath operation failed; the message is meant for people."""


class BPFError(DatapathError):
    """A bpf() syscall or libbpf call failed with ``errno``."""

    def __init__(self, what: str, errno: int, detail: str = "") -> None:
        self.errno = errno
        message = f"{what}: {os.strerror(errno)} (errno {errno})"
        if detail:
            message += f"\n{detail}"
        super().__init__(message)
