"""Profile detection of each feature's switch, on argument snippets we write in each variant's style."""

import textwrap

import libcst as cst

from porter.catalog import spellings
from porter.edits.arguments import argument_statement
from porter.profile.arguments import read_arguments
from porter.profile.features import detect_spellings, porter_spelling


def arguments(source: str):
    return read_arguments("megatron/arguments.py", cst.parse_module(textwrap.dedent(source)))


def detect(source: str, members=None, identifiers=None):
    return detect_spellings(
        arguments(source),
        spellings(),
        lambda name: (members or {}).get(name),
        lambda path: (identifiers or {}).get(path, set()),
    )


MICROSOFT_HEAD = '''
from megatron.core.transformer import TransformerConfig

def validate_args(args, defaults={}):
    for key in defaults:
        pass

def _add_network_size_args(parser):
    group = parser.add_argument_group(title='network size')
    group.add_argument('--use-rotary-position-embeddings', action='store_true', help='Use rotary.')
    group.add_argument('--rotary-position-embeddings-theta', type=int, default=10000,
                       help='Rotary theta.', dest='rope_theta')
    group.add_argument('--normalization', type=str, default='layernorm', choices=['layernorm', 'rmsnorm'])
    group.add_argument('--swiglu', action='store_true', help='Use swiglu.')
    group.add_argument('--untie-embeddings-and-output-weights', action='store_true', help='Untie.'),
    return parser

def _add_training_args(parser):
    group = parser.add_argument_group(title='training')
    group.add_argument('--disable-bias-linear', action='store_false', help='No bias.', dest='add_bias_linear')
    return parser
'''

IMPLEMENTED = {
    "megatron/model/transformer.py": {"gated_linear_unit", "normalization", "add_bias_linear", "rotary_pos_emb"},
    "megatron/model/language_model.py": {"rotary_pos_emb", "rope_theta"},
    "megatron/model/gpt_model.py": {"untie_embeddings_and_output_weights"},
}


def test_microsoft_head_spells_every_feature_with_its_own_flags():
    found = detect(MICROSOFT_HEAD, identifiers=IMPLEMENTED)
    assert {f: s.option for f, s in found.items() if s} == {
        "swiglu": "--swiglu",
        "rotary": "--use-rotary-position-embeddings",
        "rope_theta": "--rotary-position-embeddings-theta",
        "rmsnorm": "--normalization",
        "no_bias": "--disable-bias-linear",
        "untied": "--untie-embeddings-and-output-weights",
    }
    assert all(s.origin == "tree" and s.implemented for s in found.values() if s)
    assert found["no_bias"].on is False and found["no_bias"].test == "not args.add_bias_linear"
    assert found["ffn_rule"] is None


def test_an_option_without_its_implementation_is_not_implemented():
    found = detect(MICROSOFT_HEAD, identifiers={})
    assert found["swiglu"].origin == "tree" and not found["swiglu"].implemented


def test_a_normalization_option_without_an_rmsnorm_choice_is_not_the_feature():
    found = detect(MICROSOFT_HEAD.replace("choices=['layernorm', 'rmsnorm']", "choices=['layernorm']"))
    assert found["rmsnorm"] is None


HABANA = '''
from megatron.enums import PositionEmbeddingType

def parse_args(extra_args_provider=None, defaults={}, ignore_unknown_args=False):
    for key in defaults:
        pass
    required_args = ['num_layers', 'hidden_size', 'max_position_embeddings']
    if args.position_embedding_type == PositionEmbeddingType.rotary:
        assert args.max_position_embeddings is None, "rotary has no table"

def _add_network_size_args(parser):
    group = parser.add_argument_group(title='network size')
    group.add_argument('--position-embedding-type', type=lambda x: PositionEmbeddingType[x],
                       choices=list(PositionEmbeddingType),
                       default=PositionEmbeddingType.learnable,
                       help='Define position embedding type.')
    return parser
'''
ENUM = {"PositionEmbeddingType": ("rotary", "absolute", "alibi", "learnable")}


def test_an_enum_typed_option_is_the_trees_with_the_enums_import():
    found = detect(HABANA, members=ENUM)
    rotary = found["rotary"]
    assert rotary.origin == "tree" and not rotary.implemented
    assert rotary.test == "args.position_embedding_type == PositionEmbeddingType.rotary"
    assert rotary.on == "rotary"  # argparse runs type= on a string default: the member name
    assert rotary.imports == ("from megatron.enums import PositionEmbeddingType",)


def test_an_enum_without_a_rotary_member_is_not_the_feature():
    found = detect(HABANA, members={"PositionEmbeddingType": ("absolute", "alibi")})
    assert found["rotary"] is None


def test_checks_required_args_and_the_rotary_prohibition_are_read():
    profile = arguments(HABANA)
    assert profile.checks_function == "parse_args"
    assert profile.required == ("num_layers", "hidden_size", "max_position_embeddings")
    assert profile.forbids_max_positions
    assert not arguments(MICROSOFT_HEAD).forbids_max_positions
    assert arguments(MICROSOFT_HEAD).checks_function == "validate_args"


BIGSCIENCE = HABANA.replace("default=PositionEmbeddingType.learnable", "default=PositionEmbeddingType.absolute").replace(
    "    return parser",
    "    group.add_argument('--glu-activation', type=str,\n"
    "                       choices=megatron.model.glu_activations.GLU_ACTIVATIONS.keys(),\n"
    "                       help='GLU activations to use.')\n"
    "    return parser",
)


def test_bigscience_glu_is_swiglu_with_the_gate_on_the_second_half():
    found = detect(BIGSCIENCE, members=ENUM, identifiers={
        "megatron/model/transformer.py": {"GLU_ACTIVATIONS", "apply_rotary_pos_emb"}})
    swiglu = found["swiglu"]
    assert (swiglu.option, swiglu.on, swiglu.implemented) == ("--glu-activation", "swiglu", True)
    assert "second half" in swiglu.layout
    assert found["rotary"].implemented


def test_porters_own_options_are_recognised_only_as_porter_registers_them():
    ported = BIGSCIENCE.replace("    return parser", "    " + argument_statement(
        "--layernorm-type", **dict(porter_spelling(spellings(), "rmsnorm").add)).replace("{group}", "group").replace("{pad}", " " * 23)
        + "\n    return parser", 1)
    found = detect(ported, members=ENUM)
    assert found["rmsnorm"].origin == "porter"
    # The same option registered differently is someone else's (Habana's hand port spells it so):
    # the tree's own switch, implemented only if the tree's model code uses RMSNorm.
    other = ported.replace("default='layernorm'", "default='rmsnorm'")
    theirs = detect(other, members=ENUM)["rmsnorm"]
    assert (theirs.origin, theirs.implemented) == ("tree", False)
    assert detect(other, members=ENUM, identifiers={"megatron/model/transformer.py": {"RMSNorm"}})["rmsnorm"].implemented
