# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Bias add + tanh-GeLU with a hand-written backward (one fused kernel when
TorchScript fuses it)."""

import torch



@torch.jit.script
def bias_gelu(bias, y):
    x = bias + y
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


@torch.jit.script
def bias_gelu_back(g, bias, y):
    x = bias + y
    inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    t = torch.tanh(inner)
    d_inner = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x)
    grad = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner
    return grad * g


class GeLUFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, bias):
        ctx.save_for_backward(input, bias)
        return bias_gelu(bias, input)

    @staticmethod
    def backward(ctx, grad_output):
        input, bias = ctx.saved_tensors
        grad = bias_gelu_back(grad_output, bias, input)
        # The bias was broadcast over leading dims; reduce its gradient.
        return grad, grad.reshape(-1, grad.size(-1)).sum(0)


bias_gelu_impl = GeLUFunction.apply
