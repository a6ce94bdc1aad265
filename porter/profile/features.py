"""Detector: how the tree spells each LLaMA feature's switch, and whether it implements it.

Each feature can be switched by different options in different trees (four spellings of
"no bias", three of SwiGLU...). The table below is data: for every feature, the spellings
porter knows, each with the expression that is true when the feature is on and the value
that turns it on. porter's own spelling comes first; it is recognised only when the option
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

TRANSFORMER = "megatron/model/transformer.py"
LANGUAGE_MODEL = "megatron/model/language_model.py"
GPT_MODEL = "megatron/model/gpt_model.py"

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


def _tree(feature, option, dest, on, test, implemented_by=(), **more) -> Spelling:
    return Spelling(feature, option, dest, on, test, origin="tree", implemented_by=implemented_by, **more)


# feature -> spellings, porter's own first.
SPELLINGS: dict[str, list[Spelling]] = {
    "swiglu": [
        Spelling(
            "swiglu", "--activation-func-type", "activation_func_type", "swiglu",
            "args.activation_func_type == 'swiglu'", NETWORK,
            (("type", "str"), ("default", "'gelu'"), ("choices", "['gelu', 'swiglu']"),
             ("help", "'Activation of the MLP: gelu, or swiglu (silu(gate) * up, one fused gate+up projection).'")),
            layout="gate first: one fused [gate; up] projection, silu on the first half",
        ),
        # microsoft (from NVIDIA's July 2023 rebase): gated_linear_unit doubles dense_h_to_4h.
        _tree("swiglu", "--swiglu", "swiglu", True, "args.swiglu", ((TRANSFORMER, "gated_linear_unit"),),
              layout="gate first: one fused [gate; up] projection, silu on the first half"),
        # bigscience: GLU_ACTIVATIONS chunk x1, x2 and return x1 * act(x2).
        _tree("swiglu", "--glu-activation", "glu_activation", "swiglu", "args.glu_activation == 'swiglu'",
              ((TRANSFORMER, "GLU_ACTIVATIONS"),),
              layout="gate second: one fused [up; gate] projection, silu on the second half"),
    ],
    "rotary": [
        Spelling(
            "rotary", "--position-embedding-type", "position_embedding_type", "rotary",
            "args.position_embedding_type == 'rotary'", NETWORK,
            (("type", "str"), ("default", "'learned'"), ("choices", "['learned', 'rotary']"),
             ("help", "'Position embedding: a learned absolute table, or rotary (RoPE) on query and key.'")),
        ),
        # Habana and bigscience: an enum-typed option; bigscience applies it in attention.
        _tree("rotary", "--position-embedding-type", "position_embedding_type", "rotary",
              "args.position_embedding_type == PositionEmbeddingType.rotary",
              ((TRANSFORMER, "apply_rotary_pos_emb"),), enum="PositionEmbeddingType"),
        # microsoft: rotary built in the language model, handed to attention.
        _tree("rotary", "--use-rotary-position-embeddings", "use_rotary_position_embeddings", True,
              "args.use_rotary_position_embeddings",
              ((LANGUAGE_MODEL, "rotary_pos_emb"), (TRANSFORMER, "rotary_pos_emb"))),
    ],
    "rope_theta": [
        Spelling(
            "rope_theta", "--rope-theta", "rope_theta", 10000.0, "args.rope_theta", NETWORK,
            (("type", "float"), ("default", "10000.0"), ("help", "'Base of the rotary embedding frequencies.'")),
        ),
        _tree("rope_theta", "--rotary-position-embeddings-theta", "rope_theta", 10000.0, "args.rope_theta",
              ((LANGUAGE_MODEL, "rope_theta"),)),
    ],
    "rmsnorm": [
        Spelling(
            "rmsnorm", "--layernorm-type", "layernorm_type", "rmsnorm",
            "args.layernorm_type == 'rmsnorm'", NETWORK,
            (("type", "str"), ("default", "'layernorm'"), ("choices", "['layernorm', 'rmsnorm']"),
             ("help", "'Norm at every transformer norm site, the final norm included.'")),
        ),
        _tree("rmsnorm", "--normalization", "normalization", "rmsnorm", "args.normalization == 'rmsnorm'",
              ((TRANSFORMER, "normalization"),)),
    ],
    "no_bias": [
        Spelling(
            "no_bias", "--no-bias", "no_bias", True, "args.no_bias", NETWORK,
            (("action", "'store_true'"), ("help", "'No bias in any linear layer (attention, MLP).'")),
        ),
        # stored inverted, and registered in the training group
        _tree("no_bias", "--disable-bias-linear", "add_bias_linear", False, "not args.add_bias_linear",
              ((TRANSFORMER, "add_bias_linear"),)),
    ],
    "untied": [
        # porter unties in the generated model class itself; only a tree has a switch
        _tree("untied", "--untie-embeddings-and-output-weights", "untie_embeddings_and_output_weights", True,
              "args.untie_embeddings_and_output_weights", ((GPT_MODEL, "untie_embeddings_and_output_weights"),)),
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
        _tree("tokenizer_model", "--tokenizer-model", "tokenizer_model", None, "args.tokenizer_model"),
    ],
}

# Tokenizer choices that read a SentencePiece model from --tokenizer-model, best first.
SENTENCEPIECE_CHOICES = ("GPTSentencePieceTokenizer", "SentencePieceTokenizer")
SENTENCEPIECE_CHOICE = "SentencePieceTokenizer"  # the one porter adds


def _registered_as_porter_does(argument: Argument, spelling: Spelling) -> bool:
    return all(argument.keywords.get(key) == value for key, value in spelling.add)


def detect_spellings(
    arguments: ArgumentsProfile,
    enum_members: Callable[[str], tuple[str, ...] | None] = lambda name: None,
    identifiers: Callable[[str], set[str]] = lambda path: set(),
) -> dict[str, Spelling | None]:
    """feature -> the spelling the tree has (origin 'tree' or 'porter'), or None.

    `enum_members(name)` gives the members of an enum the arguments module imports;
    `identifiers(path)` the names and attributes a model file uses (empty for porter's
    generated files).
    """
    found: dict[str, Spelling | None] = {}
    for feature, spellings in SPELLINGS.items():
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


def porter_spelling(feature: str) -> Spelling:
    first = SPELLINGS[feature][0]
    assert first.origin == "porter", f"porter has no spelling of its own for {feature}"
    return first
