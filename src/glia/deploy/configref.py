"""The configuration reference (docs/config.md), generated from the config schemas.

Called by ``glia config reference`` (:mod:`glia.cli.deploy`) and by the unit
test that keeps docs/config.md equal to :func:`markdown`. The schemas are the
config dataclasses themselves (:class:`glia.agent.config.AgentConfig`,
:class:`glia.operator.config.OperatorConfig`, the nested
:class:`glia.kvstore.config.EtcdConfig`, a ClusterMesh remote file); each
field's meaning is its attribute docstring (the string literal right under
it), read from the source with :mod:`ast`, so code and docs have one source.
Pure apart from reading the modules' source.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any

from glia.agent.config import AgentConfig
from glia.clustermesh import config as mesh_config
from glia.kvstore.config import EtcdConfig
from glia.operator.config import OperatorConfig

REQUIRED = "(required)"


@dataclass(frozen=True, slots=True)
class Key:
    """One configuration key as the reference shows it."""

    key: str  # dotted path from the file's top level, e.g. etcd.ca_file
    type: str  # YAML terms: string, integer, number, boolean, list of ..., mapping
    default: Any  # the value when the key is absent (JSON-able); REQUIRED if it must be given
    description: str  # one paragraph, from the field's docstring ("" if it has none)


@dataclass(frozen=True, slots=True)
class Section:
    """One config file: its title, what reads it, and its keys."""

    name: str
    title: str
    usage: str
    keys: tuple[Key, ...]


def field_docs(cls: type) -> dict[str, str]:
    """Each field's attribute docstring, whitespace folded to single spaces."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out: dict[str, str] = {}
    for stmt, nxt in itertools.pairwise(body):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            out[stmt.target.id] = " ".join(nxt.value.value.split())
    return out


def type_name(tp: Any) -> str:
    """A field's type in YAML terms."""
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if tp in simple:
        return simple[tp]
    if dataclasses.is_dataclass(tp):
        return "mapping"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    raise TypeError(f"no YAML name for type {tp!r}")


def _nested(tp: Any) -> type | None:
    """The dataclass a field holds (also as ``X | None``), else None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return REQUIRED
    if dataclasses.is_dataclass(value):
        return "(see below)"
    return value


def keys_of(cls: type, prefix: str = "", only: tuple[str, ...] = ()) -> list[Key]:
    """The keys of a config dataclass, nested dataclasses flattened with dotted names."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[Key] = []
    for f in dataclasses.fields(cls):
        if only and f.name not in only:
            continue
        tp = hints[f.name]
        name = prefix + f.name
        out.append(Key(name, type_name(tp), _default(f), docs.get(f.name, "")))
        inner = _nested(tp)
        if inner is not None:
            out.extend(keys_of(inner, name + "."))
    return out


def _mesh_keys() -> list[Key]:
    # A remote cluster file is flat: the etcd client keys (all required, no
    # dial_timeout) and two of RemoteClusterConfig's own.
    etcd = [dataclasses.replace(k, default=REQUIRED) for k in keys_of(EtcdConfig)]
    etcd_keys = [k for k in etcd if k.key in mesh_config.REQUIRED]
    etcd_keys = [dataclasses.replace(k, type=k.type.replace(" or null", "")) for k in etcd_keys]
    own = keys_of(mesh_config.RemoteClusterConfig, only=mesh_config.OPTIONAL)
    return etcd_keys + own


def sections() -> list[Section]:
    """Every config file glia reads, in the order the reference shows them."""
    return [
        Section(
            "agent",
            "Agent",
            "`glia agent --config /etc/glia/agent.yaml`: one file per node (YAML or JSON).",
            tuple(keys_of(AgentConfig)),
        ),
        Section(
            "operator",
            "Operator",
            "`glia operator --config /etc/glia/operator.yaml`: one file per cluster.",
            tuple(keys_of(OperatorConfig)),
        ),
        Section(
            "clustermesh",
            "ClusterMesh remote cluster",
            "`<clustermesh_dir>/<cluster>.yaml`: one file per remote cluster "
            "(docs/clustermesh.md); relative paths are taken from the directory.",
            tuple(_mesh_keys()),
        ),
    ]


def undocumented() -> list[str]:
    """``section: key`` of every key without a description (a test keeps this empty)."""
    return [f"{s.name}: {k.key}" for s in sections() for k in s.keys if not k.description]


def as_json() -> str:
    """The reference as JSON: {section: {title, usage, keys: [{key, type, default, ...}]}}."""
    data = {
        s.name: {
            "title": s.title,
            "usage": s.usage,
            "keys": [dataclasses.asdict(k) for k in s.keys],
        }
        for s in sections()
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default_cell(value: Any) -> str:
    if value == REQUIRED or value == "(see below)":
        return value  # type: ignore[no-any-return]
    return f"`{json.dumps(value)}`"


def markdown() -> str:
    """docs/config.md: one table per config file."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- DO NOT EDIT: generated by `glia config reference` from the config",
        "schemas (src/glia/deploy/configref.py); a unit test keeps it current. -->",
        "",
        "Every key glia's daemons read, its type, its default, and what it means.",
        "Nested keys are written with dots: `etcd.ca_file` is `ca_file` inside `etcd`.",
        "Unknown keys are errors; so are values of the wrong type (the error names the key).",
    ]
    for s in sections():
        lines += ["", f"## {s.title}", "", s.usage, ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for k in s.keys:
            row = [f"`{k.key}`", k.type, _default_cell(k.default), _cell(k.description)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
