"""Load glia's BPF objects for one node, pin their maps, attach the programs.

Used by the agent (one Datapath per node, in the node's network namespace) and
the tests. Lifecycle: ``Datapath(pin_dir, obj_dir)`` -> ``load()`` (opens both
objects with ``pin_root_path=pin_dir``: maps already pinned there are reused
with their entries, missing ones are created and pinned) -> ``configure()`` ->
``attach_*()`` -> ``close()``. Closing releases only this process's handles:
attached programs and pinned maps keep the datapath running, so an agent
restart does not interrupt traffic. :func:`unpin` removes a node's pins.

Upgrades: a map whose layout changed has a new versioned name, so the new
objects create it next to the old pin; ``load()`` then removes the pins of
retired versions (mapspecs.RETIRED_MAPS). Programs of the old version that are
still attached keep their maps (a pin is one reference among others) until
the agent attaches the new programs, after ``configure()``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import threading
from ctypes import c_uint32
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from glia import native
from glia.datapath import libbpf, tc
from glia.datapath.ct import CTMap
from glia.datapath.errors import BPFError, DatapathError
from glia.datapath.lbmaps import LBMaps
from glia.datapath.maps import BPFMap
from glia.datapath.mapspecs import (
    CONFIG,
    CT4,
    ENDPOINTS,
    IPCACHE,
    METRICS,
    POLICY,
    POLICY_SUBJECTS,
    RETIRED_MAPS,
)
from glia.datapath.nodemaps import ConfigMap, EndpointMap, IPCacheMap, MetricsMap, NodeConfig
from glia.datapath.policymap import PolicyMap
from glia.datapath.structs import (
    glia_config,
    glia_ct4_entry,
    glia_ct4_key,
    glia_endpoint,
    glia_endpoint_key,
    glia_ipcache_entry,
    glia_ipcache_key,
    glia_metrics,
    glia_policy_entry,
    glia_policy_key,
    glia_policy_subject,
)

_H = TypeVar("_H")

BPFFS_ROOT = Path("/sys/fs/bpf")
PROGS_SUBDIR = "progs"


LINKS_SUBDIR = "links"


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    """One attach point: the object file and the program in it.

    ``attach_type`` (enum bpf_attach_type) is set for cgroup programs, which
    are attached through pinned BPF links; tc programs have None.
    """

    object_file: str
    program: str
    attach_type: int | None = None


# enum bpf_attach_type (linux/bpf.h)
BPF_CGROUP_INET4_CONNECT = 10
BPF_CGROUP_UDP4_SENDMSG = 14
BPF_CGROUP_UDP4_RECVMSG = 19
BPF_CGROUP_INET4_GETPEERNAME = 29

FROM_ENDPOINT = ProgramSpec("from_endpoint.bpf.o", "from_endpoint")
FROM_OVERLAY = ProgramSpec("from_overlay.bpf.o", "from_overlay")
# tc egress of the endpoint veth: ingress policy for what the node's stack sends.
TO_ENDPOINT = ProgramSpec("to_endpoint.bpf.o", "to_endpoint")
# tc ingress of the node's underlay device: host ports for clients outside the node.
FROM_NETDEV = ProgramSpec("from_netdev.bpf.o", "from_netdev")
# Socket-level load-balancing (bpf/sock.bpf.c), attached to a cgroup v2.
SOCK_PROGRAMS = (
    ProgramSpec("sock.bpf.o", "glia_sock4_connect", BPF_CGROUP_INET4_CONNECT),
    ProgramSpec("sock.bpf.o", "glia_sock4_sendmsg", BPF_CGROUP_UDP4_SENDMSG),
    ProgramSpec("sock.bpf.o", "glia_sock4_recvmsg", BPF_CGROUP_UDP4_RECVMSG),
    ProgramSpec("sock.bpf.o", "glia_sock4_getpeername", BPF_CGROUP_INET4_GETPEERNAME),
)
PROGRAMS = (FROM_ENDPOINT, FROM_OVERLAY, TO_ENDPOINT, FROM_NETDEV, *SOCK_PROGRAMS)
# Each object once, in load order (every object declares every pinned map).
OBJECT_FILES = tuple(dict.fromkeys(spec.object_file for spec in PROGRAMS))

# libbpf's log capture is process-wide; one load at a time keeps it readable.
_load_lock = threading.Lock()


def default_obj_dir() -> Path:
    """$GLIA_BPF_DIR, else the installed package's objects, else build/bpf of the checkout."""
    return native.bpf_obj_dir()


