"""Soft-capped scores where the tree's attention builds a flash kernel instead of its core attention
(microsoft HEAD): the kernels' flags are found by structure and turned off while a cap is set."""

import textwrap

import libcst as cst

from porter.differences.softcap.kernels import OtherKernel, other_kernels
from porter.differences.softcap.rewrites import OtherKernelStandsAside

BEFORE = """
class CoreAttention(MegatronModule):
    def forward(self, q, k, v, mask):
        return q


class FlashSelfAttention(torch.nn.Module):
    def forward(self, q, k, v):
        return q


class ParallelAttention(MegatronModule):
    def __init__(self, config, layer_number):
        args = get_args()
        self.use_flash_attn = args.use_flash_attn_v2 and config.causal
        self.use_flash_attn_triton = args.use_flash_attn_triton
        if self.use_flash_attn_triton:
            local_attn = FlashSelfAttentionTriton(causal=True)
        elif self.use_flash_attn:
            local_attn = FlashSelfAttention(causal=True)
        else:
            local_attn = CoreAttention(layer_number, config)
        self.core_attention = local_attn
"""

ADDED = """\
        self.use_flash_attn_triton = args.use_flash_attn_triton
        # Soft-capped attention scores (Gemma-2): those kernels take no function of the scores; the core attention runs while a cap is set.
        if args.attention_softcap is not None:
            self.use_flash_attn_triton = False
            self.use_flash_attn = False
        if self.use_flash_attn_triton:
"""


def test_the_flash_flags_are_found_and_turned_off_while_capped():
    module = cst.parse_module(textwrap.dedent(BEFORE).lstrip("\n"))
    # every flag whose branch builds another class than the core attention (imported or not)
    assert other_kernels(module) == (OtherKernel("ParallelAttention", ("use_flash_attn_triton", "use_flash_attn"),
                                                 "CoreAttention"),)
    rewrite = lambda: OtherKernelStandsAside(cls="ParallelAttention", flags=("use_flash_attn_triton", "use_flash_attn"),
                                             value="args.attention_softcap")
    once = rewrite().apply(module, "transformer.py").code
    assert ADDED in once
    assert rewrite().apply(cst.parse_module(once), "transformer.py").code == once  # idempotent


def test_an_attention_without_another_kernel_has_none():
    module = cst.parse_module(textwrap.dedent(BEFORE).replace("        elif self.use_flash_attn:\n"
                                                              "            local_attn = FlashSelfAttention(causal=True)\n",
                                                              "").replace("if self.use_flash_attn_triton:",
                                                                          "if False:"))
    assert other_kernels(module) == ()
