"""Rewrites of the argument checks for the MLP width rule: the width from the rule unless given, and a tree's own width rule kept out of the way."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import (
    code,
    dotted,
    statements,
    with_comment,
)
from porter.edits.base import Rewrite
from porter.profile.arguments import SETS_WIDTH


class FfnHiddenSizeRule(Rewrite):
    """Make the default MLP width follow LLaMA's rule when `--ffn-multiple-of` is given.

    Why: Megatron sets `ffn_hidden_size = 4 * hidden_size` when it is not given. LLaMA uses
    int(2/3 * 4h) rounded up to a multiple of 256 (11008 for h = 4096; the hand port's
    unrounded coefficient gave 10922); LLaMA-3 multiplies it by 1.3 first and rounds up to
    1024 (14336). The rule is applied where the 4h default is, so an explicit
    --ffn-hidden-size always wins.
    """

    construct = "`if args.ffn_hidden_size is None: args.ffn_hidden_size = 4 * args.hidden_size`"

    func: str
    dest: str
    multiplier_dest: str

    def __post_init__(self) -> None:
        self.multiplier = self.multiplier_dest

    def rewrite_body(self, body):
        test = m.Comparison(
            left=m.Attribute(value=m.Name("args"), attr=m.Name("ffn_hidden_size")),
            comparisons=[m.ComparisonTarget(operator=m.Is(), comparator=m.Name("None"))],
        )
        out = []
        for stmt in body:
            # The default may sit in a block of its own (`if not args.use_dataset_only:`).
            for node in findall(stmt, m.If(test=test)):
                if f"args.{self.dest}" in code(node):
                    self.already_done()
                    continue
                self.anchored()
                default = list(node.body.body)
                rule = statements(
                    f"""
                    if args.{self.dest} is not None:
                        # LLaMA: int(2/3 * 4h), times --{self.multiplier.replace('_', '-')} if given (LLaMA-3),
                        # rounded up to a multiple of --{self.dest.replace('_', '-')}
                        multiple = args.{self.dest}
                        width = 8 * args.hidden_size // 3
                        if args.{self.multiplier} is not None:
                            width = int(args.{self.multiplier} * width)
                        args.ffn_hidden_size = (width + multiple - 1) // multiple * multiple
                    """
                )[0]
                if len(default) == 1 and isinstance(default[0], cst.If) and not default[0].leading_lines:
                    rule = rule.with_changes(orelse=default[0])  # the tree's own choice goes on as elif
                else:
                    rule = rule.with_changes(orelse=cst.Else(body=cst.IndentedBlock(body=default)))
                new = node.with_changes(body=node.body.with_changes(body=[rule]))
                stmt = new if node is stmt else stmt.deep_replace(node, new)
            out.append(stmt)
        if not self._hits and not self._done:
            self.missing("no `if args.ffn_hidden_size is None:` statement in the function")
        return out


def width_guarded(test: str, dest: str) -> str:
    """`test`, skipped when the width rule's switch (dest) is on."""
    simple = dotted(cst.parse_expression(test)) is not None
    return f"{test if simple else f'({test})'} and args.{dest} is None"


def width_unguarded(test: str, dest: str) -> str:
    """The tree's own test of a guard width_guarded wrote (an earlier apply), else `test`."""
    suffix = f" and args.{dest} is None"
    if not test.endswith(suffix):
        return test
    test = test[: -len(suffix)]
    return test[1:-1] if test.startswith("(") and test.endswith(")") else test


class KeepRuleWidth(Rewrite):
    """Let a width the rule (or the user) chose stand against a tree's own override.

    Why: some trees set the MLP width a second time, unconditionally, under another switch
    (microsoft July 2023: `if args.swiglu: args.ffn_hidden_size = int((4 * h * 2 / 3) / 64) * 64`),
    which replaces LLaMA's width (10880 instead of 11008 at h = 4096) and even an explicit
    --ffn-hidden-size. The override keeps its meaning for the tree's own models; it is skipped
    when the rule's switch is on, so the entry point's width stands.
    """

    construct = "`if <test>: args.ffn_hidden_size = ...` after the `is None` default"

    func: str
    test: str
    dest: str

    def __post_init__(self) -> None:
        self.guarded = width_guarded(self.test, self.dest)

    def rewrite_body(self, body):
        out = []
        for stmt in body:
            for node in findall(stmt, m.If()):
                if not any(m.matches(s, SETS_WIDTH) for s in node.body.body):
                    continue
                test = code(node.test)
                if test == self.guarded:
                    self.already_done()
                    continue
                if test != self.test:
                    continue
                self.anchored()
                new = node.with_changes(test=cst.parse_expression(self.guarded))
                new = with_comment(new, "the MLP width rule (or a given --ffn-hidden-size) stands when its switch is on")
                stmt = new if node is stmt else stmt.deep_replace(node, new)
            out.append(stmt)
        if not self._hits and not self._done:
            self.missing(f"no `if {self.test}:` setting args.ffn_hidden_size in the function")
        return out
