"""The toy's HF reference: LLaMA whose MLP output is scaled per channel (our own, for the tests)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaMLP


class ScaledMLPConfig(LlamaConfig):
    model_type = "scaled_mlp_llama"


class Scale(torch.nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))

    def forward(self, x):
        return x * self.weight


class ScaledLlamaMLP(LlamaMLP):
    def __init__(self, config):
        super().__init__(config)
        self.scale = Scale(config.hidden_size)

    def forward(self, x):
        return self.scale(super().forward(x))


class ScaledLlamaForCausalLM(LlamaForCausalLM):
    config_class = ScaledMLPConfig

    def __init__(self, config):
        super().__init__(config)
        for layer in self.model.layers:
            layer.mlp = ScaledLlamaMLP(config)
        self.post_init()
