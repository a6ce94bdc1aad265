"""Detector: how the tree spells each switch, and whether it implements it.

Each switch can be spelled by different options in different trees (four spellings of
"no bias", three of SwiGLU...). The spellings are data, each difference's own
(porter/differences/): for every switch, the spellings porter knows, each with the expression
that is true when the switch is on and the value that turns it on. porter's own spelling comes first; it is recognised only when the option
is registered exactly as porter registers it (a tree that porter already ported), so a
tree's option that happens to share its name (`--position-embedding-type` in Habana's and
BigScience's trees) is read as the tree's.

A tree's option is not yet a feature: "option exists" and "implementation exists" are two
questions (Habana 9da6581a has `--position-embedding-type rotary` but no rotary code). Each
tree spelling names identifiers whose use in a model file shows the tree implements the
feature; they are identifiers porter's own rewrites never write, so a tree porter completed
is still told apart from one that came complete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from porter.profile.arguments import Argument, ArgumentsProfile

NETWORK = "_add_network_size_args"
DATA = "_add_data_args"


@dataclass(frozen=True)
class Spelling:
    feature: str
    option: str
    dest: str
    on: object  # the value of `dest` that turns the feature on (for parser.set_defaults)
    test: str  # Python expression, true when the feature is on
    group: str = ""  # where porter adds the option when the tree lacks it
    add: tuple[tuple[str, str], ...] = ()  # porter's add_argument keywords: (name, source)
    origin: str = "porter"  # "porter": porter's own option; "tree": the tree's
    implemented_by: tuple[tuple[str, str], ...] = ()  # (file, identifier) showing the tree's implementation
    enum: str = ""  # the option's type= is this enum: `on` is a member name (argparse runs type= on string defaults)
    layout: str = ""  # how the implementation lays out its weights, where it matters to checkpoints
    weights: tuple[tuple[str, object], ...] = ()  # that layout as WeightLayout fields, e.g. (("gate_first", False),)
    imports: tuple[str, ...] = ()  # import statements the test needs (filled in at detection)
    implemented: bool = False  # filled in at detection, for tree spellings

    def with_(self, **changes) -> Spelling:
        return dataclasses.replace(self, **changes)

    @property
    def switch(self) -> str:
        """How a person turns the feature on: `--swiglu`, `--normalization rmsnorm`."""
        if isinstance(self.on, bool) or self.on is None:
            return self.option
        return f"{self.option} {self.on}"


def tree_spelling(feature, option, dest, on, test, implemented_by=(), **more) -> Spelling:
    """A tree's own spelling of a switch (porter's own are plain Spelling rows)."""
    return Spelling(feature, option, dest, on, test, origin="tree", implemented_by=implemented_by, **more)


# Tokenizer choices that read a SentencePiece model from --tokenizer-model, best first.
SENTENCEPIECE_CHOICES = ("GPTSentencePieceTokenizer", "SentencePieceTokenizer")
SENTENCEPIECE_CHOICE = "SentencePieceTokenizer"  # the one porter adds


def _registered_as_porter_does(argument: Argument, spelling: Spelling) -> bool:
    return all(argument.keywords.get(key) == value for key, value in spelling.add)


def detect_spellings(
    arguments: ArgumentsProfile,
    table: dict[str, tuple[Spelling, ...]],
    enum_members: Callable[[str], tuple[str, ...] | None] = lambda name: None,
    identifiers: Callable[[str], set[str]] = lambda path: set(),
) -> dict[str, Spelling | None]:
    """feature -> the spelling the tree has (origin 'tree' or 'porter'), or None.

    `enum_members(name)` gives the members of an enum the arguments module imports;
    `identifiers(path)` the names and attributes a model file uses (empty for porter's
    generated files).
    """
    found: dict[str, Spelling | None] = {}
    for feature, spellings in table.items():
        found[feature] = None
        for spelling in spellings:
            argument = arguments.by_option(spelling.option)
            if argument is None or argument.dest != spelling.dest:
                continue
            if spelling.origin == "porter":
                if _registered_as_porter_does(argument, spelling):
                    found[feature] = spelling
                    break
                continue
            imports: tuple[str, ...] = ()
            if spelling.enum:
                if spelling.enum not in (argument.type or ""):
                    continue
                if spelling.on not in (enum_members(spelling.enum) or ()):
                    continue
                if spelling.enum in arguments.imports:
                    imports = (arguments.imports[spelling.enum],)
            elif isinstance(spelling.on, str) and argument.choices is not None and spelling.on not in argument.choices:
                continue  # e.g. a --normalization without an rmsnorm choice
            implemented = any(name in identifiers(path) for path, name in spelling.implemented_by)
            found[feature] = spelling.with_(imports=imports, implemented=implemented)
            break
    return found


def porter_spelling(table: dict[str, tuple[Spelling, ...]], feature: str) -> Spelling:
    first = table[feature][0]
    assert first.origin == "porter", f"porter has no spelling of its own for {feature}"
    return first
