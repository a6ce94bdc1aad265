"""Profile detection of the model code's shape, on snippets we write in each variant's style."""

import textwrap

import libcst as cst

from porter.cst.find import class_named
from porter.differences.bias import detect as B
from porter.differences.rotary import detect as R
from porter.profile import model as M


def parse(source: str) -> cst.Module:
    return cst.parse_module(textwrap.dedent(source))


MPU_STYLE = parse('''
from megatron import mpu
from megatron.model import LayerNorm

class ParallelMLP(MegatronModule):
    def __init__(self, init_method, output_layer_init_method):
        pass

    def forward(self, hidden_states):
        intermediate_parallel, bias_parallel = self.dense_h_to_4h(hidden_states)
        intermediate_parallel = self.activation_func(intermediate_parallel + bias_parallel)
        return self.dense_4h_to_h(intermediate_parallel)

class ParallelAttention(MegatronModule):
    def forward(self, hidden_states, attention_mask, layer_past=None):
        mixed_x_layer, _ = self.query_key_value(hidden_states)
        (query_layer, key_layer, value_layer) = mpu.split_tensor_along_last_dim(mixed_x_layer, 3)
        return query_layer

def bias_dropout_add(x, bias, residual, prob, training):
    # type: (Tensor, Tensor, Tensor, float, bool) -> Tensor
    return residual + torch.nn.functional.dropout(x + bias, p=prob, training=training)

class ParallelTransformerLayer(MegatronModule):
    def __init__(self, init_method, output_layer_init_method, layer_number):
        self.attention = ParallelAttention(init_method, output_layer_init_method, layer_number)

    def forward(self, hidden_states, attention_mask):
        attention_output, attention_bias = self.attention(hidden_states, attention_mask)
        return bias_dropout_add_func(attention_output, attention_bias.expand_as(hidden_states), hidden_states, 0.1)
''')

CORE_STYLE = parse('''
from typing import Optional
from megatron.core import parallel_state, tensor_parallel, mpu
from megatron.model import LayerNorm, RMSNorm

class ParallelMLP(MegatronModule):
    def __init__(self, config, moe=False):
        pass

    def forward(self, hidden_states):
        intermediate_parallel, bias_parallel = self.dense_h_to_4h(hidden_states)
        if bias_parallel is not None:
            intermediate_parallel = intermediate_parallel + bias_parallel
        return self.dense_4h_to_h(self.activation_func(intermediate_parallel))

class CoreAttention(MegatronModule):
    pass

class ParallelAttention(MegatronModule):
    def _checkpointed_attention_forward(self, query_layer, key_layer, value_layer):
        def custom_forward(*inputs):
            query_layer, key_layer = inputs[0], inputs[1]
        return custom_forward

    def forward(self, hidden_states, attention_mask, rotary_pos_emb=None):
        mixed_x_layer, _ = self.query_key_value(hidden_states)
        query_layer, key_layer, value_layer = self.split_tensor(mixed_x_layer)
        return query_layer

def bias_dropout_add(x, bias, residual, prob, training):
    # type: (Tensor, Optional[Tensor], Tensor, float, bool) -> Tensor
    if bias is not None:
        x = x + bias
    return residual + torch.nn.functional.dropout(x, p=prob, training=training)

class ParallelTransformerLayer(MegatronModule):
    def __init__(self, config, layer_number):
        self.self_attention = ParallelAttention(config, layer_number)

    def forward(self, hidden_states, attention_mask):
        attention_output, attention_bias = self.self_attention(hidden_states, attention_mask)
        if attention_bias is not None:
            attention_bias = attention_bias.expand_as(hidden_states)
        return None if attention_bias is None else attention_bias.expand_as(hidden_states)
''')


def test_mpu_style_with_init_method_constructors_and_an_unguarded_bias_path():
    assert M.parallel_style(MPU_STYLE) == "mpu"
    assert M.ctor_style(MPU_STYLE) == "init_method"
    assert M.attention_attr(MPU_STYLE) == "attention"
    assert M.qk_method(MPU_STYLE) == "forward"
    assert B.mlp_bias_unguarded(MPU_STYLE)
    assert B.expand_as_unguarded(MPU_STYLE)
    assert B.plain_bias_helpers(MPU_STYLE) == ("bias_dropout_add",)
    assert M.layernorm_import(MPU_STYLE) == "from megatron.model import LayerNorm"


