"""glia.clustermesh.config and .configdir: remote cluster files, parsed, scanned and watched.

Parsing is pure (tables of every bad field); scanning and watching use a
real temporary directory with real certificates from the lab's PKI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glia.clustermesh.config import (
    DEFAULT_STALE_AFTER,
    ConfigDiff,
    ConfigError,
    RemoteClusterConfig,
    Scan,
    cluster_name_of,
    needs_reconnect,
    parse,
    reconcile,
)
from glia.clustermesh.configdir import ConfigWatcher, scan
from glia.kvstore.config import EtcdConfig
from glia.lab import pki

BASE = Path("/etc/glia/clustermesh")
GOOD = """\
endpoints: [https://198.18.2.100:2379, "https://[fd00::1]:2379"]
ca_file: c2/ca.crt
cert_file: /pki/remote.crt
key_file: c2/remote.key
cluster_id: 2
stale_after: 60
"""


def good(**fields: str) -> str:
    lines = {ln.split(":", 1)[0]: ln for ln in GOOD.splitlines()}
    for k, v in fields.items():
        if v == "DELETE":
            lines.pop(k)
        else:
            lines[k] = f"{k}: {v}"
    return "\n".join(lines.values()) + "\n"


def parse_c2(text: str) -> RemoteClusterConfig:
    return parse("c2", text, "/etc/glia/clustermesh/c2.yaml", BASE)


# --- file names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cluster"),
    [
        ("c2.yaml", "c2"),
        ("east-1.yaml", "east-1"),
        (".c2.yaml.swp", None),  # vim
        ("c2.yaml.swp", None),
        ("c2.yaml~", None),  # emacs, gedit
        ("#c2.yaml#", None),
        (".#c2.yaml", None),
        ("..data", None),  # a Kubernetes secret volume
        (".hidden.yaml", None),
        ("4913", None),  # vim's probe file
        ("c2.crt", None),  # TLS files may live beside the cluster files
        ("README", None),
    ],
)
def test_which_entries_are_cluster_files(name: str, cluster: str | None) -> None:
    assert cluster_name_of(name) == cluster


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("c2.yml", r"c2.yml: cluster files end in .yaml"),
        ("C2.yaml", "the file name must be <cluster>.yaml: cluster name 'C2'"),
        ("c_2.yaml", "must be 1-32 lowercase letters"),
        (".yaml", None),  # hidden
        ("-c2.yaml", "lowercase"),
        (f"{'a' * 33}.yaml", "1-32"),
    ],
)
def test_misnamed_cluster_files_are_errors(name: str, reason: str | None) -> None:
    if reason is None:
        assert cluster_name_of(name) is None
        return
    with pytest.raises(ConfigError, match=reason):
        cluster_name_of(name)


# --- parsing ------------------------------------------------------------------------


def test_a_full_file() -> None:
    cfg = parse_c2(GOOD)
    assert cfg == RemoteClusterConfig(
        name="c2",
        etcd=EtcdConfig(
            endpoints=["https://198.18.2.100:2379", "https://[fd00::1]:2379"],
            ca_file="/etc/glia/clustermesh/c2/ca.crt",  # relative: from the directory
            cert_file="/pki/remote.crt",
            key_file="/etc/glia/clustermesh/c2/remote.key",
        ),
        cluster_id=2,
        stale_after=60.0,
        path="/etc/glia/clustermesh/c2.yaml",
    )


def test_optional_fields_have_defaults() -> None:
    cfg = parse_c2(good(cluster_id="DELETE", stale_after="DELETE"))
    assert cfg.cluster_id is None and cfg.stale_after == DEFAULT_STALE_AFTER == 300
    cfg = parse_c2(good(cluster_id="null", stale_after="null"))
    assert cfg.cluster_id is None and cfg.stale_after == 300
    assert parse_c2(good(stale_after="0.5")).stale_after == 0.5
    assert parse_c2(good(endpoints="[https://etcd.c2.example]")).etcd.endpoints == [
        "https://etcd.c2.example"
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected one mapping with endpoints, ca_file, cert_file, key_file, got 0 documents"),
        ("- a\n- b\n", "expected one mapping .* got list"),
        ("just text\n", "expected one mapping .* got str"),
        (GOOD + "---\n" + GOOD, "got 2 documents"),
        (GOOD + "ca-file: x\n", 'unknown field "ca-file" .known: endpoints, ca_file'),
        (GOOD + "3: x\n", "unknown field 3"),
        (GOOD + "endpoints: []\n", 'duplicate key "endpoints"'),
        ("endpoints: [https://a:1\n", "YAML syntax error"),
        (good(endpoints="DELETE"), "endpoints is missing"),
        (good(ca_file="DELETE"), "ca_file is missing"),
        (good(cert_file="DELETE"), "cert_file is missing"),
        (good(key_file="DELETE"), "key_file is missing"),
        (good(key_file="null"), "key_file is missing"),
        (good(endpoints="https://a:2379"), r"endpoints must be a list of 1\.\.16 https URLs"),
        (good(endpoints="[]"), r"endpoints must be a list of 1\.\.16"),
        (good(endpoints=str([f"https://a{i}:1" for i in range(17)])), "1..16"),
        (good(endpoints="[5]"), r"endpoints\[0\] must be a URL string, got int"),
        (good(endpoints="[http://a:2379]"), r"endpoints\[0\] 'http://a:2379' must be an https URL"),
        (good(endpoints="[a:2379]"), "must be an https URL"),
        (good(endpoints="['https://:2379']"), "has no host"),
        (good(endpoints="[https://a:99999]"), "is not a URL .*Port out of range"),
        (good(endpoints="[https://a:x]"), "is not a URL"),
        (good(endpoints="[https://a:0]"), "port 0 is not a port"),
        (good(endpoints="[https://u:p@a:2379]"), "no user or password"),
        (good(endpoints="[https://a:2379/v3]"), "nothing after it"),
        (good(endpoints="['https://a:2379?x=1']"), "nothing after it"),
        (
            good(endpoints="[https://a:1, https://a:1]"),
            r"endpoints\[1\] 'https://a:1' is listed twice",
        ),
        (good(ca_file="''"), "ca_file must be a file path, got str"),
        (good(cert_file="7"), "cert_file must be a file path, got int"),
        (good(key_file="[a]"), "key_file must be a file path, got list"),
        (good(cluster_id="true"), r"cluster_id must be an integer 1\.\.255, got bool"),
        (good(cluster_id="'2'"), "cluster_id must be an integer 1..255, got str"),
        (good(cluster_id="2.0"), "got float"),
        (good(cluster_id="0"), r"cluster_id 0 is not in 1\.\.255"),
        (good(cluster_id="256"), "cluster_id 256 is not in"),
        (good(stale_after="yes"), "stale_after must be a number of seconds, got bool"),
        (good(stale_after="'5m'"), "got str"),
        (good(stale_after="0"), r"stale_after 0 is not in \(0, 604800\] seconds"),
        (good(stale_after="-1"), "stale_after -1 is not in"),
        (good(stale_after=".inf"), "stale_after inf is not in"),
        (good(stale_after=".nan"), "stale_after nan is not in"),
        (good(stale_after="604801"), "stale_after 604801 is not in"),
    ],
)
def test_every_bad_field_is_named(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as err:
        parse_c2(text)
    assert str(err.value).startswith("/etc/glia/clustermesh/c2.yaml")


def test_a_bomb_is_refused_by_the_bounded_loader() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(ConfigError, match=r"c2\.yaml: .*aliases are expanded"):
        parse_c2(bomb)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_only_returns_or_raises_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_c2(text)


# --- reconcile (pure) -------------------------------------------------------------------


def cfg(name: str, digest: str = "d1") -> RemoteClusterConfig:
    return RemoteClusterConfig(name, EtcdConfig(), digest=digest)


def test_reconcile_added_changed_removed() -> None:
    now = {"c2": cfg("c2"), "c3": cfg("c3")}
    new, diff = reconcile(now, Scan({"c2": cfg("c2", "d2"), "c4": cfg("c4")}), {})
    assert new == {"c2": cfg("c2", "d2"), "c4": cfg("c4")}
    assert diff == ConfigDiff(
        added={"c4": cfg("c4")}, changed={"c2": cfg("c2", "d2")}, removed=["c3"], errors={}
    )
    new, diff = reconcile(new, Scan(dict(new)), {})
    assert diff.empty
    # Only the digest differs (a renewed certificate): changed, to reconnect.
    _, diff = reconcile(new, Scan({**new, "c2": replace(new["c2"], digest="d3")}), {})
    assert list(diff.changed) == ["c2"]


def test_only_the_connection_and_the_expected_id_need_a_reconnect() -> None:
    base = RemoteClusterConfig(
        "c2", EtcdConfig(endpoints=["https://198.18.2.254:2379"]), 2, tls_digest="t1"
    )
    assert not needs_reconnect(base, replace(base, stale_after=5, digest="d2", path="/x"))
    for other in (
        replace(base, etcd=EtcdConfig(endpoints=["https://198.18.2.253:2379"])),
        replace(base, etcd=replace(base.etcd, cert_file="/elsewhere.crt")),
        replace(base, tls_digest="t2"),  # a renewed certificate at the same path
        replace(base, cluster_id=3),
        replace(base, cluster_id=None),
    ):
        assert needs_reconnect(base, other), other


def test_a_broken_file_keeps_the_last_good_configuration() -> None:
    now = {"c2": cfg("c2"), "c3": cfg("c3")}
    errors = {"/d/c2.yaml": "/d/c2.yaml: endpoints is missing", "/d/c5.yaml": "/d/c5.yaml: bad"}
    new, diff = reconcile(now, Scan({"c3": cfg("c3")}, errors, frozenset({"c2", "c5"})), {})
    assert new == now  # c2 stays as it was; c5 was never good
    assert not diff.added and not diff.changed and not diff.removed
    assert diff.errors == errors and diff.errors_changed and not diff.empty
    # The same errors again: nothing to report.
    _, diff = reconcile(new, Scan({"c3": cfg("c3")}, errors, frozenset({"c2", "c5"})), errors)
    assert diff.empty
    # Fixed, with a new content: changed; removed while broken: removed.
    _, diff = reconcile(new, Scan({"c2": cfg("c2", "d9"), "c3": cfg("c3")}), errors)
    assert diff.changed == {"c2": cfg("c2", "d9")} and diff.errors == {} and diff.errors_changed
    _, diff = reconcile(new, Scan({"c3": cfg("c3")}), errors)
    assert diff.removed == ["c2"]


def test_an_unreadable_directory_changes_nothing() -> None:
    now = {"c2": cfg("c2")}
    new, diff = reconcile(now, Scan({}, {"/d": "/d: cannot list"}, listed=False), {})
    assert new == now and diff.removed == [] and diff.errors == {"/d": "/d: cannot list"}


# --- scanning a real directory -----------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("glia-mesh-pki")
    ca = pki.make_ca(d, "ca")
    remote = pki.issue(ca, d, "remote", cn="glia-remote")
    other = pki.issue(ca, d, "other", cn="glia-remote")
    return {"ca": ca.cert, "cert": remote.cert, "key": remote.key, "other_key": other.key}


@pytest.fixture
def mesh_dir(tmp_path: Path, certs: dict[str, Path]) -> Iterator[Path]:
    d = tmp_path / "glia-clustermesh"
    (d / "tls").mkdir(parents=True)
    for name in ("ca", "cert", "key"):
        shutil.copy(certs[name], d / "tls" / f"{name}.pem")
    yield d


def write(
    d: Path, name: str, text: str | None = None, subst: dict[str, str] | None = None, **fields: str
) -> Path:
    """A cluster file: ``text``, or a good one with ``fields`` added and ``subst`` applied."""
    body = text
    if body is None:
        body = (
            "endpoints: [https://198.18.2.100:2379]\n"
            "ca_file: tls/ca.pem\ncert_file: tls/cert.pem\nkey_file: tls/key.pem\n"
        ) + "".join(f"{k}: {v}\n" for k, v in fields.items())
        for old, new in (subst or {}).items():
            body = body.replace(old, new)
    path = d / name
    tmp = d / f".{name}.tmp"
    tmp.write_text(body)
    tmp.rename(path)  # as an editor that renames over the file
    return path


def test_scan_reads_good_files_and_reports_each_bad_one(
    mesh_dir: Path, certs: dict[str, Path]
) -> None:
    d = mesh_dir
    write(d, "c2.yaml", cluster_id="2")
    write(d, "c3.yaml", stale_after="10")
    write(d, "c4.yaml", subst={"[https://198.18.2.100:2379]": "nope"})
    write(d, "c5.yml")
    write(d, "c6.yaml", key_file_="x")  # an unknown field
    write(d, "c7.yaml", subst={"tls/ca.pem": "tls/missing.pem"})
    shutil.copy(certs["other_key"], d / "tls" / "other.pem")
    write(d, "c8.yaml", subst={"tls/key.pem": "tls/other.pem"})  # another certificate's key
    write(d, "c9.yaml", subst={"tls/ca.pem": "tls/key.pem"})
    os.mkfifo(d / "c10.yaml")  # would block a plain open()
    (d / "c11.yaml").write_bytes(b"endpoints: [\xff]\n")
    (d / "c12.yaml").write_text("# " + "x" * (64 << 10) + "\n")
    (d / "c2.yaml.swp").write_text("garbage")
    (d / ".c3.yaml.swp").write_text("garbage")
    (d / "c3.yaml~").write_text("garbage")
    (d / "sub.yaml").mkdir()

    result = scan(d)
    assert sorted(result.configs) == ["c2", "c3"]
    c2 = result.configs["c2"]
    assert c2.cluster_id == 2 and c2.etcd.ca_file == str(d / "tls" / "ca.pem") and c2.digest
    assert result.configs["c3"].stale_after == 10
    errors = {Path(k).name: v for k, v in result.errors.items()}
    expected = {
        "c4.yaml": "endpoints must be a list",
        "c5.yml": "cluster files end in .yaml",
        "c6.yaml": 'unknown field "key_file_"',
        "c7.yaml": "ca_file .*missing.pem: No such file or directory",
        "c8.yaml": "key_file .*other.pem is not the key of cert_file",
        "c9.yaml": "ca_file .*key.pem holds no PEM certificate",
        "c10.yaml": "cluster file .*c10.yaml is not a regular file",
        "c11.yaml": "not UTF-8 text",
        "c12.yaml": "cluster file .*c12.yaml is larger than 65536 bytes",
        "sub.yaml": "sub.yaml is not a regular file",
    }
    assert sorted(errors) == sorted(expected)
    for name, reason in expected.items():
        assert errors[name].startswith(str(d / name)), errors[name]
        assert re.search(reason, errors[name]), errors[name]
    assert result.broken == {"c4", "c6", "c7", "c8", "c9", "c10", "c11", "c12", "sub"}


def test_scan_of_a_missing_or_unreadable_directory(tmp_path: Path) -> None:
    assert scan(tmp_path / "glia-none") == Scan({})
    f = tmp_path / "glia-file"
    f.write_text("")
    result = scan(f)
    assert not result.listed and "not a directory" in result.errors[str(f)]


def test_the_digest_follows_the_tls_files(mesh_dir: Path, certs: dict[str, Path]) -> None:
    write(mesh_dir, "c2.yaml")
    cache: dict[str, tuple[str, RemoteClusterConfig | str]] = {}
    first = scan(mesh_dir, cache).configs["c2"]
    assert scan(mesh_dir, cache).configs["c2"] == first  # from the cache, same value
    # A renewed certificate and key: same YAML, a new digest.
    renewed = pki.issue(
        pki.make_ca(certs["ca"].parent, "ca"), mesh_dir, "renewed", cn="glia-remote"
    )
    shutil.copy(renewed.cert, mesh_dir / "tls" / "cert.pem")
    shutil.copy(renewed.key, mesh_dir / "tls" / "key.pem")
    second = scan(mesh_dir, cache).configs["c2"]
    assert second.digest != first.digest and second != first
    assert second.tls_digest != first.tls_digest and needs_reconnect(first, second)
    # The YAML alone (stale_after): a change, taken over the same connection.
    write(mesh_dir, "c2.yaml", stale_after="30")
    third = scan(mesh_dir, cache).configs["c2"]
    assert third.digest != second.digest and third.tls_digest == second.tls_digest
    assert third.stale_after == 30 and not needs_reconnect(second, third)
    (mesh_dir / "c2.yaml").unlink()
    scan(mesh_dir, cache)
    assert cache == {}


# --- the watcher ---------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.diffs: asyncio.Queue[ConfigDiff] = asyncio.Queue()

    async def __call__(self, diff: ConfigDiff) -> None:
        await self.diffs.put(diff)

    async def next(self, timeout: float = 5.0) -> ConfigDiff:
        return await asyncio.wait_for(self.diffs.get(), timeout)


async def test_the_watcher_reports_each_change_once(mesh_dir: Path, certs: dict[str, Path]) -> None:
    d = mesh_dir
    write(d, "c2.yaml", cluster_id="2")
    rec = Recorder()
    w = ConfigWatcher(d, rec, interval=0.05)
    await w.start()
    try:
        first = await rec.next()
        assert list(first.added) == ["c2"] and not first.errors

        write(d, "c3.yaml")  # added at run time
        diff = await rec.next()
        assert list(diff.added) == ["c3"] and not diff.changed and not diff.removed

        write(d, "c3.yaml", stale_after="30")  # changed
        diff = await rec.next()
        assert list(diff.changed) == ["c3"] and diff.changed["c3"].stale_after == 30

        write(d, "c4.yaml", "endpoints: 5\n")  # a broken file beside good ones
        diff = await rec.next()
        assert not diff.added and not diff.removed and list(diff.errors) == [str(d / "c4.yaml")]
        assert set(w.configs) == {"c2", "c3"}

        good_c2 = w.configs["c2"]
        write(d, "c2.yaml", "endpoints: [\n")  # c2 broken mid-edit: it keeps running
        diff = await rec.next()
        assert not diff.removed and set(diff.errors) == {str(d / "c2.yaml"), str(d / "c4.yaml")}
        assert w.configs["c2"] == good_c2
        write(d, "c2.yaml", cluster_id="2")  # saved again as it was: nothing changed for c2
        diff = await rec.next()
        assert not diff.changed and set(diff.errors) == {str(d / "c4.yaml")}

        (d / "c3.yaml").unlink()  # removed
        diff = await rec.next()
        assert diff.removed == ["c3"] and not diff.added
        (d / "c2.yaml.swp").write_text("x")  # ignored: no report at all
        (d / "c4.yaml").unlink()
        diff = await rec.next()
        assert diff.errors == {} and diff.errors_changed and set(w.configs) == {"c2"}
        await asyncio.sleep(0.3)
        assert rec.diffs.empty(), "a report without a change"
        assert w.polls > 5
    finally:
        await w.stop()


async def test_a_failing_callback_does_not_stop_the_watcher(mesh_dir: Path) -> None:
    seen: list[ConfigDiff] = []

    async def flaky(diff: ConfigDiff) -> None:
        seen.append(diff)
        raise RuntimeError("boom")

    w = ConfigWatcher(mesh_dir, flaky, interval=0.05)
    await w.start()
    try:
        write(mesh_dir, "c2.yaml")
        for _ in range(100):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        assert [list(s.added) for s in seen] == [[], ["c2"]]
        assert w.configs.keys() == {"c2"}
    finally:
        await w.stop()


def test_the_watcher_wants_a_positive_interval(tmp_path: Path) -> None:
    async def nothing(diff: ConfigDiff) -> None:
        return None

    with pytest.raises(ValueError, match="interval"):
        ConfigWatcher(tmp_path, nothing, interval=0)
