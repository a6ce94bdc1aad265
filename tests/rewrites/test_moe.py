"""Before/after tests of the MoE rewrites (porter/differences/moe/rewrites.py) on the sample tree's shapes, and
the generated helpers that move the experts in and out of the nested checkpoint dict."""

import importlib.util
from functools import partial

import torch

from porter.differences.moe import rewrites as E
from porter.render import environment

LAYER = '''
class ParallelTransformerLayer(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, layer_number, num_experts=1):
        args = get_args()
        self.post_attention_layernorm = LayerNorm(args.hidden_size)

        self.num_experts = num_experts
        assert num_experts == 1, 'mixture-of-experts is not supported here'
        self.mlp = ParallelMLP(init_method,
                               output_layer_init_method)

    def forward(self, hidden_states, attention_mask=None):
        layernorm_output = self.post_attention_layernorm(hidden_states)
        moe_loss = torch.tensor(0.0, device=layernorm_output.device,
                                dtype=layernorm_output.dtype)
        mlp_output, mlp_bias = self.mlp(layernorm_output)
        output = mlp_output + hidden_states
        return output, moe_loss
'''

STACK = '''
class ParallelTransformer(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, num_experts=[1]):
        args = get_args()

        def build_layer(layer_number, n_e):
            return ParallelTransformerLayer(init_method, output_layer_init_method, layer_number, num_experts=n_e)

        assert all(n == 1 for n in num_experts), \\
            'mixture-of-experts is not supported here'
        # Layer numbers are 1-based and global across pipeline stages.
        self.layers = torch.nn.ModuleList(
            [build_layer(i + 1 + offset, 1) for i in range(self.num_layers)])
'''

ARGUMENTS = '''
def parse_args(extra_args_provider=None, defaults={}):
    args = parser.parse_args()
    for key in defaults:
        setattr(args, key, defaults[key])
    if args.fp32_residual_connection:
        assert args.fp16 or args.bf16
    assert all(n == 1 for n in args.num_experts), \\
        'this tree has no mixture-of-experts layers'

    _print_args(args)
    return args
'''

SPARSE = partial(E.SparseMLP, cls="ParallelTransformerLayer", experts="num_experts", topk="args.topk",
                 expert_parallel="args.moe_expert_parallel_size", normalize="args.moe_norm_topk_prob",
                 expert_width="args.moe_ffn_hidden_size")


def test_the_layer_wraps_its_mlp_in_deepspeeds_moe_layer_where_the_tree_refused_experts(check, chain):
    check(chain(partial(E.DropExpertsRefusal, cls="ParallelTransformerLayer", func="__init__", name="num_experts"),
                SPARSE), LAYER, LAYER.replace('''
        self.num_experts = num_experts
        assert num_experts == 1, 'mixture-of-experts is not supported here'
        self.mlp = ParallelMLP(init_method,
                               output_layer_init_method)
''', '''
        self.num_experts = num_experts
        # Mixture of experts: DeepSpeed's MoE layer holds the experts (copies of ParallelMLP, sharded
        # over expert-parallel ranks) and moves the tokens; the model's router takes its gate's
        # place, and every expert is drawn on its own (megatron/model/mixture_of_experts.py).
        if num_experts > 1:
            self.mlp = MoE(args.hidden_size,
                           built_at_width(args, args.moe_ffn_hidden_size, lambda: ParallelMLP(init_method, output_layer_init_method)),
                           num_experts=num_experts,
                           ep_size=args.moe_expert_parallel_size,
                           enable_expert_tensor_parallelism=args.tensor_model_parallel_size > 1)
            self.mlp.deepspeed_moe.gate = Router(args.hidden_size, num_experts, k=args.topk,
                                                 normalize=args.moe_norm_topk_prob, std=args.init_method_std,
                                                 seed=(args.seed, layer_number), pad_to=args.tensor_model_parallel_size)
            draw_experts(self.mlp, args.init_method_std, args.num_layers, (args.seed, layer_number),
                         args.tensor_model_parallel_size)
        else:
            self.mlp = ParallelMLP(init_method, output_layer_init_method)
'''))


def test_the_forward_takes_the_routing_statistics_as_the_layers_moe_loss(check):
    check(partial(E.MoEForward, cls="ParallelTransformerLayer"), LAYER, LAYER.replace('''
        mlp_output, mlp_bias = self.mlp(layernorm_output)
''', '''
        if self.num_experts == 1:
            mlp_output, mlp_bias = self.mlp(layernorm_output)
        else:
            # DeepSpeed's MoE layer: (output, the router's routing statistics, tokens per expert), no
            # bias; the model pools every MoE layer's statistics into its load-balancing loss
            mlp_output, moe_loss, _ = self.mlp(layernorm_output)
            mlp_bias = None
'''))


