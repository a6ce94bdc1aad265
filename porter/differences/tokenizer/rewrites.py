"""Rewrites for the tokenizer: a branch of build_tokenizer for its type, and the tokenizer built when its type needs no vocab file."""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import (
    code,
    expression,
    mentions,
    statements,
)
from porter.edits.base import Rewrite, indent_continuations


class TokenizerBranch(Rewrite):
    """Give a new `--tokenizer-type` choice its branch in `build_tokenizer`.

    Why: a choice with no code behind it fails at run time with NotImplementedError (the
    hand port's tokenizer bug). A new `elif args.tokenizer_type == NAME:` branch goes before
    the final `else:`; the tokenizer class lives in its own generated module and is imported
    inside the branch, so the factory's module gains no import-time dependency. A
    `assert args.vocab_file is not None` ahead of the chain is limited to the other types,
    since a SentencePiece model is one file given by --tokenizer-model.
    """

    construct = "the `if args.tokenizer_type == ...: ... elif ...: ... else:` chain"

    func: str
    name: str
    body: str
    needs_vocab_file: bool = False

    def rewrite_body(self, body):
        test_of = lambda node: code(node.test)  # noqa: E731
        wanted = f"args.tokenizer_type == {self.name!r}"
        chain_at = next(
            (i for i, s in enumerate(body) if isinstance(s, cst.If) and "args.tokenizer_type ==" in test_of(s)),
            None,
        )
        if chain_at is None:
            self.missing("no `if args.tokenizer_type == ...:` chain in the function")
            return body
        # Walk the elif chain to its last branch.
        branches = []
        node = body[chain_at]
        while isinstance(node, cst.If):
            branches.append(node)
            node = node.orelse if isinstance(node.orelse, cst.If) else None
        if any(code(b.test).replace('"', "'") == wanted for b in branches):
            self.already_done()
            return body
        self.anchored()
        new_branch = statements(f"if {wanted}:\n" + "\n".join("    " + line for line in self.body.splitlines()))[0]

        def insert(node: cst.If) -> cst.If:
            if isinstance(node.orelse, cst.If):
                return node.with_changes(orelse=insert(node.orelse))
            return node.with_changes(orelse=new_branch.with_changes(orelse=node.orelse))

        out = list(body)
        out[chain_at] = insert(body[chain_at])
        if not self.needs_vocab_file:
            # `assert args.vocab_file is not None` (or with an exception: bigscience's
            # `... or args.tokenizer_type == "PretrainedFromHF"`), or porter's guard around it
            vocab_assert = m.SimpleStatementLine(body=[m.Assert()])
            for i, stmt in enumerate(out[:chain_at]):
                if m.matches(stmt, vocab_assert) and mentions(stmt, "args.vocab_file"):
                    guard = statements(f"if args.tokenizer_type != {self.name!r}:\n    pass")[0]
                    out[i] = guard.with_changes(
                        body=guard.body.with_changes(body=[indent_continuations(stmt.with_changes(leading_lines=[]))]),
                        leading_lines=stmt.leading_lines,
                    )
                elif isinstance(stmt, cst.If) and mentions(stmt, "args.vocab_file") and _guarded_types(stmt) is not None:
                    names = _guarded_types(stmt)
                    test = f"args.tokenizer_type not in ({', '.join(repr(n) for n in (*names, self.name))})"
                    out[i] = stmt.with_changes(test=expression(test))
        return out


def _guarded_types(stmt: cst.If) -> tuple[str, ...] | None:
    """The tokenizer types porter's guard exempts: `!= 'X'` -> ('X',), `not in ('X', 'Y')` -> both."""
    test = code(stmt.test)
    if test.startswith("args.tokenizer_type != "):
        return (expression(test.removeprefix("args.tokenizer_type != ")).evaluated_value,)
    if test.startswith("args.tokenizer_type not in ("):
        return tuple(e.value.evaluated_value for e in expression(test.removeprefix("args.tokenizer_type not in ")).elements)
    return None


class BuildTokenizerWhen(Rewrite):
    """Build the tokenizer at start-up when a tokenizer model file is given, too.

    Why: Megatron builds its tokenizer (and so `args.padded_vocab_size`) only
    `if args.vocab_file:`. A SentencePiece tokenizer has no vocab file but a model file
    (--tokenizer-model); without this the model is built with no vocabulary size. A tree
    that builds its tokenizer unconditionally needs nothing.
    """

    construct = "`if args.vocab_file: _build_tokenizer(args)`"

    func: str
    option_dest: str

    def rewrite_body(self, body):
        out = []
        for stmt in body:
            if isinstance(stmt, cst.If) and findall(stmt.body, m.Call(func=m.Name("_build_tokenizer"))):
                test = code(stmt.test)
                if f"args.{self.option_dest}" in test:
                    self.already_done()
                elif "args.vocab_file" in test:
                    self.anchored()
                    stmt = stmt.with_changes(test=expression(f"{test} or args.{self.option_dest}"))
            out.append(stmt)
        if not self._hits and not self._done:
            if any(findall(s, m.Call(func=m.Name("_build_tokenizer"))) for s in body):
                self.already_done()  # built unconditionally
            else:
                self.missing("no call of _build_tokenizer(args) in the function")
        return out
