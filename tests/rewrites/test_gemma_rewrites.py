"""Gemma's rewrites: the fused gate+up for every gated activation, and the word-embedding scale."""

from functools import partial
from types import SimpleNamespace

import pytest

from porter.catalog import load_spec, profile_of
from porter.differences.embedding_scale.rewrites import EmbeddingScaleForward, EmbeddingScaleInit
from porter.differences.gated_mlp import GATED, PORTER_GATED_TEST
from porter.differences.gated_mlp.rewrites import FusedGateUp, SetActivation
from porter.plan import make_plan
from porter.resources import sample_tree_dir
from porter.source import SourceTree
from tests.rewrites.test_transformer import MLP


@pytest.fixture(scope="module")
def sample():
    return profile_of(SourceTree.open(sample_tree_dir()))


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_the_fused_projection_is_doubled_for_every_gated_activation(sample, family):
    """Whichever family ports the tree, its gate test is true for every gated choice of the option it
    adds (so a second family finds the line it needs), and false for gelu."""
    plan = make_plan(load_spec(family), sample)
    (fused,) = [e for e in plan.edits if e.name == "FusedGateUp"]
    test = fused.rewrite.keywords["test"]
    assert test == PORTER_GATED_TEST
    for activation in (*GATED, "gelu"):
        assert eval(test, {}, {"args": SimpleNamespace(activation_func_type=activation)}) == (activation in GATED)
    added = next(e for e in plan.edits if e.name == "AddArguments" and "--activation-func-type" in e.reason)
    statement = added.rewrite.keywords["arguments"][0]
    assert "choices=['gelu', " + ", ".join(repr(a) for a in GATED) + "]" in statement
    functions = [e.rewrite.keywords["func_name"] for e in plan.edits if e.name == "SetActivation"]
    assert functions == [func for func, _ in GATED.values()]  # every choice gets its function, in both families


def test_fused_gate_up_and_both_activations_in_one_pass(check, chain):
    both = chain(partial(FusedGateUp, cls="ParallelMLP", attr="dense_h_to_4h", test=PORTER_GATED_TEST),
                 partial(SetActivation, cls="ParallelMLP", test="args.activation_func_type == 'swiglu'",
                         func_name="swiglu"),
                 partial(SetActivation, cls="ParallelMLP", test="args.activation_func_type == 'geglu'",
                         func_name="geglu"))
    after = MLP.replace(
        "        args = get_args()\n        self.dense_h_to_4h",
        "        args = get_args()\n"
        "        # Gated MLP: one fused gate+up projection, 2*ffn wide. On each tensor-parallel\n"
        "        # rank the first half of its output is the gate, the second half the up projection.\n"
        "        gate_and_up = 2 if args.activation_func_type in ('swiglu', 'geglu') else 1\n"
        "        self.dense_h_to_4h",
    ).replace(
        "            args.ffn_hidden_size,\n            gather_output=False,\n            init_method=init_method,\n"
        "            skip_bias_add=True)",
        "            gate_and_up * args.ffn_hidden_size,\n            gather_output=False,\n"
        "            init_method=init_method,\n            skip_bias_add=True,\n            stride=gate_and_up)",
    ).replace(
        "            self.activation_func = erf_gelu\n",
        "            self.activation_func = erf_gelu\n"
        "        if args.activation_func_type == 'swiglu':\n            self.activation_func = swiglu\n"
        "        if args.activation_func_type == 'geglu':\n            self.activation_func = geglu\n",
    )
    check(both, MLP, after)  # and a second pass changes nothing


EMBEDDING = '''
class Embedding(MegatronModule):
    def __init__(self, hidden_size, vocab_size, init_method, num_tokentypes=0):
        super(Embedding, self).__init__()
        self.hidden_size = hidden_size
        self.word_embeddings = mpu.VocabParallelEmbedding(
            vocab_size, self.hidden_size, init_method=init_method)
        self._word_embeddings_key = 'word_embeddings'
        self.embedding_dropout = torch.nn.Dropout(0.0)

    def forward(self, input_ids, position_ids, tokentype_ids=None):
        words_embeddings = self.word_embeddings(input_ids)
        embeddings = self.embedding_dropout(words_embeddings)
        return embeddings
'''

SCALED_FORWARD = (
    "        words_embeddings = self.word_embeddings(input_ids)\n"
    "        if self.scale_word_embeddings:\n"
    "            # times sqrt(hidden), the factor rounded to the embeddings' dtype first (as HF's Gemma)\n"
    "            factor = torch.tensor(words_embeddings.size(-1) ** 0.5, dtype=words_embeddings.dtype)\n"
    "            words_embeddings = words_embeddings * factor\n"
)
RECORD = ("        # the word embeddings times sqrt(hidden) (Gemma); the tied output layer uses the weight itself\n"
          "        self.scale_word_embeddings = args.scale_embeddings\n")