def test_core_style_with_a_config_and_a_none_safe_bias_path():
    assert M.parallel_style(CORE_STYLE) == "core"
    assert M.ctor_style(CORE_STYLE) == "config"
    assert M.attention_attr(CORE_STYLE) == "self_attention"
    # the method that projects, not the checkpointing helper that also binds the names
    assert M.qk_method(CORE_STYLE) == "forward"
    assert not B.mlp_bias_unguarded(CORE_STYLE)
    assert not B.expand_as_unguarded(CORE_STYLE)
    assert B.plain_bias_helpers(CORE_STYLE) == ()
    assert M.layernorm_import(CORE_STYLE) == "from megatron.model import LayerNorm"  # just that name


HABANA = parse('''
from megatron import mpu
from megatron.model import LayerNorm

class ParallelAttention(MegatronModule):
    def sub_forward(self, hidden_states, attention_mask, layer_past=None):
        mixed_x_layer = self.query_key_value(hidden_states)
        (query_layer, key_layer, value_layer) = mpu.split_tensor_along_last_dim(mixed_x_layer, 3)
        return query_layer

    def forward(self, hidden_states, attention_mask, layer_past=None):
        return self.sub_forward(hidden_states, attention_mask, layer_past)

class CoreAttention(MegatronModule):
    pass
''')
HABANA_LAYERS = parse('''
class ColumnParallelLinear(torch.nn.Module):
    def forward(self, input_):
        output_parallel = F.linear(input_parallel, self.weight, self.bias)
        if self.gather_output:
            output = gather_from_tensor_model_parallel_region(output_parallel)
        else:
            output = output_parallel
        return output
''')
HABANA_EMBEDDING = parse('''
from megatron.model.enums import LayerType, AttnMaskType

def get_language_model(num_tokentypes, add_pooler, encoder_attn_mask_type, init_method=None,
                       pre_process=True, post_process=True, num_experts=1):
    pass

class Embedding(MegatronModule):
    def __init__(self, hidden_size, vocab_size, max_sequence_length, embedding_dropout_prob,
                 init_method, num_tokentypes=0, use_position=True):
        self.use_position = use_position
        if self.use_position:
            self.position_embeddings = torch.nn.Embedding(max_sequence_length, self.hidden_size)
''')
HABANA_GPT = parse('''
from .enums import AttnMaskType

def CrossEntropy(output, labels):
    pass

class GPTModelPipe(PipelineModule, MegatronModule):
    def __init__(self, num_tokentypes=0, parallel_output=True):
        super().__init__(layers=self.specs,
                         loss_fn=CrossEntropy,
                         topology=topo,
                         activation_checkpoint_interval=interval,
                         partition_method='type:transformer',
                         use_hpu=args.device.type=='hpu')
''')


def test_habana_splits_attention_and_returns_the_output_alone():
    assert M.qk_method(HABANA) == "sub_forward"
    assert class_named(HABANA, "CoreAttention") is not None
    assert not M.column_returns_bias(HABANA_LAYERS)
    assert M.embedding_params(HABANA_EMBEDDING)[-1] == "use_position"
    assert R.position_gate(HABANA_EMBEDDING) == "self.use_position"
    assert "num_experts" in M.get_language_model_params(HABANA_EMBEDDING)
    assert M.pipe_keywords(HABANA_GPT) == ("use_hpu=args.device.type=='hpu'",)
    assert M.loss_fn(HABANA_GPT) == "CrossEntropy"
    assert M.enums_module(HABANA_GPT) == "megatron.model.enums"


BIGSCIENCE_GPT = parse('''
from megatron.enums import AttnMaskType
from megatron.model.fused_layer_norm import MixedFusedLayerNorm as LayerNorm

def get_cross_entropy(is_prefix: bool):
    pass

class GPTModelPipe(PipelineModule, MegatronModule):
    def __init__(self, num_tokentypes=0, parallel_output=True, attn_mask_type=AttnMaskType.causal):
        super().__init__(layers=self.specs,
                         loss_fn=get_cross_entropy(is_prefix=attn_mask_type is AttnMaskType.prefix),
                         topology=topo,
                         activation_checkpoint_interval=interval,
                         partition_method=partition_method)
''')


def test_bigscience_imports_layernorm_from_its_module_and_builds_its_loss():
    assert M.layernorm_import(BIGSCIENCE_GPT) == "from megatron.model.fused_layer_norm import MixedFusedLayerNorm as LayerNorm"
    assert M.loss_fn(BIGSCIENCE_GPT) == "get_cross_entropy(is_prefix=False)"
    assert M.enums_module(BIGSCIENCE_GPT) == "megatron.enums"
    assert M.pipe_keywords(BIGSCIENCE_GPT) == ()
