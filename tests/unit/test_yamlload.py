"""Bounded YAML loading: every limit refused with where and why, before anything expands."""

from __future__ import annotations

import io
import json
import resource
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from glia.service import yamlload
from glia.service.yamlload import MAX_ALIASES, MAX_BYTES, MAX_DEPTH, MAX_EXPANDED, YamlError


def laughs(levels: int, fanout: int = 9, where: str = "status") -> str:
    """A "billion laughs" in a field glia ignores: level n is fanout aliases of level n-1."""
    lines = [
        "apiVersion: v1",
        "kind: Service",
        "metadata: {name: web}",
        "spec: {selector: {app: web}, ports: [{port: 80}]}",
        f"{where}:",
        "  l0: &l0 [" + ", ".join(['"lol"'] * fanout) + "]",
    ]
    for n in range(1, levels + 1):
        lines.append(f"  l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


def data_size(value: Any) -> int:
    """What MAX_EXPANDED counts, from loaded data: one per value plus each scalar's characters
    (for these documents, whose scalars are written as ``str()`` writes them)."""
    if isinstance(value, dict):
        return 1 + sum(data_size(k) + data_size(v) for k, v in value.items())
    if isinstance(value, list):
        return 1 + sum(data_size(v) for v in value)
    return 1 + len(str(value))


def expanded(levels: int, fanout: int = 9, where: str = "status") -> int:
    """:func:`data_size` of :func:`laughs`' document, computed without expanding it."""
    [doc] = yamlload.load(laughs(0, fanout, where), "f.yaml")
    total = data_size(doc)
    size = 1 + fanout * (1 + 3)  # l0: the list and its "lol"s
    for n in range(1, levels + 1):
        size = 1 + fanout * size
        total += 1 + len(f"l{n}") + size
    return total


def refused(text: str) -> str:
    with pytest.raises(YamlError) as ei:
        yamlload.load(text, "f.yaml")
    return str(ei.value)


def test_billion_laughs_is_refused_at_the_alias_that_crosses_the_limit() -> None:
    # A ceiling on memory proves nothing was expanded (9**9 "lol"s would be gigabytes):
    # 1 GiB more address space than this process has now.
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    now = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    ceiling = now + (1 << 30)
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        msg = refused(laughs(8))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    levels = next(n for n in range(9) if expanded(n) > MAX_EXPANDED)
    line = 6 + levels  # the line of level `levels`
    assert msg.startswith(f"f.yaml: document 1, line {line}, column ")
    assert msg.endswith(
        f": more than {MAX_EXPANDED} characters of data once aliases are expanded "
        "(one per value plus the characters of every scalar)"
    )


def test_a_small_alias_tree_loads_and_is_shared() -> None:
    [doc] = yamlload.load(laughs(3), "f.yaml")
    assert json.dumps(doc["status"]["l3"]).count("lol") == 9**4
    assert doc["status"]["l3"][0] is doc["status"]["l2"]  # aliases are references
    assert data_size(doc) == expanded(3)


def test_the_limits_are_exact() -> None:
    assert yamlload.load("[" * MAX_DEPTH + "]" * MAX_DEPTH, "f.yaml")
    msg = refused("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert msg == (
        f"f.yaml: document 1, line 1, column {MAX_DEPTH + 1}: "
        f"YAML nested too deeply (more than {MAX_DEPTH} levels)"
    )
    assert "document 2, line 3, column 65: YAML nested too deeply" in refused(
        "x: 1\n---\n" + "[" * 100 + "]" * 100
    )
    # libyaml stops a deeper flow first, with its own limit (1000): an error all the same.
    assert "maximum nesting depth" in refused("[" * 10_000)
    block = "".join(" " * i + "- " for i in range(MAX_DEPTH + 1)) + "x"  # - - - ... x
    assert "nested too deeply" in refused(block)

    ok = "a: &a 1\nb: [" + ", ".join(["*a"] * MAX_ALIASES) + "]\n"
    assert len(yamlload.load(ok, "f.yaml")[0]["b"]) == MAX_ALIASES
    msg = refused("---\nx: 1\n---\n" + ok.replace("b: [", "b: [*a, "))
    assert msg.startswith("f.yaml: document 2, line 5, column ")
    assert msg.endswith(f": more than {MAX_ALIASES} aliases in one file")

    at_limit = "#" * (MAX_BYTES - 2) + "\na"
    assert yamlload.load(at_limit, "f.yaml") == ["a"]
    too_big = f"f.yaml: larger than {MAX_BYTES} bytes, the most a file may have"
    assert refused(at_limit + "b") == too_big
    assert refused("é" * (MAX_BYTES // 2 + 1)) == too_big  # bytes count, not characters


def test_one_big_scalar_repeated_is_expansion_too() -> None:
    text = "a: &a " + "x" * 500_000 + "\nb: [" + ", ".join(["*a"] * 9) + "]\n"
    assert refused(text).startswith("f.yaml: document 1, line 2, column ")


def test_merge_keys_work_and_count_as_expansion() -> None:
    [doc] = yamlload.load("a: &a {x: 1, y: 2}\nb: {<<: *a, x: 3}\n", "f.yaml")
    assert doc["b"] == {"x": 3, "y": 2}
    bomb = ["m0: &m0 {" + ", ".join(f"k{i}: {'v' * 50}" for i in range(50)) + "}"]
    bomb += [f"m{n}: &m{n} [" + ", ".join([f"*m{n - 1}"] * 9) + "]" for n in range(1, 8)]
    assert "once aliases are expanded" in refused("\n".join(bomb))


A_CYCLE = "f.yaml: document 1, line 1, column 8: alias *a refers to a node that contains it"
SYNTAX = "f.yaml: YAML syntax error at line "


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", A_CYCLE),
        ("x: 1\n---\na: &a {b: [1, {c: *a}]}\n", "f.yaml: document 2, line 3, column 19: alias"),
        ("a: *nope\n", SYNTAX + "1, column 4: found undefined alias 'nope'"),
        ("a: 1\nb: 2\na: 3\n", SYNTAX + '3, column 1: duplicate key "a"'),
        ("a: " + "1" * 5000, SYNTAX + "1, column 4: invalid !!int value"),
        ("a: !!int nope", SYNTAX + '1, column 4: invalid !!int value "nope"'),
        ("a: !!float x", 'invalid !!float value "x": could not convert string to float'),
        ("a: !!bool maybe", 'invalid !!bool value "maybe"'),
        ("a: !!timestamp 2024-13-01", '!!timestamp value "2024-13-01": month must be in 1..12'),
        ("a: !!timestamp nope", 'invalid !!timestamp value "nope"'),
        ("b: {<<: 5}", "expected a mapping or list of mappings for merging"),
        ("a: !!python/object:os.system x", "could not determine a constructor"),
        ("a: \ud800", "f.yaml: not Unicode text (surrogates not allowed at character 3)"),
        ("a: \x00", "unacceptable character #x0000"),
        ("? [a]\n: 1", "found unhashable key"),
    ],
)
def test_errors_say_where_and_why(text: str, message: str) -> None:
    assert message in refused(text)


def test_kubernetes_flavour() -> None:
    [doc] = yamlload.load("t: 2024-01-01T00:00:00Z\nd: 2024-01-01\nn: ~\nb: yes\n", "f.yaml")
    assert doc == {"t": "2024-01-01T00:00:00Z", "d": "2024-01-01", "n": None, "b": True}
    assert yamlload.load("---\n# nothing\n---\n", "f.yaml") == []


def test_read_text_reads_no_more_than_the_limit() -> None:
    class Endless(io.RawIOBase):
        def __init__(self) -> None:
            self.read_sizes: list[int] = []

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.read_sizes.append(size)
            return b"a" * (size if size >= 0 else 10**9)

    stream = Endless()
    with pytest.raises(YamlError, match="larger than 1048576 bytes"):
        yamlload.read_text(stream, "/dev/zero")  # type: ignore[arg-type]
    assert stream.read_sizes == [MAX_BYTES + 1]
    assert yamlload.read_text(io.BytesIO("a: é\n".encode()), "f") == "a: é\n"
    with pytest.raises(YamlError, match=r"f: not UTF-8 text \(invalid start byte at byte 3\)"):
        yamlload.read_text(io.BytesIO(b"a: \xff"), "f")


# -- properties ----------------------------------------------------------------------

# Line breaks other than \n are folded by YAML itself (a dump/load round trip changes them).
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\x85\u2028\u2029"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | texts,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
    max_leaves=30,
)


