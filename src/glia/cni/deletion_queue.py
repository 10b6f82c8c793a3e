"""Queued CNI DELs for an agent that is down, as Cilium's plugin does.

Why: a DEL must not fail just because the agent is restarting (the runtime
would keep the container half torn down), yet only the agent can release the
endpoint. So when the agent's socket cannot be reached, the plugin writes the
DEL request into a directory and reports success; the agent replays every
queued DEL when it starts.

Writers (the plugin, :mod:`glia.cni.plugin`) hold a shared ``flock`` on the
queue's lock file while they try the agent once more and enqueue. The agent
holds the exclusive lock while it creates its API socket: a plugin that finds
no socket either enqueues before the socket appears or, once it has the lock,
finds the socket and is answered. No DEL is lost between the two.

Agent side::

    queue = DeletionQueue(queue_dir)
    with queue.lock(exclusive=True, timeout=10):
        ...create and listen on the API socket...
    # later, once the endpoint subsystem can handle DELs:
    for entry in queue.pending():
        if entry.request is not None:
            handle_cni_del(entry.request)   # same body as POST /v1/cni/del
        queue.remove(entry)                 # malformed entries are dropped too

Standard library only: the plugin imports it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from typing import Any, NamedTuple

MAX_ENTRIES = 256  # Cilium's bound: past it, something else is wrong; fail the DEL
LOCK_FILE = "lockfile"
SUFFIX = ".delete"
_POLL = 0.05


class QueueError(Exception):
    """The queue cannot be used: lock timeout, too many entries, I/O failure."""


class QueuedDelete(NamedTuple):
    path: str
    request: dict[str, Any] | None  # None if the file could not be read as a request
    error: str  # why ``request`` is None


class QueueLock:
    """A held ``flock`` on the queue's lock file; release it (or use ``with``)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> QueueLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class DeletionQueue:
    """A directory of ``<sha256>.delete`` files, each the JSON body of one DEL."""

    def __init__(self, directory: str, max_entries: int = MAX_ENTRIES) -> None:
        self.directory = directory
        self.max_entries = max_entries

    def lock(self, *, exclusive: bool, timeout: float) -> QueueLock:
        """Take the shared (plugin) or exclusive (agent) lock, waiting up to ``timeout`` s."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(
                os.path.join(self.directory, LOCK_FILE),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                0o600,
            )
        except OSError as e:
            raise QueueError(f"cannot open the CNI deletion queue {self.directory}: {e}") from e
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode)
                return QueueLock(fd)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise QueueError(
                        f"timed out after {timeout:g}s waiting for the lock of {self.directory}"
                    ) from None
                time.sleep(_POLL)
            except OSError as e:
                os.close(fd)
                raise QueueError(f"cannot lock {self.directory}: {e}") from e

    def enqueue(self, request: dict[str, Any]) -> str:
        """Write one DEL request (caller holds a lock); a repeated DEL replaces its entry."""
        key = "\0".join(
            str(x)
            for x in (
                request.get("config", {}).get("name", ""),
                request.get("container_id", ""),
                request.get("ifname", ""),
            )
        )
        name = hashlib.sha256(key.encode()).hexdigest() + SUFFIX
        path = os.path.join(self.directory, name)
        try:
            if not os.path.exists(path) and len(self._entry_names()) >= self.max_entries:
                raise QueueError(
                    f"the CNI deletion queue {self.directory} already holds "
                    f"{self.max_entries} entries; is the agent ever coming back?"
                )
            tmp = os.path.join(self.directory, f".{name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(request, f)
                f.flush()
                os.fsync(f.fileno())
            # Atomic, so the agent never reads a half-written request.
            os.replace(tmp, path)
        except OSError as e:
            raise QueueError(f"cannot write to the CNI deletion queue {self.directory}: {e}") from e
        return path

    def pending(self) -> list[QueuedDelete]:
        """Every queued DEL, oldest first."""
        try:
            names = self._entry_names()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise QueueError(f"cannot list the CNI deletion queue {self.directory}: {e}") from e
        entries = []
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
                mtime = os.stat(path).st_mtime
            except (OSError, ValueError) as e:
                entries.append((0.0, QueuedDelete(path, None, f"unreadable: {e}")))
                continue
            if isinstance(data, dict) and data.get("command") == "DEL":
                entries.append((mtime, QueuedDelete(path, data, "")))
            else:
                entries.append((mtime, QueuedDelete(path, None, "not a CNI DEL request")))
        entries.sort(key=lambda e: (e[0], e[1].path))
        return [e for _, e in entries]

    def remove(self, entry: QueuedDelete) -> None:
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise QueueError(f"cannot remove {entry.path}: {e}") from e

    def _entry_names(self) -> list[str]:
        return [n for n in os.listdir(self.directory) if n.endswith(SUFFIX)]
