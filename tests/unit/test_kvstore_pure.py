"""The pure parts of the kvstore layer: ranges, records, endpoints, error mapping, diff."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glia.kvstore.config import EtcdConfig
from glia.kvstore.errors import (
    Compacted,
    KVStoreError,
    KVStoreUnavailable,
    PermissionDenied,
    is_fatal_for_stream,
    is_transient,
    map_rpc_error,
)
from glia.kvstore.records import (
    Compare,
    Event,
    EventKind,
    KeyValue,
    decode_key,
    encode_key,
    prefix_range,
)
from glia.kvstore.reflector import diff
from glia.kvstore.tls import load_credentials, parse_endpoint, parse_endpoints


def kv(key: str, rev: int, value: bytes = b"v") -> KeyValue:
    return KeyValue(key, value, rev, rev, 1, 0)


def test_prefix_range() -> None:
    assert prefix_range("glia/") == (b"glia/", b"glia0")
    assert prefix_range("") == (b"\0", b"\0")
    assert prefix_range("\udcff") == (b"\xff", b"\0")


def test_keys_that_are_not_utf8_round_trip() -> None:
    raw = b"glia/\xff\xfe"
    assert encode_key(decode_key(raw)) == raw


def test_compare_checks_its_value_type() -> None:
    Compare("k", "mod", "==", 3)
    Compare("k", "value", "!=", b"x")
    with pytest.raises(ValueError, match="needs bytes"):
        Compare("k", "value", "==", 3)
    with pytest.raises(ValueError, match="needs an int"):
        Compare("k", "create", "==", b"0")
    with pytest.raises(ValueError, match="op"):
        Compare("k", "mod", "<=", 1)  # type: ignore[arg-type]


def test_event_as_kv() -> None:
    ev = Event(EventKind.PUT, "k", b"v", 9, create_revision=4, version=3, lease=7)
    assert ev.as_kv() == KeyValue("k", b"v", 4, 9, 3, 7)


def test_parse_endpoint() -> None:
    assert parse_endpoint("https://10.0.0.1:2379").target == "10.0.0.1:2379"
    assert parse_endpoint("https://[fd00::1]:2380").target == "[fd00::1]:2380"
    assert parse_endpoint("10.0.0.1").target == "10.0.0.1:2379"
    assert parse_endpoint("10.0.0.1").secure
    assert not parse_endpoint("http://h:1").secure
    for bad in ("ftp://h:1", "https://h:99999", "https://h:1/path", "https://:1"):
        with pytest.raises(KVStoreError, match="endpoint"):
            parse_endpoint(bad)
    with pytest.raises(KVStoreError, match="no endpoints"):
        parse_endpoints([])


def test_credentials_name_the_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(KVStoreError, match=r"CA certificate .*nope\.crt"):
        load_credentials(EtcdConfig(ca_file=missing))
    with pytest.raises(KVStoreError, match="together"):
        load_credentials(EtcdConfig(cert_file=missing))


def test_error_mapping() -> None:
    url = "https://10.0.0.1:2379"
    e = map_rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused", url, "put k")
    assert isinstance(e, KVStoreUnavailable) and url in str(e) and "put k" in str(e)
    e = map_rpc_error(
        grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", url, "put k", "ro"
    )
    assert isinstance(e, PermissionDenied) and "'ro'" in str(e)
    assert e.endpoint == url and e.details == "etcdserver: permission denied"
    # A watch's cancel reason carries Go's gRPC wrapping and no status code.
    e = map_rpc_error(
        None, "rpc error: code = PermissionDenied desc = etcdserver: permission denied", url, "w"
    )
    assert isinstance(e, PermissionDenied) and e.details == "etcdserver: permission denied"
    compacted = "etcdserver: mvcc: required revision has been compacted"
    e = map_rpc_error(grpc.StatusCode.OUT_OF_RANGE, compacted, url, "list")
    assert isinstance(e, Compacted)
    e = map_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations", url, "t")
    assert type(e) is KVStoreError and "INVALID_ARGUMENT" in str(e)
    assert is_transient(grpc.StatusCode.UNAVAILABLE) and not is_transient(
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert is_fatal_for_stream(grpc.StatusCode.PERMISSION_DENIED)
    assert not is_fatal_for_stream(grpc.StatusCode.CANCELLED)


def test_diff_reports_only_changes() -> None:
    cache = {"a": kv("a", 1), "b": kv("b", 2), "c": kv("c", 3)}
    listed = [kv("b", 7), kv("c", 3), kv("d", 8)]
    deleted, upserted = diff(cache, listed)
    assert [d.key for d in deleted] == ["a"]
    assert [(u.key, u.mod_revision) for u in upserted] == [("b", 7), ("d", 8)]


def test_diff_by_value_ignores_revisions() -> None:
    # A cache from another connection: its revisions mean nothing here.
    cache = {"a": kv("a", 1), "b": kv("b", 2), "c": kv("c", 3, b"old")}
    listed = [kv("b", 90), kv("c", 3, b"new"), kv("d", 91)]
    deleted, upserted = diff(cache, listed, by_value=True)
    assert [d.key for d in deleted] == ["a"]
    assert [(u.key, u.value) for u in upserted] == [("c", b"new"), ("d", b"v")]


@settings(deadline=None)  # timing is not under test; CI machines are busy
@given(
    st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 5)),
    st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 5)),
)
def test_diff_applied_to_the_cache_gives_the_listing(
    old: dict[str, int], new: dict[str, int]
) -> None:
    cache = {k: kv(k, r) for k, r in old.items()}
    listed = [kv(k, r) for k, r in sorted(new.items())]
    deleted, upserted = diff(cache, listed)
    for d in deleted:
        del cache[d.key]
    for u in upserted:
        cache[u.key] = u
    assert cache == {k.key: k for k in listed}
    assert not {d.key for d in deleted} & {u.key for u in upserted}
    assert all(old.get(u.key) != u.mod_revision for u in upserted)
