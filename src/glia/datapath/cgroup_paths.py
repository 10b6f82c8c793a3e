"""Pure rules about cgroup paths: the mount table, ``/proc/PID/cgroup``, glia's names.

Shared by :mod:`glia.datapath.cgroup` (creating and removing the cgroups that
socket load-balancing attaches to) and :mod:`glia.cni.oci_hook`, which runs on
every container start. For the hook's sake this module imports nothing: plain
strings in and out, no pathlib, re or typing.

A cgroup is named two ways: by a file-system path under one of the places a
hierarchy is mounted (``/sys/fs/cgroup/unified/glia-lab-glia-c1-n1``), and by
its path inside the hierarchy (``/glia-lab-glia-c1-n1``), which is what
``/proc/PID/cgroup`` shows. cgroup v2 has a single hierarchy, so every cgroup2
mount of the host shows the same tree.
"""

from __future__ import annotations

GLIA_PREFIX = "glia"

# One cgroup mount: (mount point, path inside the hierarchy mounted there, 1 or 2).
Mount = tuple[str, str, int]

# Where hosts mount cgroup2: the pure v2 layout first, then the hybrid layout.
USUAL_CGROUP2_POINTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


class CgroupPathError(ValueError):
    """A path that glia must not use as a cgroup; the message says why."""


def unescape(field: str) -> str:
    """A mountinfo field with its octal escapes (``\\040`` for a space) decoded."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        digits = field[i + 1 : i + 4]
        if field[i] == "\\" and len(digits) == 3 and all(c in "01234567" for c in digits):
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup (v1) and cgroup2 mounts of a ``/proc/PID/mountinfo`` text, in order."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        fstype = fields[fields.index("-", 6) + 1]
        if fstype in ("cgroup", "cgroup2"):
            version = 2 if fstype == "cgroup2" else 1
            mounts.append((unescape(fields[4]), unescape(fields[3]), version))
    return mounts


def preferred_cgroup2(mounts: list[Mount]) -> str | None:
    """Where the whole cgroup2 hierarchy is mounted: a usual place if it is there."""
    whole = [point for point, root, version in mounts if version == 2 and root == "/"]
    for usual in USUAL_CGROUP2_POINTS:
        if usual in whole:
            return usual
    return whole[0] if whole else None


def mount_containing(path: str, mounts: list[Mount]) -> Mount | None:
    """The deepest cgroup mount strictly above ``path`` (a later mount hides an earlier one)."""
    best: Mount | None = None
    for mount in mounts:
        prefix = mount[0].rstrip("/") + "/"
        if path.startswith(prefix) and (best is None or len(mount[0]) >= len(best[0])):
            best = mount
    return best


def hierarchy_path(path: str, mount: Mount) -> str:
    """``path`` (below ``mount``'s point) as ``/proc/PID/cgroup`` names it."""
    rest = path[len(mount[0].rstrip("/")) :].strip("/")
    root = mount[1].rstrip("/")
    return f"{root}/{rest}" if rest else root or "/"


def proc_cgroup2(text: str) -> str | None:
    """The cgroup2 path in a ``/proc/PID/cgroup`` text (its ``0::`` line), None without one."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def is_within(cgroup: str, ancestor: str) -> bool:
    """Whether hierarchy path ``cgroup`` is ``ancestor`` or below it."""
    ancestor = ancestor.rstrip("/")
    return cgroup == ancestor or cgroup.startswith(ancestor + "/") or ancestor == ""


def check_glia_cgroup(path: str, mounts: list[Mount], versions: tuple[int, ...] = (2,)) -> Mount:
    """The mount holding ``path``, if glia may create, fill or remove that cgroup.

    ``path`` must be absolute and normalised, name a directory starting with
    "glia", and lie strictly below a mount of a cgroup version in ``versions``:
    so glia never touches a hierarchy's root or anyone else's cgroup.
    """
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not path.startswith("/") or "/../" in path + "/" or "/./" in path + "/":
        raise CgroupPathError(f"cgroup path {path!r} must be absolute and normalised")
    if not name.startswith(GLIA_PREFIX):
        raise CgroupPathError(
            f"refusing cgroup {path}: glia only touches cgroups whose name starts with "
            f"{GLIA_PREFIX!r}"
        )
    mount = mount_containing(path, mounts)
    if mount is None or mount[2] not in versions:
        kinds = " or ".join("cgroup2" if v == 2 else "cgroup (v1)" for v in versions)
        raise CgroupPathError(f"refusing cgroup {path}: it is not inside a {kinds} mount")
    return mount
