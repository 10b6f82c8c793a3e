"""The Python mirrors agree with the compiled BPF objects (their BTF).

Sizes and field offsets of every ctypes mirror, the reason and direction
enums, and the map definitions (type, size, key and value types) are read
from ``bpftool btf dump`` of each object, so a change on one side only fails
here instead of corrupting maps.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
from functools import cache
from typing import Any

import netns_util as nu
import pytest

from glia.datapath.drop import REASON_MAX, Direction, Reason, direction_c_name, reason_c_name
from glia.datapath.loader import OBJECT_FILES
from glia.datapath.mapspecs import ALL_MAPS
from glia.datapath.structs import MIRRORS

OBJECTS = list(OBJECT_FILES)
BTFType = dict[str, Any]


@cache
def btf(obj: str) -> dict[int, BTFType]:
    path = nu.bpf_objects() / obj
    out = subprocess.run(
        ["bpftool", "-j", "btf", "dump", "file", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {t["id"]: t for t in json.loads(out)["types"]}


def by_name(types: dict[int, BTFType], kind: str, name: str) -> BTFType:
    found = [t for t in types.values() if t["kind"] == kind and t.get("name") == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} in BTF"
    return found[0]


def resolve(types: dict[int, BTFType], type_id: int) -> BTFType:
    t = types[type_id]
    while t["kind"] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
        t = types[t["type_id"]]
    return t


def size_of(types: dict[int, BTFType], type_id: int) -> int:
    t = resolve(types, type_id)
    if t["kind"] == "ARRAY":
        return int(t["nr_elems"]) * size_of(types, t["type_id"])
    if t["kind"] == "PTR":
        return 8
    return int(t["size"])


def members(
    types: dict[int, BTFType], struct: BTFType, base: int = 0
) -> dict[str, tuple[int, int]]:
    """name -> (byte offset, size); anonymous unions/structs are flattened."""
    out: dict[str, tuple[int, int]] = {}
    for m in struct["members"]:
        assert m["bits_offset"] % 8 == 0 and not m.get("bitfield_size"), m
        offset = base + m["bits_offset"] // 8
        inner = resolve(types, m["type_id"])
        if m["name"] in ("", "(anon)") and inner["kind"] in ("STRUCT", "UNION"):
            out.update(members(types, inner, offset))
        else:
            out[m["name"]] = (offset, size_of(types, m["type_id"]))
    return out


def ctypes_members(cls: type[ctypes.Structure]) -> dict[str, tuple[int, int]]:
    out = {}
    for name, *_ in cls._fields_:
        if not name.startswith("_"):  # explicit padding of unnamed C bitfields
            desc = getattr(cls, name)
            out[name] = (desc.offset, desc.size)
    return out


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    nu.bpf_objects()


@pytest.mark.parametrize("cls", list(MIRRORS), ids=lambda c: c.__name__)
def test_struct_mirror_matches_btf(cls: type[ctypes.Structure]) -> None:
    # Every object that uses the struct (its BTF has it) agrees with the mirror;
    # at least one does (sock.bpf.o, say, never sees a packet or an event).
    users = 0
    for obj in OBJECTS:
        types = btf(obj)
        if not any(t["kind"] == "STRUCT" and t.get("name") == MIRRORS[cls] for t in types.values()):
            continue
        users += 1
        struct = by_name(types, "STRUCT", MIRRORS[cls])
        assert ctypes.sizeof(cls) == struct["size"], obj
        assert ctypes_members(cls) == members(types, struct), obj
    assert users, f"no object has struct {MIRRORS[cls]}"


def _enum_values(name: str) -> list[dict[str, int]]:
    """The enum as each object that has it in its BTF declares it (the tc
    programs do; sock.bpf.o only uses two of its constants)."""
    found = []
    for obj in OBJECTS:
        types = btf(obj)
        if any(t["kind"] == "ENUM" and t.get("name") == name for t in types.values()):
            found.append({v["name"]: v["val"] for v in by_name(types, "ENUM", name)["values"]})
    assert found, f"no object has enum {name}"
    return found


def test_reason_enum_matches_btf() -> None:
    expected = {reason_c_name(r): int(r) for r in Reason} | {"GLIA_REASON_MAX": REASON_MAX}
    for values in _enum_values("glia_reason"):
        assert values == expected


def test_direction_enum_matches_btf() -> None:
    expected = {direction_c_name(d): int(d) for d in Direction} | {"GLIA_DIR_MAX": len(Direction)}
    for values in _enum_values("glia_direction"):
        assert values == expected


def _map_def(types: dict[int, BTFType], name: str) -> dict[str, int | str]:
    """A BTF-defined map: __uint(x, N) is `int (*x)[N]`, __type(x, T) is `T *x`."""
    var = by_name(types, "VAR", name)
    out: dict[str, int | str] = {}
    for m in resolve(types, var["type_id"])["members"]:
        target = resolve(types, types[m["type_id"]]["type_id"])
        if m["name"] in ("key", "value"):
            out[m["name"]] = target.get("name") or target["kind"]
            out[f"{m['name']}_size"] = size_of(types, types[m["type_id"]]["type_id"])
        else:
            out[m["name"]] = int(target["nr_elems"])
    return out


@pytest.mark.parametrize("obj", OBJECTS)
@pytest.mark.parametrize("spec", ALL_MAPS, ids=lambda s: s.name)
def test_map_spec_matches_btf(obj: str, spec: Any) -> None:
    d = _map_def(btf(obj), spec.name)
    assert d["type"] == spec.map_type
    assert d.get("max_entries", 0) == spec.max_entries  # none for socket storage
    assert d["pinning"] == 1  # LIBBPF_PIN_BY_NAME: shared by every object, survives reloads
    assert d.get("map_flags", 0) == spec.flags
    assert d.get("key_size", 0) == spec.key_size
    assert d.get("value_size", 0) == spec.value_size
    if spec.value is not None:
        assert d["value"] == MIRRORS.get(spec.value, spec.value.__name__)


def test_every_object_defines_every_map() -> None:
    for obj in OBJECTS:
        names = {t["name"] for t in btf(obj).values() if t["kind"] == "VAR"}
        assert {spec.name for spec in ALL_MAPS} <= names, obj
