"""The reference: the spec's HF transformers class (LlamaForCausalLM, ...), tiny, random, and hard to fool.

HF's default initialisation (std 0.02, unit norm weights) makes attention nearly uniform:
measured on a real tree, a RoPE bug that moves logits by 2.1 under std 0.1 moves them by
only 5.6e-3 under the default, with every argmax right. So every matrix here is drawn with
std 0.1 and every norm weight uniformly from [0.5, 1.5] (a saved buffer, such as a router's
correction bias, with std 0.1 too): a wrong port cannot hide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from porter.errors import PorterError
from porter.hf_config import hf_class_of, hf_config_of, installed_rope_spelling, model_type_of
from porter.spec import Spec
from porter.treerun.shape import RunShape, tiny_spec

# HF's own default attention (torch's scaled_dot_product_attention): the reference as HF users run
# it, and the kernel porter's fused core attention calls, so a port that computes the same
# function in the same kernels matches it bit for bit. Ports whose attention stays unfused (a tree
# where the fused rewrite does not apply) differ from it by fp32 rounding only (~1e-6). A class
# that cannot run it (its `_supports_sdpa` is false) is run with its own eager attention.
REFERENCE_ATTENTION = "sdpa"


def reference_attention(cls) -> str:
    """The attention HF runs the class with: SDPA where the class supports it, else its eager code."""
    return REFERENCE_ATTENTION if getattr(cls, "_supports_sdpa", True) else "eager"


@dataclass(frozen=True)
class TinyConfig(RunShape):
    """The model and batch verify runs: small enough for a CPU, big enough to mean something;
    its weights drawn with std `weight_std`."""

    weight_std: float = 0.1

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def check_spec(spec: Spec) -> None:
    """A spec is verified against the HF class it names (model.hf_class)."""
    if not spec.hf_class:
        raise PorterError(
            f"spec {spec.name} names no HF reference class",
            file=spec.path, construct="model.hf_class, e.g. 'LlamaForCausalLM'", found="none",
            fix="add hf_class to the spec's [model] section: the transformers class with this architecture",
        )
    if model_type_of(spec.hf_class) is None:
        raise PorterError(
            f"transformers has no class {spec.hf_class}",
            file=spec.path, construct="model.hf_class: a transformers causal-LM class", found=spec.hf_class,
            fix="name a class transformers has (e.g. LlamaForCausalLM), or upgrade transformers",
        )


def reference_config(spec: Spec, tiny: TinyConfig):
    """The transformers config of the spec's reference class, at the tiny size."""
    check_spec(spec)
    cls = hf_class_of(spec.hf_class)
    fields = installed_rope_spelling(hf_config_of(tiny_spec(spec, tiny)))
    config = cls.config_class(**{k: v for k, v in fields.items() if k not in ("architectures", "model_type")})
    config.architectures = [spec.hf_class]
    config._attn_implementation = reference_attention(cls)
    return config


def random_reference(spec: Spec, tiny: TinyConfig):
    """The spec's HF class in fp32, eval mode, weights std `tiny.weight_std`, norms in [0.5, 1.5]."""
    config = reference_config(spec, tiny)
    torch.manual_seed(tiny.seed)
    model = hf_class_of(spec.hf_class)(config).float().eval()
    randomize(model, tiny.weight_std, tiny.seed)
    return model


def randomize(model, std: float, seed: int) -> None:
    """Every matrix drawn with std `std`, every norm weight uniformly from [0.5, 1.5]."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
        # saved buffers are weights too (DeepSeek-V3's expert correction bias): drawn as well
        saved = model.state_dict()
        for name, buffer in model.named_buffers():
            if name in saved and buffer.is_floating_point():
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * std)


def token_batch(tiny: TinyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [b, s], labels [b, s]): labels are the next tokens."""
    generator = torch.Generator().manual_seed(tiny.seed + 1)
    ids = torch.randint(0, tiny.vocab_size, (tiny.batch_size, tiny.seq_length + 1), generator=generator)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
