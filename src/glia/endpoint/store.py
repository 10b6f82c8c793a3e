"""On-disk records of a node's endpoints, so a restarted agent can adopt them.

Owned by the agent's endpoint manager; one JSON file per endpoint under
``<state_dir>/endpoints/``, written atomically.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from glia.model import codec
from glia.model.endpoint import Endpoint

log = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def endpoint_key(container_id: str, ifname: str) -> str:
    return f"{container_id}/{ifname}"


class EndpointStore:
    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "endpoints"
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, container_id: str, ifname: str) -> Path:
        return self._dir / (_SAFE.sub("_", f"{container_id}-{ifname}") + ".json")

    def save(self, ep: Endpoint) -> None:
        path = self._path(ep.container_id, ep.ifname)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(codec.encode(ep))
        os.replace(tmp, path)

    def remove(self, container_id: str, ifname: str) -> None:
        self._path(container_id, ifname).unlink(missing_ok=True)

    def load_all(self) -> list[Endpoint]:
        out = []
        for path in sorted(self._dir.glob("*.json")):
            try:
                out.append(codec.decode(Endpoint, path.read_bytes()))
            except (OSError, codec.InvalidValue) as e:
                # A torn or foreign file must not stop the agent from starting;
                # the endpoint's veth is then cleaned up as a leftover.
                log.error("ignoring unreadable endpoint record %s: %s", path, e)
        return out
