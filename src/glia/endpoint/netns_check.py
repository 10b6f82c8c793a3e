"""Is ``CNI_NETNS`` a pod's network namespace? Asked by the agent before an ADD or CHECK acts.

Called by :class:`glia.endpoint.manager.EndpointManager`. A path is accepted
only if it opens as a namespace file (nsfs) of type NET, found with the
``NS_GET_NSTYPE`` ioctl (Linux 4.11), and is neither the namespace the agent
itself runs in (the node's: ``/proc/self/ns/net`` is what a runtime's
``CNI_NETNS=/proc/self/ns/net`` means to the agent) nor the host's root
namespace (:data:`ROOT_NETNS`): plumbing a pod interface there would give the
node or the host a pod's address and default route.

Namespaces are compared by (device, inode) of their nsfs file, which is the
same whichever path (``/run/netns/x``, ``/proc/PID/ns/net``) names them.
Errors are CNI code 4: the spec's "invalid necessary environment variables
... the error message must contain the names of invalid variables"
(https://www.cni.dev/docs/spec/#error), and ``CNI_NETNS`` is one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Sequence

from glia.cni.spec import ERR_INVALID_ENV, CniError, check_netns_path
from glia.endpoint.request import NetnsId

NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), linux/nsfs.h
CLONE_NEWNET = 0x40000000
# The other namespace types, to say which one a wrong path is (linux/sched.h).
_NS_TYPES = {
    0x00020000: "mount",
    0x02000000: "cgroup",
    0x04000000: "UTS",
    0x08000000: "IPC",
    0x10000000: "user",
    0x20000000: "PID",
    0x00000080: "time",
}
OWN_NETNS = "/proc/self/ns/net"  # the agent's main thread: the node's namespace
# The host's root namespace: init's, and kthreadd's for where init's cannot be
# looked at (seen in a sandbox: EACCES on /proc/1/ns/*, even as root). On a host
# both are init_net; in a PID namespace they are that namespace's first processes.
ROOT_NETNS = ("/proc/1/ns/net", "/proc/2/ns/net")


def identity(path: str) -> NetnsId | None:
    """The namespace ``path`` names now, None if it cannot be looked at."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return NetnsId(st.st_dev, st.st_ino)


def check_pod_netns(
    path: str, *, own: str = OWN_NETNS, root: Sequence[str] = ROOT_NETNS
) -> NetnsId:
    """The identity of the pod namespace at ``path``, or CniError (code 4) saying why not."""
    check_netns_path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _bad(path, "does not exist") from None
    except OSError as e:
        raise _bad(path, f"cannot be looked at: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        # Namespace files are regular files; never open a FIFO or a device.
        raise _bad(path, f"is not a network namespace (it is a {_kind(st.st_mode)})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise _bad(path, f"cannot be opened: {e.strerror}") from None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            raise _bad(path, "changed while it was being checked")
        try:
            nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError as e:
            if e.errno in (errno.ENOTTY, errno.EINVAL):
                raise _bad(path, "is not a network namespace (not a namespace file)") from None
            raise _bad(path, f"cannot be checked: {e.strerror}") from None
    finally:
        os.close(fd)
    if nstype != CLONE_NEWNET:
        what = _NS_TYPES.get(nstype, f"type {nstype:#x}")
        raise _bad(path, f"is a {what} namespace, not a network namespace")
    found = NetnsId(st.st_dev, st.st_ino)
    if found == identity(own):
        raise _bad(path, "is the node's own network namespace (the agent's), not a pod's")
    if any(found == identity(r) for r in root):
        raise _bad(path, "is the host's root network namespace, not a pod's")
    return found


def _bad(path: str, why: str) -> CniError:
    return CniError(ERR_INVALID_ENV, f"CNI_NETNS {path[:200]} {why}")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"
