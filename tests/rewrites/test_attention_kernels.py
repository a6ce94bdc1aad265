"""Soft-capped scores, or a sliding window, where the tree's attention builds a flash kernel instead of
its core attention (microsoft HEAD; a Gaudi kernel under `self.<flag> and <more>`, Habana's): the
kernels' flags are found by structure and turned off while a cap or a window is set."""

import textwrap

import libcst as cst

from porter.edits.kernels import KernelsOff
from porter.profile.kernels import OtherKernel, other_kernels

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
    why = "Soft-capped attention scores (Gemma-2): those kernels take no function of the scores; the core attention " \
          "runs while a cap is set."
    rewrite = lambda: KernelsOff(cls="ParallelAttention", flags=("use_flash_attn_triton", "use_flash_attn"),
                                 test="args.attention_softcap is not None", why=why)
    once = rewrite().apply(module, "transformer.py").code
    assert ADDED in once
    assert rewrite().apply(cst.parse_module(once), "transformer.py").code == once  # idempotent


def test_an_attention_without_another_kernel_has_none():
    module = cst.parse_module(textwrap.dedent(BEFORE).replace("        elif self.use_flash_attn:\n"
                                                              "            local_attn = FlashSelfAttention(causal=True)\n",
                                                              "").replace("if self.use_flash_attn_triton:",
                                                                          "if False:"))
    assert other_kernels(module) == ()


def test_a_kernel_under_a_flag_and_more_is_found_and_turned_off_while_windowed():
    gaudi = textwrap.dedent(BEFORE).replace(
        "        else:\n            local_attn = CoreAttention(",
        "        elif self.use_fused_sdpa and device_name() == 'hpu':\n"
        "            local_attn = GaudiSelfAttention(config)\n"
        "        else:\n            local_attn = CoreAttention(").replace(
        "        self.use_flash_attn_triton = args.use_flash_attn_triton\n",
        "        self.use_flash_attn_triton = args.use_flash_attn_triton\n"
        "        self.use_fused_sdpa = config.use_fused_sdpa\n")
    module = cst.parse_module(gaudi.lstrip("\n"))
    flags = ("use_flash_attn_triton", "use_flash_attn", "use_fused_sdpa")
    assert other_kernels(module) == (OtherKernel("ParallelAttention", flags, "CoreAttention"),)
    rewrite = lambda: KernelsOff(cls="ParallelAttention", flags=flags, test="args.sliding_window", why="windowed")
    once = rewrite().apply(module, "transformer.py").code
    assert ("        self.use_fused_sdpa = config.use_fused_sdpa\n"
            "        # windowed\n"
            "        if args.sliding_window:\n"
            "            self.use_flash_attn_triton = False\n"
            "            self.use_flash_attn = False\n"
            "            self.use_fused_sdpa = False\n"
            "        if self.use_flash_attn_triton:\n") in once
    assert rewrite().apply(cst.parse_module(once), "transformer.py").code == once  # idempotent


def test_an_or_test_is_not_a_flag_porter_can_turn_off():
    module = cst.parse_module(textwrap.dedent(BEFORE).lstrip("\n").replace(
        "elif self.use_flash_attn:", "elif self.use_flash_attn or other:"))
    assert other_kernels(module) == ()


BESIDE = """
class CoreAttention(MegatronModule):
    def forward(self, q, k, v, mask):
        return q


class FlashSelfAttention(torch.nn.Module):
    def forward(self, q, k, v):
        return q


class ParallelAttention(MegatronModule):
    def __init__(self, config, layer_number):
        self.use_flash_attn = args.use_flash_attn and config.causal
        self.core_attention = CoreAttention(layer_number, config)
        if self.use_flash_attn:
            self.core_attention_flash = FlashSelfAttention(causal=True)

    def forward(self, hidden_states, mask):
        if not self.use_flash_attn:
            return self.core_attention(hidden_states, hidden_states, hidden_states, mask)
        return self.core_attention_flash(hidden_states, hidden_states, hidden_states)
"""


def test_a_kernel_built_beside_the_core_and_run_under_its_flag_is_found():
    module = cst.parse_module(textwrap.dedent(BESIDE).lstrip("\n"))
    assert other_kernels(module) == (OtherKernel("ParallelAttention", ("use_flash_attn",), "CoreAttention"),)


def test_a_module_built_under_a_flag_that_forward_does_not_read_is_no_kernel():
    # e.g. a norm built only when asked for: forward runs it by its own attribute, not under the flag
    module = cst.parse_module(textwrap.dedent(BESIDE).lstrip("\n").replace(
        "        if not self.use_flash_attn:\n", "        if self.core_attention_flash is None:\n"))
    assert other_kernels(module) == ()
