"""Workload labels from the container runtime (DESIGN.md, "Workload labels").

Runtimes do not hand labels to CNI plugins, and asking podman from inside the
CNI call deadlocks on the container lock; so the agent asks after ADD returned.
``podman container inspect`` simply waits for the lock until podman has finished
setting the container up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from glia.endpoint.hooks import RuntimeInfo

log = logging.getLogger(__name__)


class LabelsUnavailable(Exception):
    pass


class PodmanLabels:
    def __init__(self, env: dict[str, str], podman: str = "podman", timeout: float = 60.0) -> None:
        self._env = {**os.environ, **env}
        self._podman = podman
        self._timeout = timeout

    async def labels(self, container_id: str) -> RuntimeInfo:
        """The container's labels; no aliases (podman's --network-alias come at ADD)."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        delay = 0.2
        last_err = ""
        while asyncio.get_running_loop().time() < deadline:
            proc = await asyncio.create_subprocess_exec(
                self._podman,
                "container",
                "inspect",
                "--format",
                "{{json .Config.Labels}}",
                container_id,
                env=self._env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), self._timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise LabelsUnavailable(f"podman inspect {container_id[:12]} timed out") from None
            if proc.returncode == 0:
                raw = json.loads(out or b"null") or {}
                if not isinstance(raw, dict):
                    raise LabelsUnavailable(f"podman returned labels of type {type(raw).__name__}")
                return RuntimeInfo({str(k): str(v) for k, v in raw.items()})
            last_err = err.decode(errors="replace").strip()
            # "no such container" right after ADD: podman has not committed it yet.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise LabelsUnavailable(f"podman inspect {container_id[:12]} failed: {last_err}")


class NoRuntimeLabels:
    """For runtimes glia cannot ask: endpoints keep the labels from CNI args."""

    async def labels(self, container_id: str) -> RuntimeInfo:
        return RuntimeInfo({})
