"""The repair of a reused rotary embedding that returns [cos, sin] where its apply function
and attention take the angles (microsoft f4157bea's FPDT rework): detector and both rewrites."""

import libcst as cst

from porter.differences.rotary.detect import module_path, rotary_pair
from porter.differences.rotary.pair_rewrites import RotaryAnglesNotUnpacked, RotaryReturnsAngles

ROTARY = '''
import torch


class RotaryEmbedding(torch.nn.Module):
    def forward(self, n):
        angles = self.table[:n]
        pair = [angles.cos(), angles.sin()]
        return pair


def apply_rotary_pos_emb(t, freqs):
    return t * freqs.cos() + t.flip(-1) * freqs.sin()
'''

LANGUAGE_MODEL = '''
from .rotary_pos_embedding import RotaryEmbedding


class TransformerLanguageModel:
    def forward(self, x):
        rotary = None
        if self.use_rotary:
            c, s = self.rotary_emb(self.seq_length)
            c.no_checkpointing = True
            rotary = (c.to(x.dtype), s.to(x.dtype))
        return self.encoder(x, rotary)
'''


def test_the_detector_finds_the_pair_and_the_unpacking_method():
    lm = cst.parse_module(LANGUAGE_MODEL)
    path = module_path(lm)
    assert path == "megatron/model/rotary_pos_embedding.py"
    pair = rotary_pair(lm, cst.parse_module(ROTARY), path)
    assert (pair.angles, pair.lm_func, pair.attr) == ("angles", "forward", "rotary_emb")


def test_an_angle_returning_rotary_is_not_a_pair():
    fine = ROTARY.replace("        pair = [angles.cos(), angles.sin()]\n        return pair\n", "        return angles\n")
    assert rotary_pair(cst.parse_module(LANGUAGE_MODEL), cst.parse_module(fine), "r.py") is None


def test_the_embedding_returns_its_angles(check):
    check(lambda: RotaryReturnsAngles(cls="RotaryEmbedding", func="forward", angles="angles"), ROTARY,
          ROTARY.replace("        pair = [angles.cos(), angles.sin()]\n        return pair\n",
                         "        # the angles: apply_rotary_pos_emb takes them (it computes cos and sin)\n"
                         "        return angles\n"))


def test_the_language_model_keeps_the_angles_whole(check):
    check(lambda: RotaryAnglesNotUnpacked(cls="TransformerLanguageModel", func="forward", attr="rotary_emb"),
          LANGUAGE_MODEL,
          LANGUAGE_MODEL.replace("            c, s = self.rotary_emb(self.seq_length)\n"
                                 "            c.no_checkpointing = True\n"
                                 "            rotary = (c.to(x.dtype), s.to(x.dtype))\n",
                                 "            rotary = self.rotary_emb(self.seq_length)\n"))
