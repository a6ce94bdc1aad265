"""Rope scaling on a tree's own rotary embedding (rope_scaling/tree_scaling.py): the detector on
microsoft's shape (angles handed on) and EleutherAI's (a cached table), an unknown one refused, the
rewrites, and the entry point's copy.
The snippets are ours, written in each shape."""

import libcst as cst

from porter.checks import scope_violations
from porter.differences.rope_scaling.tree_rewrites import (CachedFrequenciesByLength, FrequenciesByLength, ScaledCosSin,
                                                           ScaledRotaryInit)
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

# EleutherAI's shape: cos and sin of a table the class's own forward caches for the longest sequence
CACHED = '''
import torch


class RotaryEmbedding(torch.nn.Module):
    def __init__(self, dim, base=10000, precision=torch.half):
        super().__init__()
        self.register_buffer('inv_freq', 1. / (base ** (torch.arange(0, dim, 2).float() / dim)))
        self.max_seq_len_cached = None

    def forward(self, x, seq_len):
        if self.max_seq_len_cached is None or (seq_len > self.max_seq_len_cached):
            self.max_seq_len_cached = seq_len
            t = torch.arange(self.max_seq_len_cached, device=x.device).type_as(self.inv_freq)
            angles = torch.cat((torch.outer(t, self.inv_freq),) * 2, dim=-1)
            self.cos_cached = angles.cos()[:, None, :]
            self.sin_cached = angles.sin()[:, None, :]
        return self.cos_cached[:seq_len], self.sin_cached[:seq_len]
'''

TRANSFORMER = '''
from .positional_embeddings import RotaryEmbedding


class ParallelAttention:
    def __init__(self, layer_number):
        self.rotary_emb = RotaryEmbedding(self.head_size, precision=get_args().params_dtype)
'''


def parsed_from(files):
    modules = {path: cst.parse_module(text) for path, text in files.items()}
    return modules.get


def test_the_class_its_apply_function_and_builders_are_found():
    found = tree_scaling(parsed_from({"megatron/model/language_model.py": LANGUAGE_MODEL,
                                      "megatron/model/rotary_pos_embedding.py": ROTARY}))
    assert (found.file, found.applies, found.problem) == ("megatron/model/rotary_pos_embedding.py", ("rotate",), None)
    assert found.sites == (Site("megatron/model/language_model.py", "TransformerLanguageModel", "__init__"),)


def test_a_class_handing_neither_angles_nor_a_cached_table_is_refused_by_what_it_does():
    table = ROTARY.replace("torch.arange(n, device=self.inv_freq.device) + offset", "self.positions(n)")
    found = tree_scaling(parsed_from({"megatron/model/language_model.py": LANGUAGE_MODEL,
                                      "megatron/model/rotary_pos_embedding.py": table}))
    assert "forward builds no positions as `x = torch.arange(length, ...)`" in found.problem
    assert found.file == "megatron/model/rotary_pos_embedding.py"


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
        "        angles = torch.outer(positions.type_as(rope_inv_freq), rope_inv_freq)\n").replace(
        "        return torch.cat((angles, angles), dim=-1)[:, None, None, :]\n",
        "        return tag_angles(torch.cat((angles, angles), dim=-1)[:, None, None, :], self.rope_scaled)\n")
    check(lambda: FrequenciesByLength(cls="RotaryEmbedding"), ROTARY, after)


def test_cos_and_sin_are_scaled_by_the_attention_factor(check):
    after = ROTARY.replace("angles.cos().to(t.dtype)", "(angles.cos() * attention_scaling(angles)).to(t.dtype)") \
                  .replace("angles.sin().to(t.dtype)", "(angles.sin() * attention_scaling(angles)).to(t.dtype)")
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
    copied = "args.rotary_pos_emb = RotaryEmbedding(n, args.rope_theta)(args.seq_length)\n"
    done = pass_scaling(copied)
    assert done == "args.rotary_pos_emb = RotaryEmbedding(n, args.rope_theta, scaling=rope_scaling_of(args))(args.seq_length)\n"
    assert pass_scaling(done) == done


