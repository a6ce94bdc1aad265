"""Rope scaling on a tree's own rotary embedding (rope_scaling/tree_scaling.py): the detector on
the known shape and on EleutherAI's (refused), the three rewrites, and the entry point's copy.
The snippets are ours, written in each shape."""

import libcst as cst

from porter.checks import scope_violations
from porter.differences.rope_scaling.tree_rewrites import FrequenciesByLength, ScaledCosSin, ScaledRotaryInit
from porter.differences.rope_scaling.tree_scaling import pass_scaling, tree_scaling
from porter.differences.rotary.tree_base import Site

ROTARY = '''
import torch


class RotaryEmbedding(torch.nn.Module):
    def __init__(self, dim, theta=10000):
        super().__init__()
        self.register_buffer('inv_freq', 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, n, offset=0):
        positions = torch.arange(n, device=self.inv_freq.device) + offset
        angles = torch.outer(positions.type_as(self.inv_freq), self.inv_freq)
        return torch.cat((angles, angles), dim=-1)[:, None, None, :]


def rotate(t, angles):
    half = t.shape[-1] // 2
    turned = torch.cat((-t[..., half:], t[..., :half]), dim=-1)
    return t * angles.cos().to(t.dtype) + turned * angles.sin().to(t.dtype)
'''

LANGUAGE_MODEL = '''
from .rotary_pos_embedding import RotaryEmbedding


class TransformerLanguageModel:
    def __init__(self, config):
        self.rotary_pos_emb = RotaryEmbedding(config.kv_channels, theta=get_args().rope_theta)
'''

# EleutherAI's shape: cos and sin computed and cached in the class's own forward
CACHED = '''
import torch


class RotaryEmbedding(torch.nn.Module):
    def __init__(self, dim, base=10000):
        super().__init__()
        self.register_buffer('inv_freq', 1. / (base ** (torch.arange(0, dim, 2).float() / dim)))

    def forward(self, x, seq_len):
        t = torch.arange(seq_len, device=x.device).type_as(self.inv_freq)
        angles = torch.cat((torch.outer(t, self.inv_freq),) * 2, dim=-1)
        return angles.cos(), angles.sin()
'''


def parsed_from(files):
    modules = {path: cst.parse_module(text) for path, text in files.items()}
    return modules.get


def test_the_class_its_apply_function_and_builders_are_found():
    found = tree_scaling(parsed_from({"megatron/model/language_model.py": LANGUAGE_MODEL,
                                      "megatron/model/rotary_pos_embedding.py": ROTARY}))
    assert (found.file, found.applies, found.problem) == ("megatron/model/rotary_pos_embedding.py", ("rotate",), None)
    assert found.sites == (Site("megatron/model/language_model.py", "TransformerLanguageModel", "__init__"),)


def test_a_class_computing_cos_and_sin_itself_is_refused_by_what_it_does():
    found = tree_scaling(parsed_from({"megatron/model/language_model.py": LANGUAGE_MODEL.replace(
        "rotary_pos_embedding", "positional_embeddings"), "megatron/model/positional_embeddings.py": CACHED}))
    assert "forward computes cos and sin itself" in found.problem
    assert found.file == "megatron/model/positional_embeddings.py"


def test_the_class_keeps_scaled_frequencies_beside_its_own(check):
    after = ROTARY.replace("def __init__(self, dim, theta=10000):", "def __init__(self, dim, theta=10000, scaling=None):") \
                  .replace("/ dim)))\n", "/ dim)))\n        self.rope_scaled = scaled_frequencies(theta, dim, scaling)\n", 1)
    check(lambda: ScaledRotaryInit(cls="RotaryEmbedding"), ROTARY, after)
    literal = ROTARY.replace("dim, theta=10000)", "dim)").replace("(theta **", "(10000 **")
    assert "scaled_frequencies(10000, dim, scaling)" in ScaledRotaryInit(cls="RotaryEmbedding").apply(
        cst.parse_module(literal), "r.py").code
    before = cst.parse_module(ROTARY)
    assert scope_violations(before, ScaledRotaryInit(cls="RotaryEmbedding").apply(before, "r.py"),
                            ("parameters", "RotaryEmbedding", "__init__")) == []


def test_forward_turns_by_the_frequencies_of_its_length(check):
    after = ROTARY.replace(
        "        positions = torch.arange(n, device=self.inv_freq.device) + offset\n"
        "        angles = torch.outer(positions.type_as(self.inv_freq), self.inv_freq)\n",
        "        rope_inv_freq = frequencies_for(self.inv_freq, self.rope_scaled, n + offset)\n"
        "        positions = torch.arange(n, device=rope_inv_freq.device) + offset\n"
        "        angles = torch.outer(positions.type_as(rope_inv_freq), rope_inv_freq)\n")
    check(lambda: FrequenciesByLength(cls="RotaryEmbedding"), ROTARY, after)


def test_cos_and_sin_are_scaled_by_the_attention_factor(check):
    after = ROTARY.replace("angles.cos().to(t.dtype)", "(angles.cos() * attention_scaling()).to(t.dtype)") \
                  .replace("angles.sin().to(t.dtype)", "(angles.sin() * attention_scaling()).to(t.dtype)")
    check(lambda: ScaledCosSin(func="rotate"), ROTARY, after)


def test_unknown_shapes_are_refused_naming_what_is_there(refuses):
    twice = ROTARY.replace("super().__init__()", "super().__init__()\n        self.scale = 2 ** 0.5")
    assert "2 powers" in refuses(lambda: ScaledRotaryInit(cls="RotaryEmbedding"), twice).found
    no_positions = ROTARY.replace("torch.arange(n, device=self.inv_freq.device) + offset", "self.positions(n)")
    assert "torch.arange(length" in refuses(lambda: FrequenciesByLength(cls="RotaryEmbedding"), no_positions).found
    assigns = ROTARY.replace("        return torch.cat(", "        self.inv_freq = self.inv_freq.float()\n"
                                                        "        return torch.cat(")
    assert "assigns self.inv_freq" in refuses(lambda: FrequenciesByLength(cls="RotaryEmbedding"), assigns).found


def test_the_entry_points_copy_of_the_pipe_table_passes_the_scaling():
    copied = "args.rotary_pos_emb = RotaryEmbedding(n, theta=args.rope_theta)(args.seq_length)\n"
    done = pass_scaling(copied)
    assert done == ("from megatron.model.rope_scaling import rope_scaling_of\nargs.rotary_pos_emb = RotaryEmbedding("
                    "n, theta=args.rope_theta, scaling=rope_scaling_of(args))(args.seq_length)\n")
    assert pass_scaling(done) == done
    assert pass_scaling("x = 1\n") == "x = 1\n"
