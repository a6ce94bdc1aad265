"""Structural search in libcst trees: `findall(node, matcher)` with libcst's own matchers.

It answers what `libcst.matchers.findall` answers, many times faster: libcst's traversal
rebuilds every node it passes (a visitor goes through the transformer machinery), while
this walk reads each node's fields once, indexes the subtree by node type, and tries the
matcher only on nodes of the matcher's own type. porter searches every statement of every
function it rewrites, several times over, so this was most of its time after parsing.

Matches come in pre-order of the node's fields, which is not always the source order (in
`a if b else c` the test `b` comes first); callers that need every match take them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import libcst as cst
import libcst.matchers as m

_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(node_type: type) -> tuple[str, ...]:
    names = _FIELDS.get(node_type)
    if names is None:
        names = _FIELDS[node_type] = tuple(f.name for f in dataclasses.fields(node_type))
    return names


def walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The node and all its descendants, parents before children."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        children: list[cst.CSTNode] = []
        for name in _fields(type(current)):
            value = getattr(current, name)
            if isinstance(value, cst.CSTNode):
                children.append(value)
            elif isinstance(value, (list, tuple)):
                children.extend(v for v in value if isinstance(v, cst.CSTNode))
        stack.extend(reversed(children))


def _node_types(matcher) -> tuple[type, ...] | None:
    """The libcst node classes a matcher can match (m.Assign() -> cst.Assign), or None: any."""
    if isinstance(matcher, m.OneOf):
        types = [_node_types(option) for option in matcher.options]
        return None if any(t is None for t in types) else tuple(c for t in types for c in t)
    node_type = getattr(cst, type(matcher).__name__, None)
    if isinstance(node_type, type) and issubclass(node_type, cst.CSTNode):
        return (node_type,)
    return None


# node id -> (node, {node type: [(pre-order position, node), ...]}) for the subtrees searched
# so far. A rewrite hands back the statements it did not change as the same objects, so the
# next rewrite's searches of them are lookups. The node is kept with its index: its id cannot
# be reused while the entry lives. Bounded by the nodes indexed.
_INDEX: dict[int, tuple[cst.CSTNode, dict[type, list[tuple[int, cst.CSTNode]]]]] = {}
_INDEXED = [0]
_MAX_INDEXED = 2_000_000


def _index(node: cst.CSTNode) -> dict[type, list[tuple[int, cst.CSTNode]]]:
    entry = _INDEX.get(id(node))
    if entry is not None and entry[0] is node:
        return entry[1]
    by_type: dict[type, list[tuple[int, cst.CSTNode]]] = {}
    count = 0
    for count, found in enumerate(walk(node), start=1):
        by_type.setdefault(type(found), []).append((count, found))
    if _INDEXED[0] + count > _MAX_INDEXED:
        _INDEX.clear()
        _INDEXED[0] = 0
    _INDEX[id(node)] = (node, by_type)
    _INDEXED[0] += count
    return by_type


def findall(node: cst.CSTNode | cst.MaybeSentinel | cst.RemovalSentinel, matcher) -> list[cst.CSTNode]:
    """Every node inside `node` (itself included) that `matcher` matches."""
    if not isinstance(node, cst.CSTNode):
        return []
    types = _node_types(matcher)
    by_type = _index(node)
    if types is None:
        candidates = [entry for entries in by_type.values() for entry in entries]
    else:
        candidates = [entry for t, entries in by_type.items() if issubclass(t, types) for entry in entries]
    if len(by_type) > 1:
        candidates.sort(key=lambda entry: entry[0])
    return [found for _, found in candidates if m.matches(found, matcher)]