def test_eleutherais_cached_table_is_found_with_its_builders():
    found = tree_scaling(parsed_from({"megatron/model/language_model.py": "", "megatron/model/transformer.py": TRANSFORMER,
                                      "megatron/model/positional_embeddings.py": CACHED}))
    assert (found.cached, found.applies, found.problem) == (True, (), None)
    assert found.sites == (Site("megatron/model/transformer.py", "ParallelAttention", "__init__"),)


def test_the_cached_table_follows_the_frequencies_of_the_length(check):
    after = CACHED.replace(
        "        if self.max_seq_len_cached is None or (seq_len > self.max_seq_len_cached):\n"
        "            self.max_seq_len_cached = seq_len\n"
        "            t = torch.arange(self.max_seq_len_cached, device=x.device).type_as(self.inv_freq)\n"
        "            angles = torch.cat((torch.outer(t, self.inv_freq),) * 2, dim=-1)\n",
        "        rope_inv_freq = frequencies_for(self.inv_freq, self.rope_scaled, seq_len)\n"
        "        if self.max_seq_len_cached is None or (seq_len > self.max_seq_len_cached) or "
        "rope_inv_freq is not getattr(self, 'rope_table_freq', None):\n"
        "            self.rope_table_freq = rope_inv_freq\n"
        "            self.max_seq_len_cached = seq_len\n"
        "            t = torch.arange(self.max_seq_len_cached, device=x.device).type_as(rope_inv_freq)\n"
        "            angles = torch.cat((torch.outer(t, rope_inv_freq),) * 2, dim=-1)\n")
    check(lambda: CachedFrequenciesByLength(cls="RotaryEmbedding"), CACHED, after)
    scaled = after.replace("angles.cos()[:, None, :]", "(angles.cos() * attention_scaling(self))[:, None, :]") \
                  .replace("angles.sin()[:, None, :]", "(angles.sin() * attention_scaling(self))[:, None, :]")
    check(lambda: ScaledCosSin(cls="RotaryEmbedding", func="forward"), after, scaled)


def _rewritten(source, *rewrites):
    module = cst.parse_module(source)
    for rewrite in rewrites:
        module = rewrite.apply(module, "r.py")
    return module.code


def _helpers():
    from porter.render import environment
    namespace = {}
    exec(compile(environment().get_template("rope_scaling.py.j2").render(), "rope_scaling.py", "exec"), namespace)
    return namespace


def test_both_shapes_compute_what_they_did_with_the_switches_off_and_longrope_by_length_with_them_on():
    """Runs the rewritten snippets (torch, no model): bit for bit the tree's own tables without
    scaling; with longrope, the short or long frequencies by the length (a long sequence, then a
    short one: the cached table is rebuilt) and cos, sin scaled by the attention factor."""
    import torch

    helpers = _helpers()
    longrope = {"type": "longrope", "short_factor": [1.0, 2.0, 3.0, 4.0], "long_factor": [5.0, 6.0, 7.0, 8.0],
                "factor": 4.0, "original_max_position_embeddings": 16, "attention_factor": None}
    expected_factor = (1 + torch.log(torch.tensor(4.0)) / torch.log(torch.tensor(16.0))).sqrt().item()

    def loaded(source, *rewrites):
        namespace = dict(helpers)
        exec(_rewritten(source, *rewrites), namespace)
        return namespace

    plain, ours = loaded(CACHED), loaded(CACHED, ScaledRotaryInit(cls="RotaryEmbedding"),
                                         CachedFrequenciesByLength(cls="RotaryEmbedding"),
                                         ScaledCosSin(cls="RotaryEmbedding", func="forward"))
    x = torch.zeros(1)
    for a, b in zip(plain["RotaryEmbedding"](8)(x, 20), ours["RotaryEmbedding"](8)(x, 20), strict=True):
        assert torch.equal(a, b)
    scaled = ours["RotaryEmbedding"](8, scaling=longrope)
    base = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    for length, factors in ((32, longrope["long_factor"]), (8, longrope["short_factor"])):
        angles = torch.outer(torch.arange(length).float(), base / torch.tensor(factors))
        cos, _sin = scaled(x, length)
        assert torch.allclose(cos[:, 0, :4], angles.cos() * expected_factor, atol=1e-6), length

    plain, ours = loaded(ROTARY), loaded(ROTARY, ScaledRotaryInit(cls="RotaryEmbedding"),
                                         FrequenciesByLength(cls="RotaryEmbedding"), ScaledCosSin(func="rotate"))
    t = torch.randn(20, 1, 1, 8)
    assert torch.equal(plain["rotate"](t, plain["RotaryEmbedding"](8)(20)),
                       ours["rotate"](t, ours["RotaryEmbedding"](8)(20)))
    long = ours["RotaryEmbedding"](8, scaling=longrope)(20)[:, 0, 0, :4]
    assert torch.allclose(long, torch.outer(torch.arange(20).float(), base / torch.tensor(longrope["long_factor"])))


