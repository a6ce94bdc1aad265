"""Structural matchers for libcst trees, written as libcst.matchers writes them.

`m.Call(func=m.Attribute(attr=m.Name("add_argument")))`, `m.Name() | m.Attribute()`,
`args=[m.Arg(value=m.SimpleString()), m.ZeroOrMore()]` and `m.matches(node, matcher)` mean
here what they mean in libcst.matchers (the subset porter uses: node matchers with fields
given by keyword, or by position in the node's field order; strings and other values compared
for equality; sequences matched element by element, where `ZeroOrMore()` takes any run of
elements; `OneOf` by `|`; `DoNotCare()`). libcst.matchers builds some 400 dataclasses when
it is imported, about an eighth of a second, a tenth of `porter diff`; here a matcher class is
made the first time its node type is asked for. tests/test_speedups.py checks that porter.cst.find
finds with these what libcst.matchers finds.
"""

from __future__ import annotations

import dataclasses

import libcst as cst


class _DoNotCare:
    def __repr__(self) -> str:
        return "DoNotCare()"


_DO_NOT_CARE = _DoNotCare()


def DoNotCare() -> _DoNotCare:  # noqa: N802  (libcst.matchers' name)
    """A field value that matches anything (the default of every field)."""
    return _DO_NOT_CARE


class ZeroOrMore:
    """In a sequence: any number of elements, whatever they are."""

    def __repr__(self) -> str:
        return "ZeroOrMore()"


class OneOf:
    """Matches what any of its options matches (`a | b`)."""

    def __init__(self, *options) -> None:
        self.options = tuple(options)

    def __or__(self, other) -> OneOf:
        return OneOf(*self.options, other)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.options))


class Matcher:
    """A node of one type (`node_type`) whose given fields match."""

    node_type: type = cst.CSTNode

    def __init__(self, *values, **fields) -> None:
        names = [f.name for f in dataclasses.fields(self.node_type)]
        if len(values) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional values")
        fields.update(zip(names, values, strict=False))
        unknown = set(fields) - set(names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        self.fields = {name: value for name, value in fields.items() if value is not _DO_NOT_CARE}

    def __or__(self, other) -> OneOf:
        return OneOf(self, other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.fields.items())})"


def __getattr__(name: str) -> type[Matcher]:
    """`m.Call`: the matcher class of cst.Call, made once."""
    node_type = getattr(cst, name, None)
    if not (isinstance(node_type, type) and issubclass(node_type, cst.CSTNode)):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    made = type(name, (Matcher,), {"node_type": node_type})
    globals()[name] = made
    return made


def matches(node, matcher) -> bool:
    """Does `node` match `matcher`?"""
    if isinstance(matcher, OneOf):
        return any(matches(node, option) for option in matcher.options)
    if matcher is _DO_NOT_CARE:
        return True
    if not isinstance(matcher, Matcher):
        raise TypeError(f"not a matcher: {matcher!r}")
    if type(node) is not matcher.node_type:
        return False
    return all(_value_matches(getattr(node, name), expected) for name, expected in matcher.fields.items())


def _value_matches(value, expected) -> bool:
    if expected is _DO_NOT_CARE:
        return True
    if isinstance(expected, (Matcher, OneOf)):
        return matches(value, expected)
    if isinstance(expected, (list, tuple)):
        return isinstance(value, (list, tuple)) and _sequence_matches(list(value), list(expected))
    return value == expected


def _sequence_matches(values: list, patterns: list) -> bool:
    if not patterns:
        return not values
    first, rest = patterns[0], patterns[1:]
    if isinstance(first, ZeroOrMore):
        return any(_sequence_matches(values[i:], rest) for i in range(len(values) + 1))
    return bool(values) and _value_matches(values[0], first) and _sequence_matches(values[1:], rest)
