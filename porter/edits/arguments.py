"""Rewrites of megatron/arguments.py: new options, a new choice, checks, the ffn default."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import code, contains_code, dotted, statements, with_comment
from porter.edits.base import Rewrite
from porter.profile.arguments import FFN_DEFAULT, SETS_WIDTH


def _option_of(node: cst.CSTNode) -> str | None:
    """'--foo' for a `*.add_argument('--foo', ...)` call statement, else None."""
    for call in findall(node, m.Call(func=m.Attribute(attr=m.Name("add_argument")))):
        if call.args and isinstance(call.args[0].value, cst.SimpleString):
            return call.args[0].value.evaluated_value
    return None


class AddArguments(Rewrite):
    """Register new command-line options in an argument-group function.

    Why: the port's features are switched by arguments (as everywhere in Megatron), so
    GPT keeps working unchanged and LLaMA is a set of defaults. The options are added to the
    group they belong to (`_add_network_size_args` for model shape, `_add_data_args` for the
    tokenizer), before the group function's `return parser`, written with the group variable
    the function already uses. An option already registered in the function is skipped.
    """

    construct = "`group = parser.add_argument_group(...)` ... `return parser`"

    def __init__(self, func: str, arguments: list[str]) -> None:
        super().__init__()
        self.func = func
        self.arguments = arguments  # each: "{group}.add_argument('--x', ...)"

    def rewrite_body(self, body):
        group = None
        for stmt in body:
            for assign in findall(stmt, m.Assign(value=m.Call(func=m.Attribute(attr=m.Name("add_argument_group"))))):
                group = dotted(assign.targets[0].target)
        returns = [i for i, s in enumerate(body) if m.matches(s, m.SimpleStatementLine(body=[m.Return()]))]
        if group is None or not returns:
            self.missing("no `X = parser.add_argument_group(...)` or no `return` in the function")
            return body
        present = {_option_of(s) for s in body}
        new = []
        for source in self.arguments:
            head = f"{group}.add_argument("
            stmt = statements(source.replace("{group}.add_argument(", head).replace("{pad}", " " * len(head)))[0]
            if _option_of(stmt) in present:
                continue
            new.append(stmt)
        if not new:
            self.already_done()
            return body
        self.anchored()
        at = returns[-1]
        return body[:at] + new + body[at:]


class ExtendChoices(Rewrite):
    """Add a value to the `choices=[...]` of an existing option (e.g. a tokenizer type).

    Why: the tree validates `--tokenizer-type` against a fixed list; a new tokenizer class
    needs its name there as well as a branch in `build_tokenizer` (a choice with no code
    behind it was one of the bugs of the hand port).
    """

    construct = "`add_argument(OPTION, ..., choices=[...])`"

    def __init__(self, func: str, option: str, value: str) -> None:
        super().__init__()
        self.func = func
        self.option = option
        self.value = value

    def rewrite_body(self, body):
        target = m.Call(
            func=m.Attribute(attr=m.Name("add_argument")),
            args=[m.Arg(value=m.SimpleString()), m.ZeroOrMore()],
        )
        out = []
        for stmt in body:
            for call in findall(stmt, target):
                if call.args[0].value.evaluated_value != self.option:
                    continue
                choices = next((a for a in call.args if a.keyword and a.keyword.value == "choices"), None)
                if choices is None or not isinstance(choices.value, cst.List):
                    continue
                values = [e.value.evaluated_value for e in choices.value.elements if isinstance(e.value, cst.SimpleString)]
                if self.value in values:
                    self.already_done()
                    continue
                self.anchored()
                elements = list(choices.value.elements)
                if elements and not isinstance(elements[-1].comma, cst.Comma):
                    separator = cst.SimpleWhitespace(" ")
                    if len(elements) > 1 and isinstance(elements[-2].comma, cst.Comma):
                        separator = elements[-2].comma.whitespace_after
                    elements[-1] = elements[-1].with_changes(comma=cst.Comma(whitespace_after=separator))
                elements.append(cst.Element(value=cst.SimpleString(repr(self.value))))
                new_choices = choices.with_changes(value=choices.value.with_changes(elements=elements))
                stmt = stmt.deep_replace(choices, new_choices)
            out.append(stmt)
        if not self._hits and not self._done:
            self.missing(f"no add_argument({self.option!r}, ..., choices=[...]) in the function")
        return out


# `required_args = [...]`: the tree's check that the model-shape arguments are given
REQUIRED_ARGS = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name("required_args"))])])


class InsertChecks(Rewrite):
    """Insert argument checks right after the `for key in defaults:` loop.

    Why: Megatron validates arguments inline, after defaults are applied (`parse_args` in
    older trees, `validate_args` in newer ones), and before the required-argument and
    derived-value checks. The port's checks (e.g. swiglu refuses --openai-gelu; no bias turns
    off the bias-gelu fusion; rotary needs no --max-position-embeddings) belong exactly there.
    Trees that apply the defaults in initialize_megatron (microsoft since December 2023) have
    no such loop in arguments.py: the checks go right before the required-argument check and
    the derived values instead (`required_args = [...]`, the `if args.ffn_hidden_size is None:`
    default, whichever comes first), after the parallel sizes are settled: a check that fills in
    a required value (rotary's --max-position-embeddings) must run before it is required.
    Statements already present (a second apply) are not inserted again.
    """

    construct = "the `for key in defaults:` loop, or `if args.ffn_hidden_size is None:`"

    def __init__(self, func: str, checks: list[str]) -> None:
        super().__init__()
        self.func = func
        self.checks = checks

    def rewrite_body(self, body):
        loops = [
            i for i, s in enumerate(body)
            if m.matches(s, m.For(iter=m.Name("defaults")))
        ]
        # the derived widths (and the required-argument check before them), also inside a block of
        # their own (`if not args.use_dataset_only:`): the checks go before the statement holding them
        derived = [i for i, s in enumerate(body) if findall(s, FFN_DEFAULT)]
        required = [i for i, s in enumerate(body) if findall(s, REQUIRED_ARGS)]
        if not loops and not derived:
            self.missing("no `for key in defaults:` loop and no `if args.ffn_hidden_size is None:` in the function")
            return body
        new = [s for source in self.checks for s in statements(source)]
        new = [s for s in new if not contains_code(body, s)]
        if not new:
            self.already_done()
            return body
        self.anchored()
        new[0] = new[0].with_changes(leading_lines=[cst.EmptyLine(indent=False), *new[0].leading_lines])
        at = loops[0] + 1 if loops else min(derived[:1] + required[:1])
        return body[:at] + new + body[at:]


class FfnHiddenSizeRule(Rewrite):
    """Make the default MLP width follow LLaMA's rule when `--ffn-multiple-of` is given.

    Why: Megatron sets `ffn_hidden_size = 4 * hidden_size` when it is not given. LLaMA uses
    int(2/3 * 4h) rounded up to a multiple of 256 (11008 for h = 4096; the hand port's
    unrounded coefficient gave 10922); LLaMA-3 multiplies it by 1.3 first and rounds up to
    1024 (14336). The rule is applied where the 4h default is, so an explicit
    --ffn-hidden-size always wins.
    """

    construct = "`if args.ffn_hidden_size is None: args.ffn_hidden_size = 4 * args.hidden_size`"

    def __init__(self, func: str, dest: str, multiplier_dest: str) -> None:
        super().__init__()
        self.func = func
        self.dest = dest
        self.multiplier = multiplier_dest

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

    def __init__(self, func: str, test: str, dest: str) -> None:
        super().__init__()
        self.func = func
        self.test = test
        self.guarded = width_guarded(test, dest)

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


class OptionalRequiredArg(Rewrite):
    """Stop requiring an argument when a feature is on, in the tree's `required_args` check.

    Why: Habana's tree lists `max_position_embeddings` in `required_args` and, further down,
    asserts it is None with rotary positions (rotary has no position table), so rotary
    cannot pass both. Right after the list, the name is removed from it when the feature's
    test is true; every other check stays as the tree wrote it.
    """

    construct = "`required_args = [..., NAME]`"

    def __init__(self, func: str, name: str, test: str) -> None:
        super().__init__()
        self.func = func
        self.name = name
        self.test = test

    def rewrite_body(self, body):
        new = statements(f"if {self.test}:\n    required_args.remove({self.name!r})")[0]
        new = with_comment(new, f"{self.name} is not required here: the checks below forbid it then")
        target = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name("required_args"))])])

        def rewrite(block):
            if contains_code(block, new):
                self.already_done()
                return list(block)
            out = []
            for stmt in block:
                out.append(stmt)
                if m.matches(stmt, target) and self.name in code(stmt):
                    self.anchored()
                    out.append(new)
                elif isinstance(stmt, cst.If) and isinstance(stmt.body, cst.IndentedBlock):
                    inner = rewrite(list(stmt.body.body))
                    out[-1] = stmt.with_changes(body=stmt.body.with_changes(body=inner))
            return out

        out = rewrite(body)
        if not self._hits and not self._done:
            self.missing(f"no `required_args = [...]` naming {self.name!r} in the function")
        return out


def argument_statement(option: str, **kwargs: str) -> str:
    """`{group}.add_argument('--x', k=v, ...)` source for AddArguments, one keyword per line.

    Keyword values are Python source. Continuation lines are aligned after the opening
    parenthesis once `{group}` is replaced by the group variable's name.
    """
    lines = [repr(option)] + [f"{key}={value}" for key, value in kwargs.items()]
    return "{group}.add_argument(" + ",\n{pad}".join(lines) + ")"