def test_each_embedding_scales_by_its_own_factor_whichever_was_built_last():
    """Gemma-3's local layers build an unscaled rotary embedding beside the global one under yarn:
    cos and sin of each one's angles take that one's attention factor (they took the factor of the
    embedding built last, for every layer), in both shapes."""
    import torch

    helpers = _helpers()
    yarn = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "attention_factor": None,
            "beta_fast": 32.0, "beta_slow": 1.0, "mscale": None, "mscale_all_dim": None, "truncate": 1}

    def loaded(source, *rewrites):
        namespace = dict(helpers)
        exec(_rewritten(source, *rewrites), namespace)
        return namespace

    ours = loaded(ROTARY, ScaledRotaryInit(cls="RotaryEmbedding"), FrequenciesByLength(cls="RotaryEmbedding"),
                  ScaledCosSin(func="rotate"))
    plain = loaded(ROTARY)
    scaled, unscaled = ours["RotaryEmbedding"](8, scaling=yarn), ours["RotaryEmbedding"](8)  # unscaled built last
    factor = scaled.rope_scaled[3]
    assert factor > 1.01
    t = torch.randn(20, 1, 1, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours["rotate"](t, unscaled(20)), plain["rotate"](t, plain["RotaryEmbedding"](8)(20)))
    angles = scaled(20)
    turned = torch.cat((-t[..., 4:], t[..., :4]), dim=-1)
    # in the rewrite's order (cos and sin scaled first): a sum near 0 in another order differs past rtol
    expected = t * (angles.cos() * factor) + turned * (angles.sin() * factor)
    assert torch.allclose(ours["rotate"](t, angles), expected, atol=1e-6)
    assert not torch.allclose(ours["rotate"](t, angles), t * angles.cos() + turned * angles.sin(), atol=1e-3)

    cached = loaded(CACHED, ScaledRotaryInit(cls="RotaryEmbedding"), CachedFrequenciesByLength(cls="RotaryEmbedding"),
                    ScaledCosSin(cls="RotaryEmbedding", func="forward"))
    scaled, unscaled = cached["RotaryEmbedding"](8, scaling=yarn), cached["RotaryEmbedding"](8)
    x = torch.zeros(1)
    own = loaded(CACHED)["RotaryEmbedding"](8)(x, 20)
    for a, b in zip(unscaled(x, 20), own, strict=True):
        assert torch.equal(a, b)
    cos, _ = scaled(x, 20)
    angles = torch.outer(torch.arange(20).float(), scaled.rope_scaled[0])
    assert torch.allclose(cos[:, 0, :4], angles.cos() * scaled.rope_scaled[3], atol=1e-6)
