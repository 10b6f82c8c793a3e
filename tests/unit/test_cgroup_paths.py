"""Rules about cgroup paths (glia.datapath.cgroup_paths): pure, no kernel."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glia.datapath import cgroup_paths as cp
from glia.datapath.cgroup_paths import CgroupPathError

# /proc/self/mountinfo of a hybrid host (cgroup v1 with cgroup2 at .../unified).
HYBRID = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
36 31 0:33 / /sys/fs/cgroup/pids rw,relatime shared:7 master:3 - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PURE_V2 = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
90 22 0:26 / /run/glia/cgroup2 rw shared:40 - cgroup2 cgroup2 rw
91 22 0:26 /some/sub /mnt/sub rw shared:41 - cgroup2 cgroup2 rw
"""


def test_parse_mountinfo_keeps_cgroup_mounts_only() -> None:
    assert cp.parse_mountinfo(HYBRID) == [
        ("/sys/fs/cgroup/cpu", "/", 1),
        ("/sys/fs/cgroup/pids", "/", 1),
        ("/sys/fs/cgroup/unified", "/", 2),
    ]


def test_escaped_mount_points_are_decoded() -> None:
    text = r"50 22 0:40 / /run/glia\040x\134y rw - cgroup2 none rw" + "\n"
    assert cp.parse_mountinfo(text) == [("/run/glia x\\y", "/", 2)]
    assert cp.unescape(r"a\0b\x") == r"a\0b\x"  # not an octal escape: kept


def test_preferred_cgroup2() -> None:
    assert cp.preferred_cgroup2(cp.parse_mountinfo(HYBRID)) == "/sys/fs/cgroup/unified"
    assert cp.preferred_cgroup2(cp.parse_mountinfo(PURE_V2)) == "/sys/fs/cgroup"
    own = "90 22 0:26 / /run/glia/cgroup2 rw - cgroup2 cgroup2 rw\n"
    assert cp.preferred_cgroup2(cp.parse_mountinfo(own)) == "/run/glia/cgroup2"
    sub_only = "91 22 0:26 /some/sub /mnt/sub rw - cgroup2 cgroup2 rw\n"
    assert cp.preferred_cgroup2(cp.parse_mountinfo(sub_only)) is None
    assert cp.preferred_cgroup2(cp.parse_mountinfo(HYBRID.replace("cgroup2", "tmpfs"))) is None


def test_hierarchy_path_follows_the_mount_root() -> None:
    mounts = cp.parse_mountinfo(PURE_V2)
    sub = cp.mount_containing("/mnt/sub/glia-x/y", mounts)
    assert sub == ("/mnt/sub", "/some/sub", 2)
    assert cp.hierarchy_path("/mnt/sub/glia-x/y", sub) == "/some/sub/glia-x/y"
    top = cp.mount_containing("/sys/fs/cgroup/glia-x", mounts)
    assert top is not None
    assert cp.hierarchy_path("/sys/fs/cgroup/glia-x", top) == "/glia-x"
    assert cp.hierarchy_path("/sys/fs/cgroup", top) == "/"


def test_mount_containing_is_strict_and_deepest() -> None:
    mounts = cp.parse_mountinfo(HYBRID)
    assert cp.mount_containing("/sys/fs/cgroup/unified", mounts) is None
    assert cp.mount_containing("/sys/fs/cgroup/unifiedx/glia", mounts) is None
    nested = [("/a", "/", 2), ("/a/b", "/", 1)]
    assert cp.mount_containing("/a/b/glia", nested) == ("/a/b", "/", 1)
    assert cp.mount_containing("/a/glia", nested) == ("/a", "/", 2)


def test_proc_cgroup2() -> None:
    text = "9:name=systemd:/\n4:memory:/x\n0::/glia-lab-gliat-c1-n1/libpod-abc\n"
    assert cp.proc_cgroup2(text) == "/glia-lab-gliat-c1-n1/libpod-abc"
    assert cp.proc_cgroup2("4:memory:/x\n") is None


@pytest.mark.parametrize(
    ("cgroup", "ancestor", "inside"),
    [
        ("/glia-a", "/glia-a", True),
        ("/glia-a/libpod-1", "/glia-a", True),
        ("/glia-ab", "/glia-a", False),
        ("/libpod_parent/libpod-1", "/glia-a", False),
        ("/anything", "/", True),
        ("/", "/glia-a", False),
    ],
)
def test_is_within(cgroup: str, ancestor: str, inside: bool) -> None:
    assert cp.is_within(cgroup, ancestor) is inside


def test_check_glia_cgroup_accepts_glia_dirs_below_a_cgroup2_mount() -> None:
    mounts = cp.parse_mountinfo(HYBRID)
    path = "/sys/fs/cgroup/unified/glia-lab-glia-c1-n1"
    assert cp.check_glia_cgroup(path, mounts) == ("/sys/fs/cgroup/unified", "/", 2)
    nested = "/sys/fs/cgroup/unified/glia-lab-glia-c1-n1/glia-child"
    assert cp.check_glia_cgroup(nested, mounts)[0] == "/sys/fs/cgroup/unified"
    v1 = "/sys/fs/cgroup/pids/glia-lab-glia-c1-n1"
    assert cp.check_glia_cgroup(v1, mounts, versions=(1, 2))[2] == 1


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/sys/fs/cgroup/unified/libpod_parent", "name starts with 'glia'"),
        ("/sys/fs/cgroup/unified", "name starts with 'glia'"),
        ("/sys/fs/cgroup/unified/glia-x/libpod-1", "name starts with 'glia'"),
        ("/sys/fs/cgroup/glia-x", "not inside a cgroup2 mount"),  # the v1 tmpfs
        ("/tmp/glia-x", "not inside a cgroup2 mount"),
        ("/sys/fs/cgroup/pids/glia-x", "not inside a cgroup2 mount"),  # v1 only
        ("/sys/fs/cgroup/unified/../glia-x", "absolute and normalised"),
        ("glia-x", "absolute and normalised"),
    ],
)
def test_check_glia_cgroup_refuses(path: str, reason: str) -> None:
    with pytest.raises(CgroupPathError, match=reason):
        cp.check_glia_cgroup(path, cp.parse_mountinfo(HYBRID))


@given(st.text(alphabet="/.gliax-", max_size=24))
def test_accepted_paths_are_glia_named_and_strictly_below_the_mount(path: str) -> None:
    mounts = [("/cg", "/", 2)]
    try:
        cp.check_glia_cgroup(path, mounts)
    except CgroupPathError:
        return
    assert path.startswith("/cg/")
    assert path.rstrip("/").rsplit("/", 1)[-1].startswith("glia")
    assert ".." not in path.split("/")
