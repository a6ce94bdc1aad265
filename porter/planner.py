"""What a difference plans with: edits with reasons, switches, checks, defaults, template values.

`Planner` is handed to each difference in turn (porter/differences/); a difference asks the
profile its questions and records what it decides here. Nothing here decides for a
difference and nothing touches files. `Plan` is the result: the ordered edits, what the
port reuses, the defaults the entry point sets, and the plain values templates receive.

Every edit carries the spec key (the difference) it serves and a reason a reviewer can read
("adds --no-bias: no bias switch found"; "reuses --swiglu"). A rewrite edit names a small
libcst transformer and its plain parameters; a create edit names a template and its context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from porter.edits import arguments as A
from porter.edits.imports import InsertImport
from porter.errors import PorterError
from porter.profile import ARGUMENTS, TreeProfile
from porter.profile.features import Spelling

if TYPE_CHECKING:
    from porter.spec import Spec


@dataclass(frozen=True)
class Edit:
    file: str
    feature: str  # the spec key this edit serves, e.g. "rmsnorm"
    reason: str
    rewrite: Callable[[], Any] | None = None  # a factory of a fresh Rewrite
    template: str | None = None  # for created files
    context: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def kind(self) -> str:
        return "create" if self.template else "rewrite"

    @property
    def name(self) -> str:
        if self.template:
            return f"template {self.template}"
        func = self.rewrite.func if isinstance(self.rewrite, partial) else self.rewrite
        return func.__name__


@dataclass
class Plan:
    spec: Spec
    profile: TreeProfile
    edits: list[Edit]
    reused: list[str]  # what the tree already has and the port reuses, with reasons
    style: str = "explicit"  # "explicit": porter adds the features; "flags": the tree's switches
    defaults: dict = field(default_factory=dict)  # dest -> value pretrain_<name>.py sets
    values: dict = field(default_factory=dict)  # what templates receive: plain values only
    switches: dict = field(default_factory=dict)  # switch -> the tree's or porter's Spelling
    default_fields: dict = field(default_factory=dict)  # dest -> the spec field whose number it holds

    def files(self) -> list[str]:
        seen: dict[str, None] = {}
        for edit in self.edits:
            seen.setdefault(edit.file, None)
        return list(seen)


def rw(rewrite, /, **params) -> Callable[[], Any]:
    """A rewrite with its parameters, built fresh for each file it runs on."""
    return partial(rewrite, **params)


def unsupported(message: str, file: str, construct: str, found: str) -> PorterError:
    return PorterError(
        message, file=file, construct=construct, found=found,
        fix="this tree differs from the variants porter knows; run `porter inspect` and port "
        "this point by hand, or report the variant",
    )


class Planner:
    """The plan being built: each difference adds its edits, reuses, checks and values."""

    def __init__(self, spec: Spec, profile: TreeProfile) -> None:
        self.spec = spec
        self.profile = profile
        self.model = profile.model
        self.edits: list[Edit] = []
        self.reused: list[str] = []
        self.defaults: dict[str, object] = {}  # dest -> value for pretrain_<name>.py
        self.tests: dict[str, str] = {}  # switch -> expression true when on
        self.switches: dict[str, Spelling] = {}  # switch -> the spelling the port uses
        self.checks: list[str] = []  # argument checks, inserted where the tree checks its arguments
        self.values: dict[str, Any] = {}  # template values, by difference
        self.default_fields: dict[str, str] = {}  # dest -> the spec field whose number it holds
        self.model_doc: list[str] = []  # what differs from GPT, a line per difference (the model's docstring)
        # rewrites of the tree's statements that the generated entry point copies (its pipe's rotary
        # table), each text -> text, so that the copy says what the tree's own says after the edits
        self.entry_code: list[Callable[[str], str]] = []
        # import lines those rewritten statements may need (the copy imports each whose names it
        # uses, after the tree's own imports, whether or not the tree's pretrain_gpt.py has it yet)
        self.entry_imports: list[str] = []
        # the generated model's final norm when a difference replaces LayerNorm: (class expression, a
        # function from the tree's LayerNorm imports to the imports the expression needs)
        self.final_norm: tuple[str, Callable[[list[str]], list[str]]] | None = None

    # -- recording -----------------------------------------------------------------------------
    def edit(self, file: str, feature: str, reason: str, rewrite=None, **context) -> None:
        self.edits.append(Edit(file=file, feature=feature, reason=reason, rewrite=rewrite, context=context))

    def create(self, file: str, feature: str, reason: str, template: str, **context) -> None:
        self.edits.append(Edit(file=file, feature=feature, reason=reason, template=template, context=context))

    def describe_model(self, line: str) -> None:
        """A line of the generated model's "What differs from GPT" (in plan order)."""
        self.model_doc.append(line)

    def reuse(self, feature: str, what: str) -> None:
        self.reused.append(f"{feature}: {what}")

    def import_into(self, file: str, feature: str, source: str, reason: str = "", after: str | None = None) -> None:
        self.edit(file, feature, reason or f"imports what {feature} uses", rw(InsertImport, source=source, after=after))

    def default(self, dest: str, value: object, field: str | None = None) -> None:
        """A default the entry point sets; `field`: the spec field whose number it is, so that a
        checkpoint's args give the number back (porter.convert.run)."""
        self.defaults[dest] = value
        if field is not None:
            self.default_fields[dest] = field

    def facts(self, difference: str):
        """What the difference's detector found in the tree (porter.profile.TreeProfile.facts), or None."""
        return self.profile.facts.get(difference)

    def has_dest(self, dest: str) -> bool:
        return dest in self.profile.arguments.dests

    @property
    def checks_function(self) -> str:
        func = self.profile.arguments.checks_function
        if func is None:
            raise PorterError(
                "cannot find where the tree checks its arguments",
                file=ARGUMENTS,
                construct="a function with a `for key in defaults:` loop (parse_args or validate_args), or one "
                "deriving `if args.ffn_hidden_size is None:`",
                found="functions with add_argument: " + ", ".join(self.profile.arguments.group_functions),
                fix="this tree's arguments.py is laid out differently; report the variant",
            )
        return func

    # -- switches ----------------------------------------------------------------------------
    def switch(self, name: str, on: object | None = None, field: str | None = None,
               spelling: Spelling | None = None, existing: bool = False) -> Spelling:
        """Reuse the tree's option for a switch, or add porter's. Returns the spelling.
        `on`: the value that turns it on (default: the spelling's); `field`: the spec field that
        value is the number of; `spelling`: the one of porter's spellings to add when the tree has
        none (default: porter's first), for a difference that fits its option to the tree's idiom;
        `existing`: that spelling is an option of the tree's, which the difference extends with
        a value of porter's (a choice), so nothing is added here."""
        found = self.profile.spellings.get(name)
        if found is not None:
            if found.origin == "tree":
                done = ""
                if found.implemented:
                    done = " and its implementation" + (f" ({found.layout})" if found.layout else "")
                elif found.implemented_by:
                    done = " (porter adds the implementation)"
                self.reuse(name, f"reuses the tree's {found.option}{done}")
            else:
                self.reuse(name, f"reuses {found.option}, added by porter earlier")
            spelling = found
        elif existing:
            self.reuse(name, f"reuses the tree's {spelling.option}, with porter's choice {spelling.on!r}")
        else:
            spelling = spelling or self.profile.porter_spelling(name)
            self._check_free(spelling)
            self.edit(
                ARGUMENTS,
                name,
                f"adds {spelling.option}: no {name} switch found",
                rw(A.AddArguments, func=spelling.group, arguments=[A.argument_statement(spelling.option, **dict(spelling.add))]),
            )
        self.tests[name] = spelling.test
        self.switches[name] = spelling
        value = spelling.on if on is None else on
        if value is not None:
            self.default(spelling.dest, self._typed(spelling, value), field)
        return spelling

    def _typed(self, spelling: Spelling, value: object) -> object:
        """The default as the tree's option types it: an int option gets an int."""
        argument = self.profile.arguments.by_dest(spelling.dest)
        if argument is not None and argument.type == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    def implemented(self, name: str) -> Spelling | None:
        """The tree's spelling of a switch its own code implements, else None."""
        found = self.profile.spellings.get(name)
        return found if found is not None and found.origin == "tree" and found.implemented else None

    def _check_free(self, spelling: Spelling) -> None:
        args = self.profile.arguments
        if spelling.option in args.options or spelling.dest in args.dests:
            taken = args.by_option(spelling.option) or args.by_dest(spelling.dest)
            raise PorterError(
                f"cannot add {spelling.option}: its option or dest {spelling.dest!r} is already used",
                file=ARGUMENTS,
                construct=f"a free option and dest for {spelling.option}",
                found=f"{', '.join(taken.options) if taken else spelling.dest} in {taken.function if taken else 'the parser'}",
                fix="this tree has an option porter does not recognise for this feature; report the variant",
            )
        if spelling.group not in args.group_functions:
            raise PorterError(
                f"cannot add {spelling.option}: the argument group function {spelling.group} is missing",
                file=ARGUMENTS,
                construct=f"def {spelling.group}(parser)",
                found="group functions: " + ", ".join(args.group_functions),
                fix="this tree's arguments.py is laid out differently; report the variant",
            )

    def names_for(self, file: str, name: str) -> None:
        """Import what a switch's test names (e.g. an enum) into a file that uses it."""
        found = self.profile.spellings.get(name)
        for source in found.imports if found is not None else ():
            self.edit(file, name, f"imports what `{self.tests[name]}` names",
                      rw(InsertImport, source=source, after=None))

    def plan(self, style: str) -> Plan:
        return Plan(spec=self.spec, profile=self.profile, edits=self.edits, reused=self.reused, style=style,
                    defaults=dict(self.defaults), values=dict(self.values), switches=dict(self.switches),
                    default_fields=dict(self.default_fields))
