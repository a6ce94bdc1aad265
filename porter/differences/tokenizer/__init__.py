"""The tokenizer: GPT-2's BPE, a SentencePiece model (LLaMA-1/2), or an HF tokenizer.json (LLaMA-3).

Spec: `tokenizer.type` (GPT: gpt2bpe; "sentencepiece"; "hf": a tokenizer.json read by the
`tokenizers` library) and `tokenizer.add_bos` (a BOS token before each document, as HF's
tokenizers encode it: LLaMA's on). Both new kinds read the file given by --tokenizer-model
(porter's option or the tree's own). A tree that already builds a SentencePiece tokenizer
behind a --tokenizer-type choice is reused when no BOS is wanted (the trees' own add none);
otherwise porter adds its choice, its build_tokenizer branch, the tokenizer module and
`--add-bos-token`, and has the tokenizer built when a model file is given.
HF: the token ids (bos_token_id, eos_token_id) come from the tokenizer file on export.
"""

from __future__ import annotations

from dataclasses import dataclass

from porter.differences.base import Difference
from porter.differences.tokenizer import rewrites as R
from porter.edits import arguments as A
from porter.errors import PorterError
from porter.planner import rw
from porter.profile import ARGUMENTS, GLOBAL_VARS, TOKENIZER
from porter.profile.features import DATA, SENTENCEPIECE_CHOICES, Spelling, tree_spelling
from porter.schema import choice, flag


@dataclass(frozen=True)
class Kind:
    choice: str  # the --tokenizer-type choice porter adds
    module: str  # megatron/tokenizer/<module>.py
    cls: str
    template: str
    tree_choices: tuple[str, ...] = ()  # a tree's own choices that build this kind


# Usual names of the special tokens in a tokenizer.json (LLaMA-3, LLaMA-2, Gemma, GPT-2 styles).
BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>")
EOS_NAMES = ("<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>")

KINDS = {
    "sentencepiece": Kind("SentencePieceTokenizer", "sentencepiece_tokenizer", "SentencePieceTokenizer",
                          "sentencepiece_tokenizer.py.j2", SENTENCEPIECE_CHOICES),
    "hf": Kind("TokenizerJson", "tokenizer_json", "TokenizerJson", "tokenizer_json.py.j2"),
}


