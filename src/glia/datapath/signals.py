"""What the datapath tells the node's agent: glia_signals_v1 (bpf/include/signals.h).

Read by the agent (:mod:`glia.agent.daemon` hands each batch to
:meth:`glia.agent.services.AgentServices.on_refused`). Only one kind so far:
:class:`Refused`, an endpoint that answered a SYN with a reset (nothing listens
on that port any more). Signals are hints, never verdicts: each one only
makes the health prober check that backend at once.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

from glia.datapath.addrs import be16_to_int, be32_to_ip
from glia.datapath.mapspecs import SIGNALS
from glia.datapath.ringbuf import RingBuffer
from glia.datapath.structs import GLIA_SIGNAL_REFUSED, glia_signal

_SIZE = ctypes.sizeof(glia_signal)
_TYPE_OFFSET: int = glia_signal.type.offset


@dataclass(frozen=True, slots=True)
class Refused:
    """``ip``:``port`` (an endpoint of this node) refused a connection from ``peer``."""

    ts_ns: int
    ip: str
    port: int
    peer: str
    peer_port: int


def decode(raw: bytes) -> Refused | None:
    """One record; None for a kind this version does not know or a short record."""
    if len(raw) < _SIZE or raw[_TYPE_OFFSET] != GLIA_SIGNAL_REFUSED:
        return None
    sig = glia_signal.from_buffer_copy(raw)
    return Refused(
        ts_ns=sig.ts_ns,
        ip=be32_to_ip(sig.addr),
        port=be16_to_int(sig.port),
        peer=be32_to_ip(sig.peer),
        peer_port=be16_to_int(sig.peer_port),
    )


class SignalReader:
    """The node's signals, for an asyncio loop: wait on :meth:`fileno`, then :meth:`read`."""

    def __init__(self, pin_dir: Path) -> None:
        self._ring = RingBuffer(pin_dir, SIGNALS)
        self.unknown = 0  # records this version does not decode

    def fileno(self) -> int:
        return self._ring.fileno()

    def read(self, timeout: float = 0.0) -> list[Refused]:
        """Signals available now (waiting up to ``timeout`` seconds for the first)."""
        raw = self._ring.poll(timeout) if timeout else self._ring.consume()
        out = []
        for item in raw:
            sig = decode(item)
            if sig is None:
                self.unknown += 1
            else:
                out.append(sig)
        return out

    def close(self) -> None:
        self._ring.close()
