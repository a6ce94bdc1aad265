"""The tree profile: what the target tree has, read once before planning.

Each detector answers one question from the parsed files ("how is no-bias spelled
here?", "where do argument checks live?", "do the linear layers return (output, bias)?").
The plan decides from the profile alone and never reads the tree again; `porter inspect`
prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.profile.arguments import ArgumentsProfile, read_arguments
from porter.profile.attention import AttentionSite, find_core_attention
from porter.profile.entry import EntryProfile, builds_tokenizer_when, read_entry, tokenizer_branches
from porter.profile.enums import ENUM_FILES, EnumFact, enum_classes, find_uses
from porter.profile.features import SENTENCEPIECE_CHOICES, Spelling, detect_spellings, porter_spelling
from porter.profile.model import MPU_LAYERS, ModelProfile, read_model
from porter.source import GENERATED_MARK, SourceTree

ARGUMENTS = "megatron/arguments.py"
TRANSFORMER = "megatron/model/transformer.py"
LANGUAGE_MODEL = "megatron/model/language_model.py"
GPT_MODEL = "megatron/model/gpt_model.py"
MODEL_INIT = "megatron/model/__init__.py"
OPTIMIZER = "megatron/optimizer/__init__.py"
TOKENIZER = "megatron/tokenizer/tokenizer.py"
GLOBAL_VARS = "megatron/global_vars.py"
PRETRAIN_GPT = "pretrain_gpt.py"
TRAINING = "megatron/training.py"

@dataclass
class TreeProfile:
    tree: SourceTree
    arguments: ArgumentsProfile
    spellings: dict[str, Spelling | None]
    tokenizer_choices: tuple[str, ...]
    generated: dict[str, str] = field(default_factory=dict)  # path -> header line of porter's earlier output
    model: ModelProfile | None = None
    entry: EntryProfile | None = None
    tokenizers: dict[str, str] = field(default_factory=dict)  # tokenizer type -> its build_tokenizer branch
    tokenizer_built_when: str | None = None  # '' always; else the test in set_global_variables
    enums: dict[str, EnumFact] = field(default_factory=dict)
    attention: AttentionSite | None = None  # the core attention porter can fuse, if any
    table: dict[str, tuple[Spelling, ...]] = field(default_factory=dict)  # the spellings looked for
    facts: dict[str, object] = field(default_factory=dict)  # difference name -> what its detector found

    def porter_spelling(self, switch: str) -> Spelling:
        """porter's own spelling of a switch, to add when the tree has none."""
        return porter_spelling(self.table, switch)

    @property
    def root(self):
        return self.tree.root

    def sentencepiece(self) -> tuple[str, str] | None:
        """(choice, origin) of a --tokenizer-type that builds a SentencePiece tokenizer, if any.

        A choice counts only with a branch in build_tokenizer behind it (a choice alone fails
        at run time); origin is 'porter' when the branch builds porter's generated class.
        """
        for choice in SENTENCEPIECE_CHOICES:
            if choice in self.tokenizer_choices and choice in self.tokenizers:
                origin = "porter" if "sentencepiece_tokenizer" in self.tokenizers[choice] else "tree"
                return choice, origin
        return None


def _parsed(tree: SourceTree, path: str) -> cst.Module | None:
    source = tree.get(path)
    return None if source is None else source.module


def _identifiers(module: cst.Module) -> set[str]:
    names = {n.value for n in findall(module, m.Name())}
    names |= {a.attr.value for a in findall(module, m.Attribute())}
    return names


def build_profile(tree: SourceTree, table: dict[str, tuple[Spelling, ...]],
                  detectors: dict[str, Callable] | None = None) -> TreeProfile:
    """What the tree has. `table`: the switch spellings to look for; `detectors`: difference name
    -> its detector, called with `parsed(path)` (the file parsed, or None) and answering with
    the facts the difference plans from (porter.catalog.profile_of passes every difference's)."""
    args_file = tree.file(ARGUMENTS)
    arguments = read_arguments(ARGUMENTS, args_file.module)
    tokenizer_arg = arguments.by_option("--tokenizer-type")
    generated = {}
    for folder in ("", "megatron/model", "megatron/tokenizer"):
        for path in tree.list(folder):
            source = tree.get(path)
            if source is not None and source.text.startswith(GENERATED_MARK):
                generated[path] = source.text.splitlines()[0]

    # The enums a feature's option may be typed with; for each, whether anything uses it.
    feature_enums = {s.enum for rows in table.values() for s in rows if s.enum}
    enums: dict[str, EnumFact] = {}
    for path in ENUM_FILES:
        module = _parsed(tree, path)
        for name, members in enum_classes(module).items() if module is not None else ():
            if name in feature_enums:
                enums[name] = EnumFact(name, path, members, find_uses(tree.root, name, path))

    identifiers: dict[str, set[str]] = {}

    def identifiers_of(path: str) -> set[str]:
        if path not in identifiers:
            module = None if path in generated else _parsed(tree, path)
            identifiers[path] = _identifiers(module) if module is not None else set()
        return identifiers[path]

    def members_of(name: str) -> tuple[str, ...] | None:
        fact = enums.get(name)
        return fact.members if fact is not None else None

    model_files = {path: _parsed(tree, path) for path in (TRANSFORMER, LANGUAGE_MODEL, GPT_MODEL, MODEL_INIT, OPTIMIZER,
                                                          *MPU_LAYERS)}

    def parsed(path: str) -> cst.Module | None:
        return model_files[path] if path in model_files else _parsed(tree, path)

    facts = {name: detect(parsed) for name, detect in (detectors or {}).items()}
    return TreeProfile(
        tree=tree,
        arguments=arguments,
        spellings=detect_spellings(arguments, table, members_of, identifiers_of),
        tokenizer_choices=tokenizer_arg.choices if tokenizer_arg and tokenizer_arg.choices else (),
        generated=generated,
        model=read_model(model_files),
        entry=read_entry(_parsed(tree, PRETRAIN_GPT), _parsed(tree, TRAINING)),
        tokenizers=tokenizer_branches(_parsed(tree, TOKENIZER)),
        tokenizer_built_when=builds_tokenizer_when(_parsed(tree, GLOBAL_VARS)),
        enums=enums,
        attention=find_core_attention(tree.file(TRANSFORMER).module),
        table=table,
        facts={name: fact for name, fact in facts.items() if fact is not None},
    )
