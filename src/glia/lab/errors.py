"""Errors of the lab, shared by its modules (:mod:`glia.lab.lab` re-exports them)."""

from __future__ import annotations


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says why and what to do."""


class LabAlreadyUp(LabError):
    """``up`` of a lab that is up in another shape (``recreate`` rebuilds it)."""


class DaemonExited(LabError):
    """A daemon exited while the lab waited for it (``process``: its name in the state)."""

    def __init__(self, process: str, message: str) -> None:
        super().__init__(message)
        self.process = process
