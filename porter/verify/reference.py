"""The reference: HF transformers' LlamaForCausalLM, tiny, random, and hard to fool.

HF's default initialisation (std 0.02, unit norm weights) makes attention nearly uniform:
measured on a real tree, a RoPE bug that moves logits by 2.1 under std 0.1 moves them by
only 5.6e-3 under the default, with every argmax right. So every matrix here is drawn with
std 0.1 and every norm weight uniformly from [0.5, 1.5]: a wrong port cannot hide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from porter.errors import PorterError
from porter.spec import Spec
from porter.verify.convert import rope_fields

# HF's own default attention (torch's scaled_dot_product_attention): the reference as HF users run
# it, and the kernel porter's fused core attention calls, so a port that computes the same
# function in the same kernels matches it bit for bit. Ports whose attention stays unfused (a tree
# where the fused rewrite does not apply) differ from it by fp32 rounding only (~1e-6).
REFERENCE_ATTENTION = "sdpa"


@dataclass(frozen=True)
class TinyConfig:
    """The model and batch verify runs: small enough for a CPU, big enough to mean something."""

    num_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    vocab_size: int = 256
    seq_length: int = 32
    batch_size: int = 2
    weight_std: float = 0.1
    seed: int = 1234

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def check_spec(spec: Spec) -> None:
    """HF's LLaMA is the reference only for specs that describe LLaMA."""
    wanted = {
        "activation.type": (spec.activation, "swiglu"),
        "position_embedding.type": (spec.position_embedding, "rotary"),
        "position_embedding.layout": (spec.rotary_layout, "rotate_half"),
        "norm.type": (spec.norm, "rmsnorm"),
        "norm.final_norm": (spec.final_norm, True),
    }
    wrong = {k: v for k, (v, want) in wanted.items() if v != want}
    if wrong:
        raise PorterError(
            f"spec {spec.name} is not a LLaMA: HF transformers' LlamaForCausalLM cannot be its reference",
            file=spec.path,
            construct=", ".join(f"{k} = {want!r}" for k, (_, want) in wanted.items()),
            found=", ".join(f"{k} = {v!r}" for k, v in wrong.items()),
            fix="verify a LLaMA-family spec (model_diffs/llama.toml)",
        )


def llama_config(spec: Spec, tiny: TinyConfig):
    """A transformers LlamaConfig matching the spec, at the tiny size."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=tiny.vocab_size,
        hidden_size=tiny.hidden_size,
        intermediate_size=spec.ffn_hidden_size(tiny.hidden_size),
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_attention_heads,
        num_key_value_heads=tiny.num_attention_heads,
        max_position_embeddings=tiny.seq_length,
        rms_norm_eps=spec.norm_eps,
        tie_word_embeddings=spec.tied_embeddings,
        attention_bias=spec.bias,
        mlp_bias=spec.bias,
        hidden_act="silu",
        **rope_fields(spec.rope_theta),
    )
    config._attn_implementation = REFERENCE_ATTENTION
    return config


def random_llama(spec: Spec, tiny: TinyConfig):
    """LlamaForCausalLM in fp32, eval mode, weights std `tiny.weight_std`, norms in [0.5, 1.5]."""
    from transformers import LlamaForCausalLM

    check_spec(spec)
    torch.manual_seed(tiny.seed)
    model = LlamaForCausalLM(llama_config(spec, tiny)).float().eval()
    generator = torch.Generator().manual_seed(tiny.seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * tiny.weight_std)
    return model


def token_batch(tiny: TinyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [b, s], labels [b, s]): labels are the next tokens."""
    generator = torch.Generator().manual_seed(tiny.seed + 1)
    ids = torch.randint(0, tiny.vocab_size, (tiny.batch_size, tiny.seq_length + 1), generator=generator)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