def test_each_layer_gets_its_expert_count(check, chain):
    check(chain(partial(E.DropExpertsRefusal, cls="ParallelTransformer", func="__init__", name="num_experts"),
                partial(E.ExpertsPerLayer, cls="ParallelTransformer", experts="num_experts",
                        interval="args.expert_interval", dense_layers="args.moe_dense_layers")), STACK, STACK.replace('''
        assert all(n == 1 for n in num_experts), \\
            'mixture-of-experts is not supported here'
        # Layer numbers are 1-based and global across pipeline stages.
        self.layers = torch.nn.ModuleList(
            [build_layer(i + 1 + offset, 1) for i in range(self.num_layers)])
''', '''
        # Layer numbers are 1-based and global across pipeline stages.
        self.layers = torch.nn.ModuleList(
            [build_layer(i + 1 + offset, experts_of_layer(num_experts, i + 1 + offset, args.expert_interval, args.moe_dense_layers)) for i in range(self.num_layers)])
'''))


def test_the_argument_checks_stop_refusing_experts(check):
    check(partial(E.DropExpertsRefusal, cls=None, func="parse_args", name="args.num_experts"), ARGUMENTS,
          ARGUMENTS.replace('''    assert all(n == 1 for n in args.num_experts), \\
        'this tree has no mixture-of-experts layers'
''', ""))


def test_a_layer_without_a_parallel_mlp_is_refused_by_construct(refuses):
    error = refuses(SPARSE, LAYER.replace("ParallelMLP(", "SwitchMLP("))
    assert "ParallelTransformerLayer.__init__" in error.construct and "ParallelMLP" in error.construct
    assert "no `self.<mlp> = ParallelMLP(...)`" in error.found


def test_a_layer_and_stack_without_microsofts_num_experts_plumbing_are_refused(refuses):
    error = refuses(SPARSE, LAYER.replace(", num_experts=1):", "):"))
    assert "takes no `num_experts` parameter" in error.found
    error = refuses(SPARSE, LAYER.replace("layer_number, num_experts=1):", "number, num_experts=1):"))
    assert "takes no `layer_number` parameter" in error.found
    error = refuses(partial(E.ExpertsPerLayer, cls="ParallelTransformer", experts="num_experts"),
                    STACK.replace(", num_experts=[1]):", "):"))
    assert "takes no `num_experts` parameter" in error.found


def test_a_forward_without_moe_loss_is_refused(refuses):
    error = refuses(partial(E.MoEForward, cls="ParallelTransformerLayer"), LAYER.replace(
        '''        moe_loss = torch.tensor(0.0, device=layernorm_output.device,
                                dtype=layernorm_output.dtype)
''', "").replace("return output, moe_loss", "return output"))
    assert "moe_loss" in error.found


def _helpers():
    """The generated megatron/model/mixture_of_experts.py, imported."""
    source = environment().get_template("mixture_of_experts.py.j2").render()
    spec = importlib.util.spec_from_loader("mixture_of_experts", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "mixture_of_experts.py", "exec"), module.__dict__)
    return module


def test_experts_leave_the_nested_checkpoint_dict_by_module_path_and_come_back():
    helpers = _helpers()
    moe = "layers.0.mlp.deepspeed_moe"
    nested = {"language_model": {"embedding": {"word_embeddings": {"weight": torch.ones(2)}},
                                 "encoder": {f"{moe}.gate.wg.weight": torch.zeros(4, 2),
                                             f"{moe}.experts.deepspeed_experts.1.dense_h_to_4h.weight": torch.ones(3),
                                             "final_layernorm.weight": torch.ones(2)}}}
    kept = helpers.without_experts(nested)
    assert f"{moe}.gate.wg.weight" in kept["language_model"]["encoder"]  # the router stays with the model
    assert not any("experts" in k for k in kept["language_model"]["encoder"])
    flat = {f"language_model.encoder.{moe}.experts.deepspeed_experts.1.dense_h_to_4h.weight": torch.full((3,), 2.0)}
    back = helpers.with_experts({**kept, **flat})
    assert set(back) == {"language_model"}
    assert torch.equal(back["language_model"]["encoder"][f"{moe}.experts.deepspeed_experts.1.dense_h_to_4h.weight"],
                       torch.full((3,), 2.0))
    assert [helpers.experts_of_layer([8], n) for n in (1, 2)] == [8, 8]
    assert [helpers.experts_of_layer([1, 4], n) for n in (1, 2)] == [1, 4]
    # HF's decoder_sparse_step 2 (experts where (index + 1) % 2 == 0) and mlp_only_layers [3]
    assert [helpers.experts_of_layer([8], n, 2, [3]) for n in (1, 2, 3, 4, 5, 6)] == [1, 8, 1, 1, 1, 8]