def _fs_type(path: Path) -> str | None:
    """Filesystem type of the mount holding ``path`` (or its nearest existing parent)."""
    path = path.resolve()
    best, fstype = "", None
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            mountpoint = fields[1].replace("\\040", " ")
            inside = path == Path(mountpoint) or Path(mountpoint) in path.parents
            if inside and len(mountpoint) >= len(best):
                best, fstype = mountpoint, fields[2]
    return fstype


def ensure_bpffs(pin_dir: Path) -> None:
    if _fs_type(pin_dir) != "bpf":
        raise DatapathError(
            f"{pin_dir} is not on a bpf filesystem: mount it with "
            f"`mount -t bpf bpf {BPFFS_ROOT}` (scripts/setup.sh does)"
        )


def _check_pin_dir(pin_dir: Path) -> None:
    """glia only ever touches pins under a directory whose name starts with 'glia'."""
    if not any(part.startswith("glia") for part in pin_dir.parts):
        raise DatapathError(f"refusing pin directory {pin_dir}: no 'glia' component in it")


class Datapath:
    """The BPF side of one node: programs, pinned maps, tc attachments."""

    def __init__(self, pin_dir: Path, obj_dir: Path) -> None:
        self.pin_dir = Path(pin_dir)
        self.obj_dir = Path(obj_dir)
        self._objects: list[int] = []  # struct bpf_object *
        self._prog_fds: dict[str, int] = {}
        self._endpoints: EndpointMap | None = None
        self._ipcache: IPCacheMap | None = None
        self._metrics: MetricsMap | None = None
        self._config: ConfigMap | None = None
        self._lb: LBMaps | None = None
        self._ct: CTMap | None = None
        self._policy: PolicyMap | None = None

    def __enter__(self) -> Datapath:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- load ---------------------------------------------------------------

    def load(self) -> None:
        if self._objects:
            raise DatapathError(f"datapath for {self.pin_dir} is already loaded")
        _check_pin_dir(self.pin_dir)
        ensure_bpffs(self.pin_dir)
        (self.pin_dir / PROGS_SUBDIR).mkdir(parents=True, exist_ok=True)
        try:
            with _load_lock:
                for object_file in OBJECT_FILES:
                    obj = self._open_and_load(object_file)
                    for spec in PROGRAMS:
                        if spec.object_file == object_file:
                            self._prog_fds[spec.program] = self._pin_program(obj, spec)
            for retired in RETIRED_MAPS:
                (self.pin_dir / retired).unlink(missing_ok=True)
            first = self._objects[0]
            self._endpoints = EndpointMap(
                BPFMap(
                    self._map_fd(first, ENDPOINTS.name), ENDPOINTS, glia_endpoint_key, glia_endpoint
                )
            )
            self._ipcache = IPCacheMap(
                BPFMap(
                    self._map_fd(first, IPCACHE.name), IPCACHE, glia_ipcache_key, glia_ipcache_entry
                )
            )
            self._metrics = MetricsMap(
                BPFMap(self._map_fd(first, METRICS.name), METRICS, c_uint32, glia_metrics)
            )
            self._config = ConfigMap(
                BPFMap(self._map_fd(first, CONFIG.name), CONFIG, c_uint32, glia_config)
            )
            self._lb = LBMaps.open(lambda spec: self._map_fd(first, spec.name))
            self._ct = CTMap(
                BPFMap(self._map_fd(first, CT4.name), CT4, glia_ct4_key, glia_ct4_entry)
            )
            self._policy = PolicyMap(
                BPFMap(
                    self._map_fd(first, POLICY.name), POLICY, glia_policy_key, glia_policy_entry
                ),
                BPFMap(
                    self._map_fd(first, POLICY_SUBJECTS.name),
                    POLICY_SUBJECTS,
                    c_uint32,
                    glia_policy_subject,
                ),
            )
        except BaseException:
            self.close()
            raise

    def _open_and_load(self, object_file: str) -> int:
        lib = libbpf.lib()
        path = self.obj_dir / object_file
        if not path.is_file():
            raise DatapathError(
                f"{path} not found: build the BPF objects with `make bpf` in a checkout,"
                f" or point {native.BPF_DIR_ENV} (or the agent's bpf_obj_dir) at them"
            )
        libbpf.recent_log(clear=True)
        pin_root = str(self.pin_dir).encode()
        opts = libbpf.new_opts(libbpf.bpf_object_open_opts, pin_root_path=pin_root)
        obj = lib.bpf_object__open_file(str(path).encode(), ctypes.byref(opts))
        if not obj:
            raise BPFError(f"opening {path}", ctypes.get_errno() or 22, _log_tail())
        self._objects.append(obj)
        ret = lib.bpf_object__load(obj)
        if ret < 0:
            detail = _log_tail()
            if "couldn't reuse pinned map" in detail:
                detail += (
                    f"\n  hint: the pins in {self.pin_dir} come from another glia version; "
                    "remove them (glia lab down) to start over"
                )
            raise BPFError(f"loading {path} (pins in {self.pin_dir})", -ret, detail)
        return int(obj)

    def _pin_program(self, obj: int, spec: ProgramSpec) -> int:
        lib = libbpf.lib()
        prog = libbpf.check_ptr(
            lib.bpf_object__find_program_by_name(obj, spec.program.encode()),
            f"finding program {spec.program} in {spec.object_file}",
        )
        fd = libbpf.check(lib.bpf_program__fd(prog), f"fd of {spec.program}")
        # Replace the previous load's pin so the path names the current program.
        pin = self.pin_dir / PROGS_SUBDIR / spec.program
        pin.unlink(missing_ok=True)
        libbpf.check(lib.bpf_program__pin(prog, str(pin).encode()), f"pinning {pin}")
        return fd

    @staticmethod
    def _map_fd(obj: int, name: str) -> int:
        lib = libbpf.lib()
        m = libbpf.check_ptr(lib.bpf_object__find_map_by_name(obj, name.encode()), f"map {name}")
        # Our own fd, so map handles outlive the object if a caller keeps one.
        return os.dup(libbpf.check(lib.bpf_map__fd(m), f"fd of map {name}"))

    # --- maps ---------------------------------------------------------------

    def _loaded(self, handle: _H | None) -> _H:
        if handle is None:
            raise DatapathError(f"datapath for {self.pin_dir} is not loaded")
        return handle

    @property
    def endpoints(self) -> EndpointMap:
        return self._loaded(self._endpoints)

    @property
    def ipcache(self) -> IPCacheMap:
        return self._loaded(self._ipcache)

    @property
    def metrics(self) -> MetricsMap:
        return self._loaded(self._metrics)

    @property
    def config(self) -> ConfigMap:
        return self._loaded(self._config)

    @property
    def lb(self) -> LBMaps:
        """The lb4 service maps (written by glia.service.lbsync only)."""
        return self._loaded(self._lb)

    @property
    def policy(self) -> PolicyMap:
        """The policy maps (written by the agent's policy subsystem only)."""
        return self._loaded(self._policy)

    @property
    def ct(self) -> CTMap:
        """The service conntrack map (glia.datapath.ct)."""
        return self._loaded(self._ct)

    def configure(
        self, *, node_ip: str, vxlan_ifindex: int, cluster_id: int, vxlan_port: int
    ) -> None:
        """Tell the programs their node: its IP (the tunnel endpoint), glia_vxlan's
        ifindex and UDP port (pods may not send to it), its cluster id."""
        self.config.set(NodeConfig(node_ip, vxlan_ifindex, cluster_id, vxlan_port))

    def set_flags(self, flags: int) -> None:
        """The config's ``flags`` (GLIA_CFG_F_*: which optional events the
        programs emit), keeping the node's other fields as :meth:`configure`
        wrote them. The agent's monitor (:mod:`glia.agent.monitor`) is the one
        caller; :meth:`configure` resets them to 0."""
        self.config.set(replace(self.config.get(), flags=flags))

    def flags(self) -> int:
        return self.config.get().flags

    # --- programs -----------------------------------------------------------

    def prog_fd(self, program: str) -> int:
        """fd of a loaded program ("from_endpoint", "from_overlay"), e.g. for test runs."""
        try:
            return self._prog_fds[program]
        except KeyError:
            raise DatapathError(f"program {program} is not loaded ({self.pin_dir})") from None

    def attach_endpoint(self, ifindex: int) -> None:
        """from_endpoint (tc ingress) and to_endpoint (tc egress) on the host-side veth
        ``ifindex`` of the calling thread's netns. Egress first: the pod sends
        nothing before from_endpoint is there, and what the node sends it is
        judged from then on."""
        tc.attach_egress(ifindex, self.prog_fd(TO_ENDPOINT.program))
        tc.attach_ingress(ifindex, self.prog_fd(FROM_ENDPOINT.program))

    def attach_overlay(self, ifindex: int) -> None:
        """from_overlay on the VXLAN device ``ifindex`` of the calling thread's netns."""
        tc.attach_ingress(ifindex, self.prog_fd(FROM_OVERLAY.program))

    def attach_netdev(self, ifindex: int) -> None:
        """from_netdev (tc ingress) on the node's underlay device ``ifindex`` (the one
        holding the node IP) of the calling thread's netns: host ports in eBPF for
        clients outside the node. :meth:`detach` removes it."""
        tc.attach_ingress(ifindex, self.prog_fd(FROM_NETDEV.program))

    def detach(self, ifindex: int) -> bool:
        """Remove glia's programs from ``ifindex``; False if there were none."""
        egress = tc.detach_egress(ifindex)
        return tc.detach_ingress(ifindex) or egress

    # --- socket-level load-balancing (cgroup v2) ------------------------------

    def attach_socket_lb(self, cgroup: Path) -> None:
        """Attach the socket LB programs to the cgroup v2 directory ``cgroup``.

        Through BPF links pinned as ``links/<program>@<cgroup id>``: the
        attachment outlives the agent like the tc programs do, and attaching
        again (agent restart, upgrade) swaps the program in the existing link
        atomically, so no connect() in between misses the load-balancer. Links
        to another cgroup (the setting changed, or the cgroup was re-created)
        are removed, which detaches them.
        """
        lib = libbpf.lib()
        links = self.pin_dir / LINKS_SUBDIR
        links.mkdir(parents=True, exist_ok=True)
        try:
            cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise DatapathError(
                f"socket LB: cannot open cgroup {cgroup}: {e.strerror} "
                "(a cgroup v2 directory is expected)"
            ) from None
        try:
            # A cgroup v2 directory's inode number is its cgroup id.
            cg_id = os.fstat(cg_fd).st_ino
            wanted = set()
            for spec in SOCK_PROGRAMS:
                assert spec.attach_type is not None
                pin = links / f"{spec.program}@{cg_id}"
                wanted.add(pin.name)
                prog_fd = self.prog_fd(spec.program)
                if pin.exists():
                    link_fd = libbpf.obj_get(str(pin))
                    try:
                        libbpf.check(
                            lib.bpf_link_update(link_fd, prog_fd, None),
                            f"updating the {spec.program} link of {cgroup}",
                        )
                    finally:
                        os.close(link_fd)
                    continue
                link_fd = libbpf.check(
                    lib.bpf_link_create(prog_fd, cg_fd, spec.attach_type, None),
                    f"attaching {spec.program} to cgroup {cgroup}",
                )
                try:
                    libbpf.check(lib.bpf_obj_pin(link_fd, str(pin).encode()), f"pinning {pin}")
                finally:
                    os.close(link_fd)
        finally:
            os.close(cg_fd)
        for stale in links.iterdir():
            if stale.name not in wanted:
                stale.unlink(missing_ok=True)

    def detach_socket_lb(self) -> bool:
        """Remove the socket LB links (the programs detach); False if there were none."""
        links = self.pin_dir / LINKS_SUBDIR
        found = False
        if links.is_dir():
            for pin in links.iterdir():
                pin.unlink(missing_ok=True)
                found = True
        return found

    def socket_lb_links(self) -> list[str]:
        """Names of the pinned socket LB links, ``<program>@<cgroup id>``."""
        links = self.pin_dir / LINKS_SUBDIR
        return sorted(p.name for p in links.iterdir()) if links.is_dir() else []

    def close(self) -> None:
        for handle in (
            self._endpoints,
            self._ipcache,
            self._metrics,
            self._config,
            self._lb,
            self._ct,
            self._policy,
        ):
            if handle is not None:
                handle.close()
        self._endpoints = self._ipcache = self._metrics = self._config = None
        self._lb = None
        self._ct = None
        self._policy = None
        for obj in self._objects:
            libbpf.lib().bpf_object__close(obj)
        self._objects.clear()
        self._prog_fds.clear()


def _log_tail(lines: int = 40) -> str:
    return "\n".join(f"  {line}" for line in libbpf.recent_log()[-lines:])


def unpin(pin_dir: Path) -> None:
    """Remove a node's pins (maps and programs); attached programs keep running."""
    pin_dir = Path(pin_dir)
    _check_pin_dir(pin_dir)
    if not pin_dir.exists():
        return
    ensure_bpffs(pin_dir)
    shutil.rmtree(pin_dir)
