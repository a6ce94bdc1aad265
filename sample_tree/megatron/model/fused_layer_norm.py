# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""LayerNorm used on CUDA.  Uses apex's fused kernel when apex is installed,
torch's layer_norm otherwise."""

import numbers

import torch
from torch.nn import init
from torch.nn.parameter import Parameter

try:
    from apex.normalization.fused_layer_norm import fused_layer_norm_affine
except ImportError:       # no apex: plain PyTorch
    fused_layer_norm_affine = None


class MixedFusedLayerNorm(torch.nn.Module):

    def __init__(self, normalized_shape, eps=1e-5):
        super(MixedFusedLayerNorm, self).__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = torch.Size(normalized_shape)
        self.eps = eps
        self.weight = Parameter(torch.empty(*normalized_shape))
        self.bias = Parameter(torch.empty(*normalized_shape))
        self.reset_parameters()

    def reset_parameters(self):
        init.ones_(self.weight)
        init.zeros_(self.bias)

    def forward(self, input):
        if fused_layer_norm_affine is not None and input.is_cuda:
            return fused_layer_norm_affine(input, self.weight, self.bias,
                                           self.normalized_shape, self.eps)
        return torch.nn.functional.layer_norm(input, self.normalized_shape,
                                              self.weight, self.bias, self.eps)
