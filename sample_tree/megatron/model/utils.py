# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Initialisers, activation functions and the attention mask fill."""

import math

import torch



def init_method_normal(sigma):
    """N(0, sigma) initialiser."""
    def init_(tensor):
        return torch.nn.init.normal_(tensor, mean=0.0, std=sigma)
    return init_


def scaled_init_method_normal(sigma, num_layers):
    """N(0, sigma / sqrt(2 * num_layers)) for layers feeding the residual."""
    scaled = sigma / math.sqrt(2.0 * num_layers)

    def init_(tensor):
        return torch.nn.init.normal_(tensor, mean=0.0, std=scaled)
    return init_


def attention_mask_func(attention_scores, attention_mask):
    """Push masked (True) positions to a large negative score."""
    n = attention_scores.size(-2)
    if attention_mask.size(-2) != n:
        attention_mask = attention_mask[..., :n, :attention_scores.size(-1)]
    attention_scores.masked_fill_(attention_mask, -10000.0)
    return attention_scores


def get_linear_layer(rows, columns, init_method):
    layer = torch.nn.Linear(rows, columns)
    init_method(layer.weight)
    with torch.no_grad():
        layer.bias.zero_()
    return layer


@torch.jit.script
def gelu_impl(x):
    """tanh approximation of GeLU."""
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x *
                                       (1.0 + 0.044715 * x * x)))


def openai_gelu(x):
    return gelu_impl(x)


@torch.jit.script
def erf_gelu(x):
    """Exact GeLU written with erf (exports cleanly to ONNX)."""
    return x * 0.5 * (torch.erf(x / 1.4142135623730951) + 1.0)
