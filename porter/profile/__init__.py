"""The tree profile: what the target tree has, read once before planning.

Each detector answers one question from the parsed files ("how is no-bias spelled
here?", "where do argument checks live?"). The plan decides from the profile alone and
never reads the tree again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from porter.profile.arguments import ArgumentsProfile, read_arguments
from porter.profile.features import SENTENCEPIECE_CHOICE, Spelling, detect_spellings
from porter.render import GENERATED_MARK
from porter.source import SourceTree

ARGUMENTS = "megatron/arguments.py"
TRANSFORMER = "megatron/model/transformer.py"
LANGUAGE_MODEL = "megatron/model/language_model.py"
GPT_MODEL = "megatron/model/gpt_model.py"
MODEL_INIT = "megatron/model/__init__.py"
OPTIMIZER = "megatron/optimizer/__init__.py"
TOKENIZER = "megatron/tokenizer/tokenizer.py"
GLOBAL_VARS = "megatron/global_vars.py"


@dataclass
class TreeProfile:
    tree: SourceTree
    arguments: ArgumentsProfile
    spellings: dict[str, Spelling | None]
    tokenizer_choices: tuple[str, ...]
    generated: dict[str, str] = field(default_factory=dict)  # path -> header line of porter's earlier output

    @property
    def root(self):
        return self.tree.root

    def has_sentencepiece(self) -> bool:
        return SENTENCEPIECE_CHOICE in self.tokenizer_choices


def build_profile(tree: SourceTree) -> TreeProfile:
    args_file = tree.file(ARGUMENTS)
    arguments = read_arguments(ARGUMENTS, args_file.module)
    tokenizer_arg = arguments.by_option("--tokenizer-type")
    generated = {}
    for folder in ("", "megatron/model", "megatron/tokenizer"):
        for path in tree.list(folder):
            source = tree.get(path)
            if source is not None and source.text.startswith(GENERATED_MARK):
                generated[path] = source.text.splitlines()[0]
    return TreeProfile(
        tree=tree,
        arguments=arguments,
        spellings=detect_spellings(arguments),
        tokenizer_choices=tokenizer_arg.choices if tokenizer_arg and tokenizer_arg.choices else (),
        generated=generated,
    )