class Tokenizer(Difference):
    name = "tokenizer"  # the key of every kind (a SentencePiece model or an HF tokenizer.json)
    fields = {
        "tokenizer.type": choice("gpt2bpe", "gpt2bpe", *KINDS, help="tokenizer: gpt2bpe, sentencepiece or hf (tokenizer.json)"),
        "tokenizer.add_bos": flag(False, help="a BOS token starts each document, as HF encodes it"),
    }
    switch_fields = {"tokenizer_model": "tokenizer.type", "add_bos": "tokenizer.add_bos"}
    spellings = {
        "tokenizer_model": (
            Spelling(
                "tokenizer_model", "--tokenizer-model", "tokenizer_model", None, "args.tokenizer_model", DATA,
                (("type", "str"), ("default", "None"), ("help", "'SentencePiece tokenizer model file.'")),
            ),
            tree_spelling("tokenizer_model", "--tokenizer-model", "tokenizer_model", None, "args.tokenizer_model"),
        ),
        "add_bos": (
            Spelling(
                "add_bos", "--add-bos-token", "add_bos_token", True, "args.add_bos_token", DATA,
                (("action", "'store_true'"),
                 ("help", "'Start each document with the tokenizer\\'s BOS token, as HF encodes it (LLaMA).'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec["tokenizer.type"] in KINDS

    def from_hf(self, config):
        """The kind of the tokenizer file beside config.json, when there is one."""
        from pathlib import Path

        folder = Path(config.path).parent
        if (folder / "tokenizer.json").is_file():
            return {"tokenizer.type": "hf"}
        if (folder / "tokenizer.model").is_file():
            return {"tokenizer.type": "sentencepiece"}
        return {}

    def plan(self, p):
        spec = p.spec
        kind = KINDS[spec["tokenizer.type"]]
        add_bos = spec["tokenizer.add_bos"]
        tokenizer_arg = p.profile.arguments.by_option("--tokenizer-type")
        if tokenizer_arg is None:
            raise PorterError(
                "cannot add a tokenizer choice: no --tokenizer-type option",
                file=ARGUMENTS, construct="add_argument('--tokenizer-type', ..., choices=[...])",
                found="no such option", fix="report the variant",
            )
        p.switch("tokenizer_model")
        found = p.profile.sentencepiece() if kind.tree_choices else None
        if found is not None and found[1] == "tree":
            if not add_bos:
                self._reuse_tree(p, found[0])
                return
            p.reuse(self.name, f"the tree's {found[0]!r} tokenizer adds no BOS: porter's {kind.choice} is used")
        p.switch("add_bos", on=add_bos, field="tokenizer.add_bos")
        choice = kind.choice
        branch = p.profile.tokenizers.get(choice)
        if branch is not None and kind.module not in branch:  # the tree builds something else under that name
            choice = f"Porter{kind.choice}"
            p.reuse(self.name, f"the tree's {kind.choice!r} builds its own class: porter's is {choice!r}")
        if choice in p.profile.tokenizer_choices:
            p.reuse(self.name, f"the {choice!r} choice is there already")
        else:
            p.edit(ARGUMENTS, self.name, f"adds the {choice!r} tokenizer choice",
                   rw(A.ExtendChoices, func=tokenizer_arg.function, option="--tokenizer-type", value=choice))
        p.edit(TOKENIZER, self.name, f"build_tokenizer builds the {kind.cls}",
               rw(R.TokenizerBranch, func="build_tokenizer", name=choice,
                  body=f"from .{kind.module} import {kind.cls}\n"
                       f"tokenizer = {kind.cls}(args.tokenizer_model, add_bos=getattr(args, 'add_bos_token', False))"))
        p.edit(GLOBAL_VARS, self.name, "the tokenizer is built when a tokenizer model file is given",
               rw(R.BuildTokenizerWhen, func="set_global_variables", option_dest="tokenizer_model"))
        p.values["tokenizer"] = {"bos_names": BOS_NAMES, "eos_names": EOS_NAMES}
        p.create(f"megatron/tokenizer/{kind.module}.py", self.name, f"the {kind.cls}", kind.template)
        p.defaults["tokenizer_type"] = choice

    def _reuse_tree(self, p, tree_choice: str) -> None:
        p.reuse(self.name, f"the tree's {tree_choice!r} tokenizer (a choice with its build_tokenizer branch)")
        when = p.profile.tokenizer_built_when
        if when and "tokenizer_model" not in when:
            p.edit(GLOBAL_VARS, self.name, "the tokenizer is built when a tokenizer model file is given",
                   rw(R.BuildTokenizerWhen, func="set_global_variables", option_dest="tokenizer_model"))
        p.defaults["tokenizer_type"] = tree_choice


def token_ids(path: str | None) -> dict[str, int]:
    """bos_token_id and eos_token_id of a tokenizer file (SentencePiece model or tokenizer.json),
    for an exported HF config; {} when the file is not at hand."""
    from pathlib import Path

    if not path or not Path(path).is_file():
        return {}
    try:
        if Path(path).suffix == ".json":
            from tokenizers import Tokenizer as Json

            tokenizer = Json.from_file(str(path))
            ids = {}
            for key, names in (("bos_token_id", BOS_NAMES), ("eos_token_id", EOS_NAMES)):
                found = next((tokenizer.token_to_id(n) for n in names if tokenizer.token_to_id(n) is not None), None)
                if found is not None:
                    ids[key] = found
            return ids
        import sentencepiece

        model = sentencepiece.SentencePieceProcessor(model_file=str(path))
        return {k: v for k, v in (("bos_token_id", model.bos_id()), ("eos_token_id", model.eos_id())) if v >= 0}
    except (ImportError, OSError, RuntimeError, ValueError):
        return {}
