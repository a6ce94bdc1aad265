# Sample Megatron-DeepSpeed tree bundled with porter (our own compact code; mirrors the shapes of microsoft/Megatron-DeepSpeed f01c9e6e).
"""Scale + mask + softmax for attention scores.

Only the plain PyTorch path is implemented; the fused-kernel flag is kept so
callers look the same as with CUDA kernels.
"""

import torch


class FusedScaleMaskSoftmax(torch.nn.Module):
    """softmax(mask_func(scale * x, mask)) over the last dim of [b, np, sq, sk]."""

    def __init__(
        self,
        input_in_fp16,
        input_in_bf16,
        attn_mask_type,
        scaled_masked_softmax_fusion,
        mask_func,
        softmax_in_fp32,
        scale,
    ):
        super(FusedScaleMaskSoftmax, self).__init__()
        assert not (input_in_fp16 and input_in_bf16), \
            'fp16 and bf16 inputs are mutually exclusive'
        self.input_in_fp16 = input_in_fp16
        self.input_in_bf16 = input_in_bf16
        self.input_in_float16 = input_in_fp16 or input_in_bf16
        self.attn_mask_type = attn_mask_type
        self.scaled_masked_softmax_fusion = scaled_masked_softmax_fusion
        self.mask_func = mask_func
        self.softmax_in_fp32 = softmax_in_fp32
        self.scale = scale
        assert scale is None or softmax_in_fp32, 'scaling needs an fp32 softmax'

    def forward(self, input, mask):
        assert input.dim() == 4, 'expected [b, np, sq, sk] scores'
        upcast = self.input_in_float16 and self.softmax_in_fp32
        x = input.float() if upcast else input
        if self.scale is not None:
            x = x * self.scale
        if mask is not None:
            x = self.mask_func(x, mask)
        probs = torch.nn.functional.softmax(x, dim=-1)
        if upcast:
            probs = probs.half() if self.input_in_fp16 else probs.bfloat16()
        return probs
