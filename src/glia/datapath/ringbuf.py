"""A consumer of one pinned BPF ring buffer: its records as raw bytes.

Used by :class:`glia.datapath.events.EventReader` (``glia monitor``'s drops)
and :class:`glia.datapath.signals.SignalReader` (the agent's signals). A ring
buffer has one consumer position shared by everyone who maps it, so each
buffer has one reader by design. :meth:`RingBuffer.poll` blocks up to a
timeout (a CLI loop); :meth:`RingBuffer.fileno` and :meth:`RingBuffer.consume`
let an asyncio loop wait on the buffer without a thread (``loop.add_reader``).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from types import TracebackType

from glia.datapath import libbpf
from glia.datapath.errors import DatapathError
from glia.datapath.maps import check_spec
from glia.datapath.mapspecs import MapSpec

_EINTR = 4


class RingBuffer:
    """The records of the ring buffer ``spec`` pinned under ``pin_dir``."""

    def __init__(self, pin_dir: Path, spec: MapSpec) -> None:
        lib = libbpf.lib()
        self.name = spec.name
        self._fd = libbpf.obj_get(str(Path(pin_dir) / spec.name))
        try:
            check_spec(self._fd, spec)
        except DatapathError:
            os.close(self._fd)
            raise
        self._raw: list[bytes] = []
        # Only copy in the callback: an exception there would be swallowed by ctypes.
        self._cb = libbpf.RingBufferSampleFn(self._on_sample)
        opts = libbpf.new_opts(libbpf.ring_buffer_opts)
        rb = lib.ring_buffer__new(self._fd, self._cb, None, ctypes.byref(opts))
        if not rb:
            err = ctypes.get_errno() or 22
            os.close(self._fd)
            raise DatapathError(f"opening ring buffer {spec.name}: {os.strerror(err)}")
        self._rb: int | None = rb

    def _on_sample(self, _ctx: int | None, data: int | None, size: int) -> int:
        if data:
            self._raw.append(ctypes.string_at(data, size))
        return 0

    def _take(self) -> list[bytes]:
        raw, self._raw = self._raw, []
        return raw

    def _handle(self) -> int:
        if self._rb is None:
            raise DatapathError(f"ring buffer {self.name} is closed")
        return self._rb

    def poll(self, timeout: float = 0.0) -> list[bytes]:
        """Records available now, waiting up to ``timeout`` seconds for the first."""
        ret = libbpf.lib().ring_buffer__poll(self._handle(), int(timeout * 1000))
        if ret < 0 and ret != -_EINTR:
            libbpf.check(ret, f"polling {self.name}")
        return self._take()

    def consume(self) -> list[bytes]:
        """Records available now, without waiting."""
        ret = libbpf.lib().ring_buffer__consume(self._handle())
        if ret < 0 and ret != -_EINTR:
            libbpf.check(ret, f"reading {self.name}")
        return self._take()

    def fileno(self) -> int:
        """A descriptor that becomes readable when records arrive (epoll)."""
        fd = int(libbpf.lib().ring_buffer__epoll_fd(self._handle()))
        if fd < 0:
            libbpf.check(fd, f"epoll descriptor of {self.name}")
        return fd

    def close(self) -> None:
        if self._rb is not None:
            libbpf.lib().ring_buffer__free(self._rb)
            self._rb = None
            os.close(self._fd)

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
