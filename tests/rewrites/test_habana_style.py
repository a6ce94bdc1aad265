"""Before/after tests of the rewrites porter plans for Habana-style trees (9da6581a).

The snippets are ours, written the way that tree writes these points: linears that return
the output alone (bias added inside), MoE keywords and a closing parenthesis on its own
line, attention split into ParallelAttention.sub_forward (projections) and CoreAttention
(math), a bias path that is None-safe already, an Embedding gated by `self.use_position`,
an enum-typed position-embedding option, and `max_position_embeddings` both required and
forbidden with rotary.
"""

from functools import partial

from porter.differences.bias.rewrites import LinearBias, OptionalBiasParameter
from porter.differences.gated_mlp.rewrites import FusedGateUp
from porter.differences.rotary.rewrites import (
    AddRotaryEmbedding,
    ApplyRotaryEmbedding,
    GuardPositionsState,
    NarrowPositionGate,
)
from porter.edits import arguments as A

ROTARY = "args.position_embedding_type == PositionEmbeddingType.rotary"

MLP = '''
class ParallelMLP(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, moe=False, enable_expert_tensor_parallelism=False):
        super(ParallelMLP, self).__init__()
        args = get_args()

        # Project to 4h.
        self.dense_h_to_4h = mpu.ColumnParallelLinear(
            args.hidden_size,
            args.ffn_hidden_size,
            gather_output=False,
            init_method=init_method,
            moe=moe,
            enable_expert_tensor_parallelism=enable_expert_tensor_parallelism
            )

        self.activation_func = F.gelu
        if args.openai_gelu:
            self.activation_func = openai_gelu

    def forward(self, hidden_states):
        intermediate_parallel = self.dense_h_to_4h(hidden_states)
        intermediate_parallel = self.activation_func(intermediate_parallel)
        output, output_bias = self.dense_4h_to_h(intermediate_parallel)
        return output, output_bias
'''


def test_bias_and_stride_go_before_a_closing_parenthesis_on_its_own_line(check, chain):
    test = "args.activation_func_type == 'swiglu'"
    both = chain(partial(FusedGateUp, cls="ParallelMLP", attr="dense_h_to_4h", test=test),
                 partial(LinearBias, cls="ParallelMLP", attrs=["dense_h_to_4h"], bias_expr="not args.no_bias"))

    after = MLP.replace(
        "        args = get_args()\n\n        # Project to 4h.\n",
        "        args = get_args()\n"
        "        # Gated MLP: one fused gate+up projection, 2*ffn wide. On each tensor-parallel\n"
        "        # rank the first half of its output is the gate, the second half the up projection.\n"
        f"        gate_and_up = 2 if {test} else 1\n\n        # Project to 4h.\n",
    ).replace(
        "            args.ffn_hidden_size,\n",
        "            gate_and_up * args.ffn_hidden_size,\n",
    ).replace(
        "            enable_expert_tensor_parallelism=enable_expert_tensor_parallelism\n            )\n",
        "            enable_expert_tensor_parallelism=enable_expert_tensor_parallelism,\n"
        "            stride=gate_and_up,\n"
        "            bias=not args.no_bias\n            )\n",
    )
    check(both, MLP, after)


ATTENTION = '''
class ParallelAttention(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, layer_number):
        super(ParallelAttention, self).__init__()
        args = get_args()
        self.hidden_size_per_attention_head = mpu.divide(projection_size, args.num_attention_heads)
        self.core_attention = CoreAttention(self.layer_number, self.attn_mask_type)

    def sub_forward(self, hidden_states, attention_mask, layer_past=None,
                get_key_value=False, encoder_output=None, alibi=None):
        if self.attention_type == AttnType.self_attn:
            mixed_x_layer = self.query_key_value(hidden_states)
            (query_layer,
             key_layer,
             value_layer) = mpu.split_tensor_along_last_dim(mixed_x_layer, 3)
        else:
            query_layer = self.query(hidden_states)

        if layer_past is not None:
            past_key, past_value = layer_past
            key_layer = torch.cat((past_key.type_as(key_layer), key_layer), dim=0)
        context_layer = self.core_attention(query_layer, key_layer, value_layer, attention_mask)
        output, bias = self.dense(context_layer)
        return output, bias, None

    def forward(self, hidden_states, attention_mask, layer_past=None,
                get_key_value=False, encoder_output=None, alibi=None):
        output, bias, present = self.sub_forward(hidden_states, attention_mask, layer_past)
        return output, bias
'''


def test_rotary_goes_where_sub_forward_splits_query_and_key(check, chain):
    after = ATTENTION.replace(
        "        self.core_attention = CoreAttention(self.layer_number, self.attn_mask_type)\n",
        "        self.core_attention = CoreAttention(self.layer_number, self.attn_mask_type)\n"
        "        # Rotary position embedding (applied to query and key in forward).\n"
        "        self.rotary_emb = None\n"
        f"        if {ROTARY}:\n"
        "            self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head, theta=args.rope_theta)\n",
    ).replace(
        "            query_layer = self.query(hidden_states)\n\n",
        "            query_layer = self.query(hidden_states)\n"
        "        # Rotary position embedding: rotate query and key [sq, b, np, hn].\n"
        "        if self.rotary_emb is not None:\n"
        "            offset = 0 if layer_past is None else layer_past[0].size(0)  # cached keys are rotated already\n"
        "            query_layer, key_layer = self.rotary_emb(query_layer, key_layer, offset=offset)\n\n",
    )
    both = chain(partial(AddRotaryEmbedding, cls="ParallelAttention", test=ROTARY,
                         head_dim="self.hidden_size_per_attention_head", theta="args.rope_theta"),
                 partial(ApplyRotaryEmbedding, cls="ParallelAttention", func="sub_forward"))
    check(both, ATTENTION, after)


