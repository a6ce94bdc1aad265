"""Before/after tests of the latent attention rewrite (porter/differences/latent_attention/rewrites.py)."""

from functools import partial

from porter.differences.latent_attention.rewrites import LatentSelfAttention

LAYER = '''
class ParallelTransformerLayer(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, layer_number, layer_type=LayerType.encoder):
        args = get_args()
        self.input_layernorm = norm_class(args.hidden_size)

        self.attention = ParallelAttention(
            init_method,
            output_layer_init_method,
            layer_number,
            attention_type=AttnType.self_attn)
        if self.layer_type == LayerType.decoder:
            self.inter_attention = ParallelAttention(
                init_method, output_layer_init_method, layer_number, attention_type=AttnType.cross_attn)
'''

BUILT = '''
class ParallelTransformerLayer(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, layer_number, layer_type=LayerType.encoder):
        args = get_args()
        self.input_layernorm = norm_class(args.hidden_size)

        # Multi-head latent attention (DeepSeek): keys and values from a compressed latent,
        # a rotary part shared by every head (megatron/model/latent_attention.py).
        if args.multi_latent_attention:
            self.attention = LatentAttention(
                init_method,
                output_layer_init_method,
                layer_number,
                attention_type=AttnType.self_attn)
        else:
            self.attention = ParallelAttention(
                init_method,
                output_layer_init_method,
                layer_number,
                attention_type=AttnType.self_attn)
        if self.layer_type == LayerType.decoder:
            self.inter_attention = ParallelAttention(
                init_method, output_layer_init_method, layer_number, attention_type=AttnType.cross_attn)
'''

MAKE = partial(LatentSelfAttention, cls="ParallelTransformerLayer", attr="attention",
               test="args.multi_latent_attention")


def test_the_layer_builds_latent_attention_by_switch_and_keeps_cross_attention(check):
    check(MAKE, LAYER, BUILT)


def test_a_layer_without_its_self_attention_statement_is_refused_by_construct(refuses):
    error = refuses(MAKE, LAYER.replace("self.attention = ParallelAttention(", "self.attention = CoreAttention("))
    assert "ParallelAttention" in error.construct and "no `self.attention = ParallelAttention(...)`" in error.found
