"""Rewrites of megatron/arguments.py: new options, a new choice, checks, the ffn default."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import code, contains_code, dotted, statements, with_comment
from porter.edits.base import Rewrite
from porter.profile.arguments import FFN_DEFAULT


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

    func: str
    arguments: list[str]

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

    func: str
    option: str
    value: str

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

    func: str
    checks: list[str]

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


class OptionalRequiredArg(Rewrite):
    """Stop requiring an argument when a feature is on, in the tree's `required_args` check.

    Why: Habana's tree lists `max_position_embeddings` in `required_args` and, further down,
    asserts it is None with rotary positions (rotary has no position table), so rotary
    cannot pass both. Right after the list, the name is removed from it when the feature's
    test is true; every other check stays as the tree wrote it.
    """

    construct = "`required_args = [..., NAME]`"

    func: str
    name: str
    test: str

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