@given(st.lists(json_values, min_size=1, max_size=3))
@settings(max_examples=200, deadline=None)
def test_documents_dumped_as_yaml_load_back(docs: list[Any]) -> None:
    text = yaml.safe_dump_all(docs, allow_unicode=True)
    assert yamlload.load(text, "f.yaml") == [d for d in docs if d is not None]


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_text_loads_or_is_refused_with_the_source_named(text: str) -> None:
    try:
        docs = yamlload.load(text, "f.yaml")
    except YamlError as e:
        assert str(e).startswith("f.yaml: ")
    else:
        assert all(d is not None for d in docs)
        json.dumps(docs, default=str)  # finite, acyclic: the CLI can always send it


@given(
    levels=st.integers(1, 12),
    fanout=st.integers(1, 12),
    where=st.sampled_from(["status", "x-ignored"]),
)
@settings(max_examples=100, deadline=None)
def test_alias_trees_load_exactly_when_they_stay_under_the_limit(
    levels: int, fanout: int, where: str
) -> None:
    size, aliases = expanded(levels, fanout, where), levels * fanout
    try:
        [doc] = yamlload.load(laughs(levels, fanout, where), "f.yaml")
    except YamlError as e:
        if aliases > MAX_ALIASES:
            assert str(e).endswith("aliases in one file")
        else:
            assert size > MAX_EXPANDED, str(e)
            assert "once aliases are expanded" in str(e)
    else:
        assert size <= MAX_EXPANDED and aliases <= MAX_ALIASES
        assert data_size(doc) == size
