"""The one error every validator raises."""

from __future__ import annotations


class Rejected(ValueError):
    """A record read from the kvstore is not acceptable; ``str()`` says why."""
