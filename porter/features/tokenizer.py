"""The tokenizer: GPT-2's BPE, a SentencePiece model (LLaMA-1/2), or an HF tokenizer.json.

Spec: `tokenizer.type` (GPT: gpt2bpe). Both new kinds read a file given by --tokenizer-model
(porter's, or the tree's own option). A tree that already builds a SentencePiece tokenizer
behind a --tokenizer-type choice is reused; otherwise porter adds the choice, its
build_tokenizer branch, the tokenizer module, and has the tokenizer built when a model file is
given.
"""

from __future__ import annotations

from porter.edits import arguments as A
from porter.edits import model_files as F
from porter.errors import PorterError
from porter.features.base import Difference
from porter.planner import rw
from porter.profile import ARGUMENTS, GLOBAL_VARS, TOKENIZER
from porter.profile.features import DATA, SENTENCEPIECE_CHOICE, Spelling, tree_spelling
from porter.schema import choice


class Tokenizer(Difference):
    name = "sentencepiece"
    fields = {"tokenizer.type": choice("gpt2bpe", "gpt2bpe", "sentencepiece", help="tokenizer")}
    switch_fields = {"tokenizer_model": "tokenizer.type"}
    spellings = {
        "tokenizer_model": (
            Spelling(
                "tokenizer_model", "--tokenizer-model", "tokenizer_model", None, "args.tokenizer_model", DATA,
                (("type", "str"), ("default", "None"), ("help", "'SentencePiece tokenizer model file.'")),
            ),
            tree_spelling("tokenizer_model", "--tokenizer-model", "tokenizer_model", None, "args.tokenizer_model"),
        ),
    }

    def wanted(self, spec):
        return spec["tokenizer.type"] == "sentencepiece"

    def plan(self, p):
        tokenizer_arg = p.profile.arguments.by_option("--tokenizer-type")
        if tokenizer_arg is None:
            raise PorterError(
                "cannot add a tokenizer choice: no --tokenizer-type option",
                file=ARGUMENTS, construct="add_argument('--tokenizer-type', ..., choices=[...])",
                found="no such option", fix="report the variant",
            )
        p.switch("tokenizer_model")
        found = p.profile.sentencepiece()
        if found is not None and found[1] == "tree":
            tree_choice = found[0]
            p.reuse("sentencepiece", f"the tree's {tree_choice!r} tokenizer (a choice with its build_tokenizer branch)")
            when = p.profile.tokenizer_built_when
            if when and "tokenizer_model" not in when:
                p.edit(GLOBAL_VARS, "sentencepiece", "the tokenizer is built when a tokenizer model file is given",
                       rw(F.BuildTokenizerWhen, func="set_global_variables", option_dest="tokenizer_model"))
            p.defaults["tokenizer_type"] = tree_choice
            return
        if SENTENCEPIECE_CHOICE in p.profile.tokenizer_choices:
            p.reuse("sentencepiece", f"the {SENTENCEPIECE_CHOICE!r} choice is there already")
        else:
            p.edit(ARGUMENTS, "sentencepiece", f"adds the {SENTENCEPIECE_CHOICE!r} tokenizer choice",
                   rw(A.ExtendChoices, func=tokenizer_arg.function, option="--tokenizer-type", value=SENTENCEPIECE_CHOICE))
        p.edit(TOKENIZER, "sentencepiece", "build_tokenizer builds the SentencePiece tokenizer",
               rw(F.TokenizerBranch, func="build_tokenizer", name=SENTENCEPIECE_CHOICE,
                  body="from .sentencepiece_tokenizer import SentencePieceTokenizer\n"
                       "tokenizer = SentencePieceTokenizer(args.tokenizer_model)"))
        p.edit(GLOBAL_VARS, "sentencepiece", "the tokenizer is built when a tokenizer model file is given",
               rw(F.BuildTokenizerWhen, func="set_global_variables", option_dest="tokenizer_model"))
        p.create("megatron/tokenizer/sentencepiece_tokenizer.py", "sentencepiece",
                 "the SentencePiece tokenizer", "sentencepiece_tokenizer.py.j2")
        p.defaults["tokenizer_type"] = SENTENCEPIECE_CHOICE
