"""Bounded, safe YAML loading: what ``glia apply/delete -f`` reads, refused before it can expand.

Called by :func:`glia.service.manifest.load_yaml` (the CLI's files and stdin).
Pure: text in, Python values out, :class:`YamlError` for anything else.

YAML as Kubernetes reads it: the safe tags only, timestamps stay strings,
duplicate keys are errors, merge keys (``<<``) work. What a few bytes could
turn into a lot of memory or recursion is bounded while the node graph is
composed, before anything is constructed or expanded:

- the text: at most :data:`MAX_BYTES` (checked before parsing);
- nesting: at most :data:`MAX_DEPTH` levels of collections;
- aliases (``*a``): at most :data:`MAX_ALIASES` in a stream, never one to a node
  that contains it (a cycle);
- the data once every alias is expanded (one per value plus the characters of
  every scalar): at most :data:`MAX_EXPANDED`, so a "billion laughs" (nine
  aliases of nine aliases of...) is refused at the alias that crosses the line,
  even inside a field glia ignores (``status:``).

Every error names the source, the document (counted in the stream, from 1),
the line and column, and the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any

import yaml
from yaml._yaml import CParser  # libyaml's parser: events only, the composing stays ours
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, Event, NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

# Kubernetes' API server takes request bodies up to 3 MiB and etcd values up to
# 1.5 MiB; glia's declared resources are small (one Service is under 1 KiB and
# one apply stores at most 64), so 1 MiB is generous and parses in about 2 s.
MAX_BYTES = 1 << 20
# Kubernetes objects nest about ten levels deep; 64 leaves room for any ignored
# field while keeping recursive walks (and json.dumps) far from Python's limit.
MAX_DEPTH = 64
# Manifests use a few anchors for shared labels; thousands mean a generated bomb.
MAX_ALIASES = 1000
# The data after expanding aliases, counted as one per value plus the characters
# of each scalar. Without aliases 1 MiB of YAML stays under 2 MiB of it (a value
# takes at least a byte of text, a scalar's characters at least as many bytes),
# so only aliases can reach 4 MiB. The JSON the CLI sends stays within a small
# multiple of it, which the agent's own body limit bounds again.
MAX_EXPANDED = 4 << 20


class YamlError(ValueError):
    """Unloadable YAML; the message says where (source, document, line) and why."""


class _BoundedComposer(Composer):
    """PyYAML's composer, counting depth, aliases and the expanded data as it goes."""

    peek_event: Callable[[], Event | None]  # from the parser it is mixed with

    def __init__(self, source: str) -> None:
        super().__init__()
        self._source = source
        self._document = 0  # 1-based, counting every document of the stream
        self._depth = 0
        self._aliases = 0
        self._size = 0  # the data so far, each alias counted as what it expands to
        self._sizes: dict[str, int] = {}  # anchor -> the data of its node, expanded

    def compose_document(self) -> Node | None:
        self._document += 1
        self._sizes = {}
        node: Node | None = super().compose_document()
        return node

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()
        anchor = event.anchor if isinstance(event, NodeEvent) else None
        if isinstance(event, AliasEvent) and anchor is not None:
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                self._refuse(event, f"more than {MAX_ALIASES} aliases in one file")
            if anchor in self.anchors and anchor not in self._sizes:
                self._refuse(event, f"alias *{anchor} refers to a node that contains it")
            alias: Node | None = super().compose_node(parent, index)  # undefined: ComposerError
            self._count(event, self._sizes[anchor])
            return alias
        if self._depth >= MAX_DEPTH:
            self._refuse(event, f"YAML nested too deeply (more than {MAX_DEPTH} levels)")
        before = self._size
        self._depth += 1
        try:
            node: Node | None = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        scalar = node.value if isinstance(node, ScalarNode) else ""
        self._count(event, 1 + len(scalar))
        if anchor is not None:
            self._sizes[anchor] = self._size - before
        return node

    def _count(self, event: Event | None, size: int) -> None:
        self._size += size
        if self._size > MAX_EXPANDED:
            self._refuse(
                event,
                f"more than {MAX_EXPANDED} characters of data once aliases are expanded "
                "(one per value plus the characters of every scalar)",
            )

    def _refuse(self, event: Event | None, what: str) -> None:
        mark = event.start_mark if event is not None else None
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise YamlError(f"{self._source}: document {self._document}{at}: {what}")


