"""fp8 block-quantized HF checkpoints, dequantized to bf16 as they are read.

DeepSeek-V3's format, which transformers' FineGrainedFP8Config also writes: config.json's
`quantization_config` says `quant_method: fp8` (`fmt: e4m3`) and `weight_block_size: [br, bc]`;
each quantized weight W is float8_e4m3fn next to `W_scale_inv` (float32, one scale per
br x bc block). porter reads W as bf16: W.float() * its block's scale, rounded to bf16, one
tensor at a time (a float32 copy of that one tensor on the way). The Megatron checkpoint and
the way back are bf16; fp8 is not written back. Any other quantization (another
`quant_method`, another fp8 format, per-tensor scales) is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from porter.errors import PorterError

SCALE = "_scale_inv"


@dataclass(frozen=True)
class BlockFp8:
    block: tuple[int, int]

    def dequantize(self, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """bf16 W from fp8 W and its per-block scales (meta in, meta out)."""
        if weight.device.type == "meta":
            return torch.empty(weight.shape, dtype=torch.bfloat16, device="meta")
        rows, cols = weight.shape
        br, bc = self.block
        x = weight.to(torch.float32)
        if rows % br == 0 and cols % bc == 0:
            x.view(rows // br, br, cols // bc, bc).mul_(scale[:, None, :, None])
        else:  # ragged edge blocks: each scale spread over its block, cut to the weight
            x.mul_(scale.repeat_interleave(br, 0)[:rows].repeat_interleave(bc, 1)[:, :cols])
        return x.to(torch.bfloat16)


def scheme(config: dict, path: str) -> BlockFp8 | None:
    """The block-fp8 scheme of a config (None: not quantized); other quantizations are refused."""
    quant = config.get("quantization_config")
    if not quant:
        return None
    method = quant.get("quant_method")
    block = quant.get("weight_block_size")
    if method == "fp8" and quant.get("fmt", "e4m3") == "e4m3" and isinstance(block, (list, tuple)) and len(block) == 2:
        return BlockFp8((int(block[0]), int(block[1])))
    raise PorterError(
        f"porter does not convert {method or 'this'}-quantized checkpoints",
        file=path, construct="quantization_config: none, or quant_method fp8 with fmt e4m3 and a weight_block_size "
                             "(block-quantized fp8, dequantized to bf16)",
        found=f"quantization_config: {quant}",
        fix="convert the model's bf16 or fp16 weights (dequantize it first with the tool that quantized it)",
    )
