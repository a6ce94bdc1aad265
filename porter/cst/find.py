"""Structural search in libcst trees: `findall(node, matcher)` with porter.cst.match's matchers.

It answers what `libcst.matchers.findall` answers, many times faster: libcst's traversal
rebuilds every node it passes (a visitor goes through the transformer machinery), while
this walk reads each node's fields once, indexes the tree by node type (an index of a tree
answers for every subtree in it), and tries the matcher only on nodes of the matcher's own
type. porter searches whole modules and then every statement of every function it rewrites,
several times over, so this was most of its time after parsing.

Matches come in pre-order of the node's fields, which is not always the source order (in
`a if b else c` the test `b` comes first); callers that need every match take them all.
"""

from __future__ import annotations

import bisect
import dataclasses
import typing
from collections.abc import Iterator

import libcst as cst

from porter.cst import match as m

_FIELDS: dict[type, tuple[str, ...]] = {}


def _may_hold_nodes(annotation) -> bool:
    """Can a field typed so hold a node? (str, bool and Literal fields cannot; unknown: yes)"""
    if isinstance(annotation, type):
        return issubclass(annotation, cst.CSTNode)
    if typing.get_origin(annotation) is typing.Literal:
        return False
    args = typing.get_args(annotation)
    return any(_may_hold_nodes(a) for a in args) if args else True


def _fields(node_type: type) -> tuple[str, ...]:
    """The fields of a node type that can hold child nodes, in declaration order."""
    names = _FIELDS.get(node_type)
    if names is None:
        names = _FIELDS[node_type] = tuple(f.name for f in dataclasses.fields(node_type) if _may_hold_nodes(f.type))
    return names


# type -> is it a libcst node? (isinstance against CSTNode, an abstract class, is slow; the
# walk asks for every field of every node)
_IS_NODE: dict[type, bool] = {}


def _is_node(value) -> bool:
    kind = type(value)
    found = _IS_NODE.get(kind)
    if found is None:
        found = _IS_NODE[kind] = issubclass(kind, cst.CSTNode)
    return found


def _children(node: cst.CSTNode) -> list[cst.CSTNode]:
    children: list[cst.CSTNode] = []
    for name in _fields(type(node)):
        value = getattr(node, name)
        if _is_node(value):
            children.append(value)
        elif isinstance(value, (list, tuple)):
            children.extend([v for v in value if _is_node(v)])
    return children


def walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The node and all its descendants, parents before children."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(_children(current)))


def _node_types(matcher) -> tuple[type, ...] | None:
    """The libcst node classes a matcher can match (m.Assign() -> cst.Assign), or None: any."""
    if isinstance(matcher, m.OneOf):
        types = [_node_types(option) for option in matcher.options]
        return None if any(t is None for t in types) else tuple(c for t in types for c in t)
    if isinstance(matcher, m.Matcher):
        return (matcher.node_type,)
    return None


class _Index:
    """One searched tree in pre-order: every node, where its subtree ends, positions by type.

    A node's descendants follow it in pre-order, so one index answers searches of the tree
    and of every subtree in it (the positions in [start, end)).
    """

    def __init__(self, root: cst.CSTNode) -> None:
        nodes: list[cst.CSTNode] = []
        ends: list[int] = []
        by_type: dict[type, list[int]] = {}
        # Nodes to number, and (as ints) the positions of nodes whose subtree ends there.
        stack: list = [root]
        while stack:
            node = stack.pop()
            if type(node) is int:  # every descendant of the node at this position is numbered
                ends[node] = len(nodes)
                continue
            position = len(nodes)
            nodes.append(node)
            ends.append(0)
            found = by_type.get(type(node))
            if found is None:
                by_type[type(node)] = [position]
            else:
                found.append(position)
            stack.append(position)
            children = _children(node)
            children.reverse()
            stack += children
        self.nodes, self.ends, self.by_type = nodes, ends, by_type

    def find(self, start: int, types: tuple[type, ...] | None) -> list[cst.CSTNode]:
        end = self.ends[start]
        if types is None:
            return self.nodes[start:end]
        positions: list[int] = []
        for node_type, found in self.by_type.items():
            if issubclass(node_type, types):
                positions.extend(found[bisect.bisect_left(found, start) : bisect.bisect_left(found, end)])
        positions.sort()
        return [self.nodes[p] for p in positions]


# node id -> (its index, its position in it), for every node of every tree searched so far.
# A rewrite hands back what it did not change as the same objects, so later searches of them
# (by the profile, then by each rewrite) are lookups. An index holds its nodes: their ids
# cannot be reused while it is kept. Bounded by the nodes indexed.
_WHERE: dict[int, tuple[_Index, int]] = {}
_MAX_INDEXED = 2_000_000


def _located(node: cst.CSTNode) -> tuple[_Index, int]:
    found = _WHERE.get(id(node))
    if found is not None and found[0].nodes[found[1]] is node:
        return found
    index = _Index(node)
    if len(_WHERE) + len(index.nodes) > _MAX_INDEXED:
        _WHERE.clear()
    for position, inside in enumerate(index.nodes):
        _WHERE[id(inside)] = (index, position)
    return index, 0


def _by_type_only(matcher) -> bool:
    """Does the matcher ask nothing but the node's type (m.Name(), m.Assign() | m.Call())?"""
    if isinstance(matcher, m.OneOf):
        return all(_by_type_only(option) for option in matcher.options)
    return isinstance(matcher, m.Matcher) and not matcher.fields


def findall(node: cst.CSTNode | cst.MaybeSentinel | cst.RemovalSentinel, matcher) -> list[cst.CSTNode]:
    """Every node inside `node` (itself included) that `matcher` matches."""
    if not isinstance(node, cst.CSTNode):
        return []
    index, start = _located(node)
    types = _node_types(matcher)
    found = index.find(start, types)
    if types is not None and _by_type_only(matcher):
        return found
    return [candidate for candidate in found if m.matches(candidate, matcher)]


def class_named(module: cst.Module | None, name: str) -> cst.ClassDef | None:
    """The module's top-level class `name` (the first one), or None."""
    if module is None:
        return None
    return next((s for s in module.body if isinstance(s, cst.ClassDef) and s.name.value == name), None)


def function_named(scope: cst.Module | cst.ClassDef | None, name: str) -> cst.FunctionDef | None:
    """The function `name` defined at the top of a module or class (the first one), or None."""
    if scope is None:
        return None
    body = scope.body.body if isinstance(scope, cst.ClassDef) else scope.body
    return next((s for s in body if isinstance(s, cst.FunctionDef) and s.name.value == name), None)