class _Constructor(SafeConstructor):
    """Safe constructors whose failures are YAML errors with a position, never a crash."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
            # e.g. `!!int nope`, `!!timestamp 2024-13-01`, an integer of 5000 digits
            tag = node.tag.rsplit(":", 1)[-1]
            what = f"invalid !!{tag} value"
            if isinstance(node, ScalarNode):
                what += f" {_key(node.value)}"
            if isinstance(e, ValueError):  # its message says why; the others do not
                what += f": {_short(str(e))}"
            raise ConstructorError(None, None, what, node.start_mark) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A key given twice is an error; a merged key (``<<``) may be overridden, as in YAML."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeConstructor says so below
                continue
            if dup:
                mark = key_node.start_mark
                raise ConstructorError(None, None, f"duplicate key {_key(key)}", mark)
        return super().construct_mapping(node, deep=deep)


class _Resolver(Resolver):
    """Implicit tags as Kubernetes resolves them: no timestamps (they stay strings)."""


_Resolver.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}


class _Loader(_BoundedComposer, CParser, _Constructor, _Resolver):
    # _BoundedComposer first in the MRO: libyaml's own composer must never run.
    def __init__(self, text: str, source: str) -> None:
        CParser.__init__(self, text)
        _BoundedComposer.__init__(self, source)
        _Constructor.__init__(self)
        _Resolver.__init__(self)


def _key(key: Any) -> str:
    """A mapping key as YAML users read it: ``"a"``, ``3``, ``null``."""
    try:
        text = json.dumps(key)
    except (TypeError, ValueError):
        text = repr(key)
    return _short(text)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _too_big(source: str) -> YamlError:
    return YamlError(f"{source}: larger than {MAX_BYTES} bytes, the most a file may have")


def read_text(stream: IO[bytes], source: str) -> str:
    """At most :data:`MAX_BYTES` of UTF-8 from ``stream`` (a file or stdin), never more.

    Reads one byte past the limit to tell a file of exactly the limit from a
    larger one, so ``/dev/zero`` or a huge file costs 1 MiB, not all memory.
    """
    try:
        data = stream.read(MAX_BYTES + 1)
    except OSError as e:
        raise YamlError(f"{source}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise _too_big(source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def load(text: str, source: str) -> list[Any]:
    """The documents of a YAML stream (``---`` separated), empty ones dropped.

    Raises :class:`YamlError` naming ``source`` (and where in it) for text over
    the size limit, bad syntax, a value the safe tags cannot build, or any of
    the limits above; never anything else.
    """
    # Characters are at most bytes: the cheap length says "too big" first.
    if len(text) > MAX_BYTES:
        raise _too_big(source)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # a lone surrogate: no file holds one
        raise YamlError(f"{source}: not Unicode text ({e.reason} at character {e.start})") from None
    if size > MAX_BYTES:
        raise _too_big(source)
    loader = _Loader(text, source)
    try:
        docs = []
        while loader.check_node():
            doc = loader.construct_document(loader.get_node())
            if doc is not None:
                docs.append(doc)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(p for p in (e.context, e.problem) if p) or "invalid YAML"
        raise YamlError(f"{source}: YAML syntax error{at}: {what}") from None
    except yaml.YAMLError as e:
        raise YamlError(f"{source}: YAML syntax error: {e}") from None
    except RecursionError:  # not reached while MAX_DEPTH is far below Python's limit
        raise YamlError(f"{source}: YAML nested too deeply") from None
    finally:
        loader.dispose()
    return docs
