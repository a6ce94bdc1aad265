"""Detector: how the tree spells each LLaMA feature's switch, if it has one.

Each feature can be switched by different options in different trees (four spellings of
"no bias", three of SwiGLU...). The table below is data: for every feature, the spellings
porter knows, each with the expression that is true when the feature is on and the value
that turns it on. Detection takes the first spelling whose option the tree's parser
registers; when there is none, porter adds its own (the `PORTER` spelling) to the group
named there.
"""

from __future__ import annotations

from dataclasses import dataclass

from porter.profile.arguments import ArgumentsProfile


@dataclass(frozen=True)
class Spelling:
    feature: str
    option: str
    dest: str
    on: object  # the value of `dest` that turns the feature on (for parser.set_defaults)
    test: str  # Python expression, true when the feature is on
    group: str = ""  # where porter adds the option when the tree lacks it
    add: tuple[tuple[str, str], ...] = ()  # porter's add_argument keywords: (name, source)
    origin: str = "porter"  # "tree" once detected in a tree

    def detected(self) -> Spelling:
        return Spelling(**{**self.__dict__, "origin": "tree"})


NETWORK = "_add_network_size_args"
DATA = "_add_data_args"

# feature -> spellings, porter's own first (so a tree porter already ported is recognised as such).
SPELLINGS: dict[str, list[Spelling]] = {
    "swiglu": [
        Spelling(
            "swiglu", "--activation-func-type", "activation_func_type", "swiglu",
            "args.activation_func_type == 'swiglu'", NETWORK,
            (("type", "str"), ("default", "'gelu'"), ("choices", "['gelu', 'swiglu']"),
             ("help", "'Activation of the MLP: gelu, or swiglu (silu(gate) * up, one fused gate+up projection).'")),
        ),
    ],
    "rotary": [
        Spelling(
            "rotary", "--position-embedding-type", "position_embedding_type", "rotary",
            "args.position_embedding_type == 'rotary'", NETWORK,
            (("type", "str"), ("default", "'learned'"), ("choices", "['learned', 'rotary']"),
             ("help", "'Position embedding: a learned absolute table, or rotary (RoPE) on query and key.'")),
        ),
    ],
    "rope_theta": [
        Spelling(
            "rope_theta", "--rope-theta", "rope_theta", 10000.0, "args.rope_theta", NETWORK,
            (("type", "float"), ("default", "10000.0"), ("help", "'Base of the rotary embedding frequencies.'")),
        ),
    ],
    "rmsnorm": [
        Spelling(
            "rmsnorm", "--layernorm-type", "layernorm_type", "rmsnorm",
            "args.layernorm_type == 'rmsnorm'", NETWORK,
            (("type", "str"), ("default", "'layernorm'"), ("choices", "['layernorm', 'rmsnorm']"),
             ("help", "'Norm at every transformer norm site, the final norm included.'")),
        ),
    ],
    "no_bias": [
        Spelling(
            "no_bias", "--no-bias", "no_bias", True, "args.no_bias", NETWORK,
            (("action", "'store_true'"), ("help", "'No bias in any linear layer (attention, MLP).'")),
        ),
    ],
    "ffn_rule": [
        Spelling(
            "ffn_rule", "--ffn-multiple-of", "ffn_multiple_of", 256, "args.ffn_multiple_of is not None", NETWORK,
            (("type", "int"), ("default", "None"),
             ("help", "'If set, the default --ffn-hidden-size is int(2/3 * 4h) rounded up to a multiple of this (LLaMA: 256); otherwise 4h.'")),
        ),
    ],
    "tokenizer_model": [
        Spelling(
            "tokenizer_model", "--tokenizer-model", "tokenizer_model", None, "args.tokenizer_model", DATA,
            (("type", "str"), ("default", "None"), ("help", "'SentencePiece tokenizer model file.'")),
        ),
    ],
}

SENTENCEPIECE_CHOICE = "SentencePieceTokenizer"


def detect_spellings(arguments: ArgumentsProfile) -> dict[str, Spelling | None]:
    """feature -> the spelling the tree has (origin 'tree' or 'porter'), or None."""
    found: dict[str, Spelling | None] = {}
    for feature, spellings in SPELLINGS.items():
        found[feature] = None
        for i, spelling in enumerate(spellings):
            argument = arguments.by_option(spelling.option)
            if argument is None:
                continue
            if spelling.on is not None and argument.choices is not None and spelling.on not in argument.choices:
                continue  # e.g. a --position-embedding-type without a rotary choice
            found[feature] = spelling if i == 0 else spelling.detected()
            break
    return found


def porter_spelling(feature: str) -> Spelling:
    return SPELLINGS[feature][0]
