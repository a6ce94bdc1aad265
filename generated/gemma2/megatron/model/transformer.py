# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Tensor-parallel GPT transformer blocks.

Shapes: s = sequence, b = micro batch, h = hidden, n = heads,
p = tensor parallel size, np = n / p, hn = h / n, hp = h / p.
Inside the stack activations are [s, b, h].
"""

import math

import torch
import torch.nn.functional as F

from megatron import get_args
from megatron import mpu
from .module import MegatronModule
from megatron.model.enums import AttnMaskType, LayerType, AttnType
from megatron.model import LayerNorm, RMSNorm
from megatron.model.fused_softmax import FusedScaleMaskSoftmax
from megatron.model.fused_bias_gelu import bias_gelu_impl
from megatron.model.utils import attention_mask_func, openai_gelu, erf_gelu
import deepspeed
from deepspeed.accelerator import get_accelerator
from megatron.model.swiglu import geglu, swiglu
from megatron.model.rotary_embedding import RotaryEmbedding
from megatron.model.fused_attention import fused_attention, fused_attention_applies
from megatron.model.grouped_attention import repeat_key_value, split_query_key_value
from megatron.model.sliding_window import layer_window, sliding_window_mask
from megatron.model.softcap import softcap_scores


class ParallelMLP(MegatronModule):
    """h -> ffn (split by columns) -> GeLU -> h (split by rows).

    The output bias is returned separately so it can be fused with the
    dropout and residual add that follow.
    """

    def __init__(self, init_method, output_layer_init_method):
        super(ParallelMLP, self).__init__()
        args = get_args()
        # Gated MLP: one fused gate+up projection, 2*ffn wide. On each tensor-parallel
        # rank the first half of its output is the gate, the second half the up projection.
        gate_and_up = 2 if args.activation_func_type in ('swiglu', 'geglu') else 1

        self.dense_h_to_4h = mpu.ColumnParallelLinear(
            args.hidden_size,
            gate_and_up * args.ffn_hidden_size,
            gather_output=False,
            init_method=init_method,
            skip_bias_add=True,
            stride=gate_and_up,
            bias=not args.no_bias)

        self.bias_gelu_fusion = args.bias_gelu_fusion
        self.activation_func = F.gelu
        if args.openai_gelu:
            self.activation_func = openai_gelu
        elif args.onnx_safe:
            self.activation_func = erf_gelu
        if args.activation_func_type == 'swiglu':
            self.activation_func = swiglu
        if args.activation_func_type == 'geglu':
            self.activation_func = geglu

        self.dense_4h_to_h = mpu.RowParallelLinear(
            args.ffn_hidden_size,
            args.hidden_size,
            input_is_parallel=True,
            init_method=output_layer_init_method,
            skip_bias_add=True,
            bias=not args.no_bias)

    def forward(self, hidden_states):
        # [s, b, ffn/p]
        intermediate_parallel, bias_parallel = self.dense_h_to_4h(hidden_states)

        if self.bias_gelu_fusion:
            intermediate_parallel = \
                bias_gelu_impl(intermediate_parallel, bias_parallel)
        else:
            intermediate_parallel = \
                self.activation_func(intermediate_parallel if bias_parallel is None else intermediate_parallel + bias_parallel)

        # [s, b, h]
        output, output_bias = self.dense_4h_to_h(intermediate_parallel)
        return output, output_bias


class ParallelAttention(MegatronModule):
    """Multi-head attention with heads split across tensor-parallel ranks.

    The fused QKV projection is laid out per head: for head i the output
    columns [i*3*hn, (i+1)*3*hn) hold q, k, v of that head back to back,
    so a column split keeps whole heads on each rank.
    """

    def __init__(self, init_method,
                 output_layer_init_method, layer_number,
                 attention_type=AttnType.self_attn,
                 attn_mask_type=AttnMaskType.padding):
        super(ParallelAttention, self).__init__()
        args = get_args()
        self.fp16 = args.fp16
        self.bf16 = args.bf16

        self.apply_query_key_layer_scaling = args.apply_query_key_layer_scaling
        self.attention_softmax_in_fp32 = args.attention_softmax_in_fp32
        if self.apply_query_key_layer_scaling:
            self.attention_softmax_in_fp32 = True
        self.layer_number = max(1, layer_number)
        self.attention_type = attention_type
        self.attn_mask_type = attn_mask_type
        self.num_attention_heads = args.num_attention_heads
        projection_size = args.kv_channels * args.num_attention_heads

        world_size = mpu.get_tensor_model_parallel_world_size()
        self.hidden_size_per_partition = mpu.divide(projection_size,
                                                    world_size)
        self.hidden_size_per_attention_head = mpu.divide(
            projection_size, args.num_attention_heads)
        self.num_attention_heads_per_partition = mpu.divide(
            args.num_attention_heads, world_size)
        # Grouped-query attention: ng key/value heads, each shared by np/ng query heads.
        self.num_query_groups = args.num_key_value_heads or args.num_attention_heads
        self.num_query_groups_per_partition = mpu.divide(self.num_query_groups, world_size)

        if attention_type == AttnType.self_attn:
            self.query_key_value = mpu.ColumnParallelLinear(
                args.hidden_size,
                projection_size + 2 * self.num_query_groups * self.hidden_size_per_attention_head,
                gather_output=False,
                init_method=init_method,
                bias=not args.no_bias)
        else:
            assert attention_type == AttnType.cross_attn
            self.query = mpu.ColumnParallelLinear(
                args.hidden_size,
                projection_size,
                gather_output=False,
                init_method=init_method,
                bias=not args.no_bias)
            self.key_value = mpu.ColumnParallelLinear(
                args.hidden_size,
                2 * projection_size,
                gather_output=False,
                init_method=init_method,
                bias=not args.no_bias)

        # Optionally divide the scores by the layer number as well and undo
        # it inside the fp32 softmax (keeps fp16 scores in range).
        coeff = None
        # the scores are scaled by 1/sqrt(--query-pre-attn-scalar) when it is set (Gemma-2/3)
        self.norm_factor = math.sqrt(args.query_pre_attn_scalar or self.hidden_size_per_attention_head)
        if self.apply_query_key_layer_scaling:
            coeff = self.layer_number
            self.norm_factor *= coeff

        self.scale_mask_softmax = FusedScaleMaskSoftmax(
            self.fp16, self.bf16,
            self.attn_mask_type,
            args.masked_softmax_fusion,
            attention_mask_func,
            self.attention_softmax_in_fp32,
            coeff)

        self.attention_dropout = torch.nn.Dropout(args.attention_dropout)

        self.dense = mpu.RowParallelLinear(
            projection_size,
            args.hidden_size,
            input_is_parallel=True,
            init_method=output_layer_init_method,
            skip_bias_add=True,
            bias=not args.no_bias)
        # Rotary position embedding (applied to query and key in forward).
        self.rotary_emb = None
        if args.position_embedding_type == 'rotary':
            self.rotary_emb = RotaryEmbedding(self.hidden_size_per_attention_head, theta=args.rope_theta)
        # Sliding-window attention: keys a query sees, itself included (None or 0: all); every N-th layer has none (--sliding-window-pattern).
        self.sliding_window = layer_window(args.sliding_window, args.sliding_window_pattern, layer_number)
        # Soft-capped attention scores (Gemma-2): cap * tanh(scores / cap); None: none.
        self.attention_softcap = args.attention_softcap

    def forward(self, hidden_states, attention_mask, layer_past=None,
                get_key_value=False, encoder_output=None):
        # input: [sq, b, h]

        # ---- projections --------------------------------------------------
        if self.attention_type == AttnType.self_attn:
            # [sq, b, h] -> [sq, b, np * 3 * hn]
            mixed_x_layer, _ = self.query_key_value(hidden_states)

            # [sq, b, ng * (np/ng + 2) * hn] -> q [sq, b, np, hn], k and v [sq, b, ng, hn]
            query_layer, key_layer, value_layer = split_query_key_value(
                mixed_x_layer, self.num_query_groups_per_partition, self.hidden_size_per_attention_head)
        else:
            # keys/values come from the encoder: [sk, b, np * 2 * hn]
            mixed_kv_layer, _ = self.key_value(encoder_output)
            new_tensor_shape = mixed_kv_layer.size()[:-1] + \
                (self.num_attention_heads_per_partition,
                 2 * self.hidden_size_per_attention_head)
            mixed_kv_layer = mixed_kv_layer.view(*new_tensor_shape)
            (key_layer,
             value_layer) = mpu.split_tensor_along_last_dim(mixed_kv_layer, 2)

            query_layer, _ = self.query(hidden_states)
            new_tensor_shape = query_layer.size()[:-1] + \
                (self.num_attention_heads_per_partition,
                 self.hidden_size_per_attention_head)
            query_layer = query_layer.view(*new_tensor_shape)
        # Rotary position embedding: rotate query and key [sq, b, np, hn].
        if self.rotary_emb is not None:
            offset = 0 if layer_past is None else layer_past[0].size(0)  # cached keys are rotated already
            query_layer, key_layer = self.rotary_emb(query_layer, key_layer, offset=offset)

        # ---- incremental decoding cache ------------------------------------
        if layer_past is not None:
            past_key, past_value = layer_past
            key_layer = torch.cat((past_key.type_as(key_layer), key_layer),
                                  dim=0)
            value_layer = torch.cat((past_value.type_as(value_layer),
                                     value_layer), dim=0)
        if get_key_value:
            present = (key_layer, value_layer)

        # Sliding-window attention: keys older than the window are masked out too.
        attention_mask = sliding_window_mask(attention_mask, self.sliding_window, key_layer)
        # Fused attention where it computes what the code below computes; see fused_attention.py.
        if self.attention_softcap is None and (layer_past is None and not get_key_value
                and fused_attention_applies(query_layer, self.scale_mask_softmax, self.attention_dropout)):
            # [sq, b, np, hn] -> [sq, b, hp]
            context_layer = fused_attention(query_layer, key_layer, value_layer, attention_mask,
                                            alpha=(1.0 / self.norm_factor), softmax=self.scale_mask_softmax)
        else:
            # the attention math below takes one key/value head per query head
            key_layer, value_layer = repeat_key_value(key_layer, value_layer, self.num_attention_heads_per_partition)
            # ---- scores: [b, np, sq, sk] ---------------------------------------
            b, heads = query_layer.size(1), query_layer.size(2)
            sq, sk = query_layer.size(0), key_layer.size(0)
            output_size = (b, heads, sq, sk)

            # fold batch and heads: [s, b * np, hn]
            query_layer = query_layer.reshape(sq, b * heads, -1)
            key_layer = key_layer.reshape(sk, b * heads, -1)

            matmul_result = torch.empty(
                b * heads, sq, sk,
                dtype=query_layer.dtype,
                device=get_accelerator().current_device_name())

            # [b * np, sq, hn] x [b * np, hn, sk] -> [b * np, sq, sk]
            matmul_result = torch.baddbmm(
                matmul_result,
                query_layer.transpose(0, 1),
                key_layer.transpose(0, 1).transpose(1, 2),
                beta=0.0, alpha=(1.0 / self.norm_factor))

            attention_scores = matmul_result.view(*output_size)

            # With a cache the mask must match the (longer) key length; during
            # single-token steps only the last query row is needed.
            if get_key_value:
                with torch.no_grad():
                    if layer_past is not None:
                        attention_mask = attention_mask[
                            ..., sk - 1, :sk].unsqueeze(2)
                    else:
                        attention_mask = attention_mask[..., :sk, :sk]

            # Soft-capped scores (Gemma-2): cap * tanh(scores / cap), before the mask and softmax.
            attention_scores = softcap_scores(attention_scores, self.attention_softcap, self.scale_mask_softmax)
            # ---- probabilities ---------------------------------------------------
            attention_probs = self.scale_mask_softmax(attention_scores,
                                                      attention_mask)

            # Dropout acts on this rank's heads, so it uses the per-rank stream.
            with mpu.get_cuda_rng_tracker().fork():
                attention_probs = self.attention_dropout(attention_probs)

            # ---- context: [sq, b, hp] -------------------------------------------
            hn = value_layer.size(3)
            value_layer = value_layer.reshape(sk, b * heads, hn)
            attention_probs = attention_probs.view(b * heads, sq, sk)

            # [b * np, sq, sk] x [b * np, sk, hn] -> [b * np, sq, hn]
            context_layer = torch.bmm(attention_probs, value_layer.transpose(0, 1))

            # -> [b, np, sq, hn] -> [sq, b, np, hn] -> [sq, b, hp]
            context_layer = context_layer.view(b, heads, sq, hn)
            context_layer = context_layer.permute(2, 0, 1, 3).contiguous()
            new_context_layer_shape = context_layer.size()[:-2] + \
                (self.hidden_size_per_partition,)
            context_layer = context_layer.view(*new_context_layer_shape)

        # ---- output projection ----------------------------------------------
        output, bias = self.dense(context_layer)

        if get_key_value:
            output = [output, present]

        return output, bias


def bias_dropout_add(x, bias, residual, prob, training):
    # type: (Tensor, Optional[Tensor], Tensor, float, bool) -> Tensor
    out = torch.nn.functional.dropout(x if bias is None else x + bias, p=prob, training=training)
    out = residual + out
    return out


def get_bias_dropout_add(training):
    def _bias_dropout_add(x, bias, residual, prob):
        return bias_dropout_add(x, bias, residual, prob, training)
    return _bias_dropout_add


@torch.jit.script
def bias_dropout_add_fused_train(x, bias, residual, prob):
    # type: (Tensor, Optional[Tensor], Tensor, float) -> Tensor
    return bias_dropout_add(x, bias, residual, prob, True)


@torch.jit.script
def bias_dropout_add_fused_inference(x, bias, residual, prob):
    # type: (Tensor, Optional[Tensor], Tensor, float) -> Tensor
    return bias_dropout_add(x, bias, residual, prob, False)


class ParallelTransformerLayer(MegatronModule):
    """Pre-LN block: x + attn(ln(x)), then + mlp(ln(.)).  Returns
    (output, moe_loss) where moe_loss is always zero here."""

    def __init__(self, init_method, output_layer_init_method,
                 layer_number, layer_type=LayerType.encoder,
                 self_attn_mask_type=AttnMaskType.padding, num_experts=1):
        args = get_args()
        norm_class = RMSNorm if args.layernorm_type == 'rmsnorm' else LayerNorm

        super(ParallelTransformerLayer, self).__init__()
        self.layer_number = layer_number
        self.layer_type = layer_type

        self.apply_residual_connection_post_layernorm \
            = args.apply_residual_connection_post_layernorm

        self.bf16 = args.bf16
        self.fp32_residual_connection = args.fp32_residual_connection

        self.input_layernorm = norm_class(
            args.hidden_size,
            eps=args.layernorm_epsilon)

        self.attention = ParallelAttention(
            init_method,
            output_layer_init_method,
            layer_number,
            attention_type=AttnType.self_attn,
            attn_mask_type=self_attn_mask_type)
        self.hidden_dropout = args.hidden_dropout
        self.bias_dropout_fusion = args.bias_dropout_fusion

        self.post_attention_layernorm = norm_class(
            args.hidden_size,
            eps=args.layernorm_epsilon)
        # Output norms (sandwich, Gemma-2/3; post, OLMo-2): the attention's and the MLP's outputs are normalised before each residual add (None: a pre-norm layer).
        self.attention_output_layernorm = None
        self.mlp_output_layernorm = None
        if args.norm_placement != 'pre':
            self.attention_output_layernorm = norm_class(args.hidden_size, eps=args.layernorm_epsilon)
            self.mlp_output_layernorm = norm_class(args.hidden_size, eps=args.layernorm_epsilon)

        if self.layer_type == LayerType.decoder:
            self.inter_attention = ParallelAttention(
                init_method,
                output_layer_init_method,
                layer_number,
                attention_type=AttnType.cross_attn)
            self.post_inter_attention_layernorm = norm_class(
                args.hidden_size,
                eps=args.layernorm_epsilon)

        self.num_experts = num_experts
        assert num_experts == 1, 'mixture-of-experts is not supported here'
        self.mlp = ParallelMLP(init_method,
                               output_layer_init_method)

    def forward(self, hidden_states, attention_mask=None,
                encoder_output=None, enc_dec_attn_mask=None,
                layer_past=None, get_key_value=False):
        # hidden_states: [s, b, h]

        layernorm_output = self.input_layernorm(hidden_states)
        attention_output, attention_bias = \
            self.attention(layernorm_output,
                           attention_mask,
                           layer_past=layer_past,
                           get_key_value=get_key_value)

        if get_key_value:
            attention_output, presents = attention_output

        if self.apply_residual_connection_post_layernorm:
            residual = layernorm_output
        else:
            residual = hidden_states

        # Scripted variants for speed; the plain closure otherwise.
        if self.bias_dropout_fusion:
            if self.training:
                bias_dropout_add_func = bias_dropout_add_fused_train
            else:
                bias_dropout_add_func = bias_dropout_add_fused_inference
        else:
            bias_dropout_add_func = get_bias_dropout_add(self.training)

        if self.attention_output_layernorm is not None:
            # Output norms: the attention output is normalised before the residual add.
            attention_output = self.attention_output_layernorm(attention_output)
        with torch.enable_grad():
            layernorm_input = bias_dropout_add_func(
                attention_output,
                attention_bias.expand_as(residual) if attention_bias is not None else None,
                residual,
                self.hidden_dropout)

        layernorm_output = self.post_attention_layernorm(layernorm_input)

        if self.layer_type == LayerType.decoder:
            attention_output, attention_bias = \
                self.inter_attention(layernorm_output,
                                     enc_dec_attn_mask,
                                     encoder_output=encoder_output)
            if self.apply_residual_connection_post_layernorm:
                residual = layernorm_output
            else:
                residual = layernorm_input

            with torch.enable_grad():
                layernorm_input = bias_dropout_add_func(
                    attention_output,
                    attention_bias.expand_as(residual) if attention_bias is not None else None,
                    residual,
                    self.hidden_dropout)

            layernorm_output = self.post_inter_attention_layernorm(
                layernorm_input)

        moe_loss = torch.tensor(0.0, device=layernorm_output.device,
                                dtype=layernorm_output.dtype)
        mlp_output, mlp_bias = self.mlp(layernorm_output)

        if self.apply_residual_connection_post_layernorm:
            residual = layernorm_output
        else:
            residual = layernorm_input

        if self.mlp_output_layernorm is not None:
            # Output norms: the mlp output is normalised before the residual add.
            mlp_output = self.mlp_output_layernorm(mlp_output)
        with torch.enable_grad():
            output = bias_dropout_add_func(
                mlp_output,
                mlp_bias.expand_as(residual) if mlp_bias is not None else None,
                residual,
                self.hidden_dropout)

        if get_key_value:
            output = [output, presents]

        return output, moe_loss


class ParallelTransformerLayerPipe(ParallelTransformerLayer):
    """Layer for DeepSpeed's pipeline engine.

    Given a bare tensor it uses the precomputed args.attn_mask and returns
    a bare tensor; given (hidden, mask) it passes the mask along.
    """

    def forward(self, inputs, **kwargs):
        assert torch.is_tensor(inputs) or isinstance(inputs, tuple)
        if torch.is_tensor(inputs) or len(inputs) == 1:
            if not hasattr(self, '_args'):
                self._args = get_args()
            hidden_states = inputs if torch.is_tensor(inputs) else inputs[0]
            attention_mask = self._args.attn_mask
            return super().forward(hidden_states, attention_mask, **kwargs)[0]
        if len(inputs) == 2:
            hidden_states, attention_mask = inputs
            return super().forward(hidden_states, attention_mask,
                                   **kwargs)[0], attention_mask
        raise RuntimeError(f'expected 1 or 2 inputs, got {len(inputs)}')


class ParallelTransformer(MegatronModule):
    """The stack of layers owned by this pipeline stage."""

    def __init__(self, init_method, output_layer_init_method,
                 layer_type=LayerType.encoder,
                 self_attn_mask_type=AttnMaskType.padding,
                 pre_process=True, post_process=True, num_experts=[1]):
        super(ParallelTransformer, self).__init__()
        args = get_args()
        norm_class = RMSNorm if args.layernorm_type == 'rmsnorm' else LayerNorm

        self.bf16 = args.bf16
        self.fp32_residual_connection = args.fp32_residual_connection
        self.pre_process = pre_process
        self.post_process = post_process
        self.input_tensor = None

        self.checkpoint_activations = args.checkpoint_activations
        self.checkpoint_num_layers = args.checkpoint_num_layers

        stages = mpu.get_pipeline_model_parallel_world_size()
        assert args.num_layers % stages == 0, \
            f'{args.num_layers} layers do not split evenly over {stages} stages'
        self.num_layers = args.num_layers // stages
        offset = mpu.get_pipeline_model_parallel_rank() * self.num_layers

        def build_layer(layer_number, n_e):
            return ParallelTransformerLayer(
                init_method,
                output_layer_init_method,
                layer_number,
                layer_type=layer_type,
                self_attn_mask_type=self_attn_mask_type,
                num_experts=n_e)

        assert all(n == 1 for n in num_experts), \
            'mixture-of-experts is not supported here'
        # Layer numbers are 1-based and global across pipeline stages.
        self.layers = torch.nn.ModuleList(
            [build_layer(i + 1 + offset, 1) for i in range(self.num_layers)])

        if self.post_process:
            self.final_layernorm = norm_class(
                args.hidden_size,
                eps=args.layernorm_epsilon)

    def _get_layer(self, layer_number):
        return self.layers[layer_number]

    def _checkpointed_forward(self, hidden_states, attention_mask,
                              encoder_output, enc_dec_attn_mask):
        """Run chunks of layers under activation checkpointing."""
        def custom(start, end):
            def custom_forward(x_, mask, enc_out, enc_dec_mask):
                losses = []
                for index in range(start, end):
                    x_, moe_loss = self._get_layer(index)(
                        x_, attention_mask=mask, encoder_output=enc_out,
                        enc_dec_attn_mask=enc_dec_mask)
                    losses.append(moe_loss)
                return (x_, *losses)
            return custom_forward

        moe_losses = []
        for start in range(0, self.num_layers, self.checkpoint_num_layers):
            end = min(start + self.checkpoint_num_layers, self.num_layers)
            hidden_states, *chunk_losses = mpu.checkpoint(
                custom(start, end),
                hidden_states, attention_mask, encoder_output,
                enc_dec_attn_mask)
            moe_losses.extend(chunk_losses)
        return hidden_states, moe_losses

    def set_input_tensor(self, input_tensor):
        """Later pipeline stages take their input from here, not forward()."""
        self.input_tensor = input_tensor

    def forward(self, hidden_states, attention_mask, layer_past=None,
                get_key_value=False, encoder_output=None,
                enc_dec_attn_mask=None):
        if layer_past is not None:
            assert get_key_value, 'layer_past requires get_key_value'
        if get_key_value:
            assert not self.checkpoint_activations, \
                'get_key_value does not work with activation checkpointing'

        if self.pre_process:
            # [b, s, h] -> [s, b, h]
            hidden_states = hidden_states.transpose(0, 1).contiguous()
            if self.fp32_residual_connection:
                hidden_states = hidden_states.float()
        else:
            hidden_states = self.input_tensor

        if encoder_output is not None:
            encoder_output = encoder_output.transpose(0, 1).contiguous()

        moe_losses = []
        if self.checkpoint_activations:
            hidden_states, moe_losses = self._checkpointed_forward(
                hidden_states, attention_mask, encoder_output,
                enc_dec_attn_mask)
        else:
            presents = []
            for index in range(self.num_layers):
                layer = self._get_layer(index)
                past = None if layer_past is None else layer_past[index]
                hidden_states, moe_loss = layer(
                    hidden_states,
                    attention_mask=attention_mask,
                    encoder_output=encoder_output,
                    enc_dec_attn_mask=enc_dec_attn_mask,
                    layer_past=past,
                    get_key_value=get_key_value)
                moe_losses.append(moe_loss)
                if get_key_value:
                    hidden_states, present = hidden_states
                    presents.append(present)

        if self.post_process:
            # [s, b, h] -> [b, s, h]
            hidden_states = hidden_states.transpose(0, 1).contiguous()
            output = self.final_layernorm(hidden_states)
        else:
            output = hidden_states
        if get_key_value:
            output = [output, presents]

        return (output, *moe_losses)