HELPER = '''
def bias_dropout_add(x, bias, residual, prob, training):
    # type: (Tensor, Tensor, Tensor, float, bool) -> Tensor
    x = x + bias if bias is not None else x
    out = torch.nn.functional.dropout(x , p=prob, training=training)
    return residual + out
'''


def test_an_already_guarded_bias_add_only_gets_its_type(check):
    after = HELPER.replace("(Tensor, Tensor, Tensor, float, bool)", "(Tensor, Optional[Tensor], Tensor, float, bool)")
    check(partial(OptionalBiasParameter, func="bias_dropout_add"), HELPER, after)


EMBEDDING = '''
class Embedding(MegatronModule):
    def __init__(self, hidden_size, vocab_size, max_sequence_length, embedding_dropout_prob,
                 init_method, num_tokentypes=0, use_position=True):
        super(Embedding, self).__init__()
        self.use_position = use_position

        args = get_args()

        if self.use_position:
            self.position_embeddings = torch.nn.Embedding(max_sequence_length, self.hidden_size)
            self._position_embeddings_key = 'position_embeddings'

    def state_dict_for_save_checkpoint(self, destination=None, prefix='', keep_vars=False):
        state_dict_ = {}
        state_dict_[self._position_embeddings_key] \\
            = self.position_embeddings.state_dict(
                destination, prefix, keep_vars)
        return state_dict_
'''


def test_the_embeddings_own_gate_is_turned_off_with_rotary(check):
    after = EMBEDDING.replace(
        "        args = get_args()\n\n",
        "        args = get_args()\n"
        "        # rotary positions are applied in attention: no learned table\n"
        f"        if {ROTARY}:\n"
        "            self.use_position = False\n\n",
    )
    check(partial(NarrowPositionGate, cls="Embedding", gate="self.use_position", test=ROTARY), EMBEDDING, after)


def test_checkpoint_guard_uses_the_trees_gate(check):
    after = EMBEDDING.replace(
        "        state_dict_[self._position_embeddings_key] \\\n"
        "            = self.position_embeddings.state_dict(\n"
        "                destination, prefix, keep_vars)\n",
        "        if self.use_position:\n"
        "            state_dict_[self._position_embeddings_key] \\\n"
        "                = self.position_embeddings.state_dict(\n"
        "                    destination, prefix, keep_vars)\n",
    )
    check(partial(GuardPositionsState, cls="Embedding", func="state_dict_for_save_checkpoint",
                  test="self.use_position"), EMBEDDING, after)


def test_narrowing_needs_the_gate(refuses):
    source = EMBEDDING.replace("        self.use_position = use_position\n", "")
    error = refuses(partial(NarrowPositionGate, cls="Embedding", gate="self.use_position", test=ROTARY), source)
    assert "self.use_position" in error.found


PARSE = '''
def parse_args(extra_args_provider=None, defaults={}, ignore_unknown_args=False):
    args = parser.parse_args()
    # Check required arguments.
    required_args = ['num_layers', 'hidden_size', 'num_attention_heads',
                     'max_position_embeddings']
    for req_arg in required_args:
        _check_arg_is_not_none(args, req_arg)
    if args.position_embedding_type == PositionEmbeddingType.rotary:
        assert args.max_position_embeddings is None
    return args
'''


def test_a_required_argument_the_checks_forbid_with_rotary_stops_being_required(check):
    after = PARSE.replace(
        "                     'max_position_embeddings']\n",
        "                     'max_position_embeddings']\n"
        "    # max_position_embeddings is not required here: the checks below forbid it then\n"
        f"    if {ROTARY}:\n"
        "        required_args.remove('max_position_embeddings')\n",
    )
    check(partial(A.OptionalRequiredArg, func="parse_args", name="max_position_embeddings", test=ROTARY), PARSE, after)


def test_optional_required_arg_needs_the_list(refuses):
    source = PARSE.replace("'max_position_embeddings']", "]")
    error = refuses(partial(A.OptionalRequiredArg, func="parse_args", name="max_position_embeddings", test=ROTARY), source)
    assert "required_args" in error.found


def test_the_habana_helper_with_an_optional_bias_runs_under_torchscript(tmp_path, monkeypatch):
    """Habana's guard was there, but a scripted caller typed the bias a plain Tensor."""
    import importlib

    import torch

    from tests.rewrites.conftest import run

    source = "import torch\n" + HELPER + '''

@torch.jit.script
def bias_dropout_add_fused_train(x, bias, residual, prob):
    # type: (Tensor, Tensor, Tensor, float) -> Tensor
    return bias_dropout_add(x, bias, residual, prob, True)
'''
    for func in ("bias_dropout_add", "bias_dropout_add_fused_train"):
        source = run(OptionalBiasParameter(func=func), source)
    (tmp_path / "habana_helpers.py").write_text(source)  # TorchScript reads the source file
    monkeypatch.syspath_prepend(str(tmp_path))
    helpers = importlib.import_module("habana_helpers")
    x = torch.ones(2, 3)
    assert torch.equal(helpers.bias_dropout_add_fused_train(x, None, x, 0.0), 2 * x)
    assert torch.equal(helpers.bias_dropout_add_fused_train(x, torch.ones(3), x, 0.0), 3 * x)