def test_embedding_scale_is_recorded_after_the_lookup_table_with_args_added(check):
    after = EMBEDDING.replace("            vocab_size, self.hidden_size, init_method=init_method)\n",
                              "            vocab_size, self.hidden_size, init_method=init_method)\n"
                              "        args = get_args()\n" + RECORD)
    check(partial(EmbeddingScaleInit, cls="Embedding", test="args.scale_embeddings"), EMBEDDING, after)


def test_embedding_scale_is_recorded_after_the_constructors_own_args(check):
    source = EMBEDDING.replace("        self.embedding_dropout =", "        args = get_args()\n        self.embedding_dropout =")
    after = source.replace("        args = get_args()\n", "        args = get_args()\n" + RECORD)
    check(partial(EmbeddingScaleInit, cls="Embedding", test="args.scale_embeddings"), source, after)


def test_the_word_embeddings_are_scaled_right_after_the_lookup(check):
    after = EMBEDDING.replace("        words_embeddings = self.word_embeddings(input_ids)\n", SCALED_FORWARD)
    check(partial(EmbeddingScaleForward, cls="Embedding"), EMBEDDING, after)


def test_an_embedding_without_a_word_lookup_is_refused_by_construct(refuses):
    source = EMBEDDING.replace("words_embeddings = self.word_embeddings(input_ids)", "words_embeddings = self.lookup(input_ids)")
    error = refuses(partial(EmbeddingScaleForward, cls="Embedding"), source)
    assert "self.word_embeddings(input_ids)" in error.construct and "Embedding.forward" in error.construct


def test_a_tree_with_its_own_gated_mlp_is_refused_for_geglu(sample):
    """A gated MLP chosen by an option whose choices porter cannot extend (neither a literal list nor
    a dict of GLU functions it finds; BigScience's, whose dict it does find: tests/variants/
    test_geglu_beside_choices.py) is refused by name."""
    import dataclasses

    from porter.errors import PorterError
    from tests.test_plan_variants import tree_spelling, with_options

    profile = with_options(sample, ("--glu-activation", "glu_activation", "_add_network_size_args", "str"))
    spellings = {**profile.spellings, "swiglu": tree_spelling("swiglu", "--glu-activation", True)}
    with pytest.raises(PorterError) as caught:
        make_plan(load_spec("gemma"), dataclasses.replace(profile, spellings=spellings))
    assert "--glu-activation" in caught.value.message and "neither a literal list" in caught.value.found
    assert caught.value.file == "megatron/model/transformer.py"


def test_a_tree_with_its_own_rmsnorm_that_porter_cannot_find_is_refused_for_the_weight_offset(sample):
    """A tree switch for its own RMSNorm (which scales by w alone) but no model method building an
    imported RMSNorm class: porter has nowhere to build its offset RMSNorm instead, and says so
    (tests/variants/test_own_rmsnorm_offset.py: where it finds them)."""
    import dataclasses

    from porter.errors import PorterError
    from tests.test_plan_variants import tree_spelling, with_options

    profile = with_options(sample, ("--normalization", "normalization", "_add_network_size_args", "str"))
    spellings = {**profile.spellings, "rmsnorm": tree_spelling("rmsnorm", "--normalization", True)}
    with pytest.raises(PorterError) as caught:
        make_plan(load_spec("gemma"), dataclasses.replace(profile, spellings=spellings))
    assert "own RMSNorm" in caught.value.message and "offset" in caught.value.message
    assert "finds no method of the model files that builds it" in caught.value.message


def test_a_width_given_as_a_number_stands_against_the_trees_own_override(sample):
    """A tree that sets the MLP width again under its SwiGLU switch, whatever was given (microsoft July
    2023: `if args.swiglu: args.ffn_hidden_size = ...`), would replace Gemma's 16384: the rule's switch
    comes on (multiple 1) and the override is skipped while it is, as for LLaMA's rule; without such an
    override a number stays a default of the entry point alone."""
    import dataclasses

    plain = make_plan(load_spec("gemma"), sample)
    assert not [e for e in plain.edits if e.feature == "ffn_rule"] and plain.defaults["ffn_hidden_size"] == 16384
    overridden = dataclasses.replace(sample, arguments=dataclasses.replace(sample.arguments,
                                                                           width_overrides=("args.swiglu",)))
    plan = make_plan(load_spec("gemma"), overridden)
    (keep,) = [e for e in plan.edits if e.name == "KeepRuleWidth"]
    assert keep.rewrite.keywords["test"] == "args.swiglu" and keep.rewrite.keywords["dest"] == "ffn_multiple_of"
    assert (plan.defaults["ffn_hidden_size"], plan.defaults["ffn_multiple_of"]) == (16384, 1)
