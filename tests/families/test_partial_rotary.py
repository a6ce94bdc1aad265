"""Partial rotary (porter/differences/partial_rotary): Phi-4-mini rotates the first 0.75 of each
head's 128 channels and passes the other 32 on. In the test command: the HF reading
(partial_rotary_factor absent, null, top-level, inside rope_parameters), the spec's checks
(longrope's factor lists counted by the rotary dimension), and the rotary embedding porter
writes, rendered with the switch, against transformers' Phi-3 rotary on Phi-4-mini's published
numbers, bit for bit (a rotation of the last channels, or of the whole head, is seen). Under -m
slow: `porter verify` of Phi-4-mini's config.json on the sample tree at TP=1, TP=2 and PP=2, its
smoke, and the tree's rotary broken on purpose (the last channels rotated) failing at the rotary
embedding."""

import dataclasses
import json

import libcst as cst
import pytest
import torch
from typer.testing import CliRunner

from porter.catalog import load_spec, profile_of, spellings
from porter.cli import app
from porter.differences.partial_rotary import PartialRotary
from porter.errors import PorterError
from porter.plan import make_plan
from porter.render import GENERATED_MARK, environment, render
from porter.resources import sample_tree_dir
from porter.source import SourceTree
from tests.conftest import copy_sample_tree
from tests.families.battery import model_folder, published
from tests.helpers.trees import edited_copy

FIELD = "position_embedding.rotary_percent"
PHI4 = "microsoft--Phi-4-mini-instruct"
PHI3 = "microsoft--Phi-3-mini-4k-instruct"  # a phi3 file without partial_rotary_factor or rope scaling


def read(tmp_path, stem, **changes):
    config = {**published(stem), **changes}
    for key, value in changes.items():
        if value is ...:  # left out of the file
            del config[key]
    return load_spec(str(model_folder(tmp_path, stem, config)))


@pytest.mark.parametrize(("stem", "changes", "percent"), [
    (PHI4, {}, 0.75),
    (PHI3, {}, 1.0),
    (PHI3, {"partial_rotary_factor": 0.5}, 0.5),
    (PHI3, {"partial_rotary_factor": 0.75, "rope_theta": ...,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}}, 0.5),
    ("meta-llama--Meta-Llama-3-8B", {"partial_rotary_factor": None}, 1.0),
], ids=["phi4-top-level", "absent", "phi3-top-level", "nested-wins-over-top-level", "null"])
def test_partial_rotary_factor_is_read_as_transformers_reads_it(tmp_path, stem, changes, percent):
    spec = read(tmp_path, stem, **changes)
    assert spec[FIELD] == percent
    if stem == PHI4:  # longrope's 48 factors: 0.75 x 128 / 2
        assert len(spec["position_embedding.rope_scaling.long_factor"]) == 48 and spec.hf_class == "Phi3ForCausalLM"


def test_a_class_that_rotates_whole_heads_is_refused(tmp_path):
    with pytest.raises(PorterError, match="rotates whole heads") as caught:
        read(tmp_path, "meta-llama--Meta-Llama-3-8B", partial_rotary_factor=0.5)
    assert "phi3" in str(caught.value)


def test_phi3_null_is_transformers_refusal(tmp_path):
    with pytest.raises(PorterError, match="Phi3Config refuses"):
        read(tmp_path, PHI3, partial_rotary_factor=None)


def test_longrope_lists_sized_by_the_head_not_the_rotary_dimension_are_refused(tmp_path):
    """Phi-4-mini's file with lists of head_dim / 2 = 64 factors: 48 rotate."""
    rope = published(PHI4)["rope_scaling"]
    rope = {**rope, "short_factor": rope["short_factor"] + [1.0] * 16, "long_factor": rope["long_factor"] + [1.0] * 16}
    with pytest.raises(PorterError, match="Phi3Config refuses") as caught:  # transformers' own check, named
        read(tmp_path, PHI4, rope_scaling=rope)
    assert "short_factor field must have length 48, got 64" in str(caught.value)


def spec_file(tmp_path, body):
    path = tmp_path / "partial.toml"
    path.write_text('extends = "phi3_5"\n[model]\nname = "partial"\nclass_prefix = "Partial"\n'
                    'script = "pretrain_partial.py"\n' + body)
    return str(path)


def test_a_spec_checks_longrope_lists_against_the_rotary_dimension(tmp_path):
    """Phi-3.5's 48 factors fit its head of 96 whole; with 0.75 of it rotating, 36 do."""
    with pytest.raises(PorterError, match="do not fit the rotary dimension") as caught:
        load_spec(spec_file(tmp_path, "[position_embedding]\nrotary_percent = 0.75\n"))
    assert "rotary_dim = int(96 x rotary_percent 0.75) / 2 = 36" in str(caught.value)
    lists = "short_factor = [1.0, 2.0, 3.0]\nlong_factor = [4.0, 5.0, 6.0]\n"
    with pytest.raises(PorterError, match="do not fit the rotary dimension"):  # and without partial rotary
        load_spec(spec_file(tmp_path, "[position_embedding.rope_scaling]\n" + lists))
    spec = load_spec(spec_file(tmp_path, "[position_embedding]\nrotary_percent = 0.0625\n"
                               "[position_embedding.rope_scaling]\n" + lists))  # 6 of 96 channels: 3 frequencies
    assert spec[FIELD] == 0.0625


def test_an_odd_rotary_dimension_or_no_rotary_is_refused(tmp_path):
    with pytest.raises(PorterError, match="must be even"):  # int(96 x 0.0521) = 5 channels
        load_spec(spec_file(tmp_path, "[position_embedding]\nrotary_percent = 0.0521\n"
                            "[position_embedding.rope_scaling]\ntype = 'none'\n"))
    path = tmp_path / "gpt.toml"
    path.write_text('extends = "gpt"\n[model]\nname = "g"\nclass_prefix = "G"\nscript = "pretrain_g.py"\n'
                    "[position_embedding]\nrotary_percent = 0.5\n")
    with pytest.raises(PorterError, match="rotary positions only"):
        load_spec(str(path))


# -- the plan on the sample tree's profile (read for real) and on variants of it --------------------

@pytest.fixture(scope="module")
def sample():
    return profile_of(SourceTree.open(sample_tree_dir()))


@pytest.fixture(scope="module")
def phi4_spec(tmp_path_factory):
    return load_spec(str(model_folder(tmp_path_factory.mktemp("spec"), PHI4)))


def rotary_file(plan):
    (edit,) = [e for e in plan.edits if e.template == "rotary_embedding.py.j2"]
    return render(edit.template, plan, edit.context, edit.feature)


def test_porter_rotary_takes_the_switch_where_it_adds_rotary(sample, phi4_spec):
    plan = make_plan(phi4_spec, sample)
    assert plan.defaults["rotary_percent"] == 0.75
    (keyword,) = [e for e in plan.edits if e.feature == "rotary_percent" and e.name == "AddKeyword"]
    assert keyword.file == "megatron/model/transformer.py"
    assert any(e.feature == "rotary_percent" and e.name == "AddArguments" for e in plan.edits)
    text = rotary_file(plan)
    assert "def __init__(self, dim, theta=10000.0, scaling=None, rotary_percent=1.0):" in text
    assert "if rotated < t.size(-1):" in text


def test_a_later_port_keeps_an_earlier_ports_partial_rotary(sample):
    """porter rewrites rotary_embedding.py whole: LLaMA-3 applied after Phi-4-mini keeps the keyword
    Phi-4-mini's attention passes; on a tree without it, LLaMA-3's file is as ever."""
    llama3 = load_spec("llama3")
    assert "rotary_percent" not in rotary_file(make_plan(llama3, sample))
    earlier = dataclasses.replace(sample, facts={**sample.facts, "partial_rotary": True})
    plan = make_plan(llama3, earlier)
    assert "scaling=None, rotary_percent=1.0):" in rotary_file(plan)
    assert "rotary_percent" not in plan.defaults and any("keeps its partial rotary" in r for r in plan.reused)


def test_the_detector_reads_porters_own_rotary_file():
    text = environment().get_template("rotary_embedding.py.j2").render(partial_rotary={})
    path = "megatron/model/rotary_embedding.py"
    assert PartialRotary().detect({path: cst.parse_module(f"{GENERATED_MARK} 0.1\n" + text)}.get)
    assert not PartialRotary().detect({path: cst.parse_module(text)}.get)  # not porter's file: the tree's own
    whole = environment().get_template("rotary_embedding.py.j2").render()
    assert not PartialRotary().detect({path: cst.parse_module(f"{GENERATED_MARK} 0.1\n" + whole)}.get)


def test_the_trees_own_rotary_reuses_its_switch_or_is_refused(sample, phi4_spec):
    """A tree whose own rotary (microsoft's) porter reuses: its --rotary-percent set, no code added;
    without one, refused by name."""
    spec = phi4_spec.with_values(**{"position_embedding.rope_scaling.type": "none"})  # no scaling to port here
    rotary = next(s for s in spellings()["rotary"] if s.origin == "tree" and s.option == "--use-rotary-position-embeddings")
    own = {**sample.spellings, "rotary": rotary.with_(implemented=True)}
    with pytest.raises(PorterError, match="the tree's own rotary embedding rotates whole heads") as caught:
        make_plan(spec, dataclasses.replace(sample, spellings=own))
    assert "--rotary-percent" in caught.value.construct
    percent = next(s for s in spellings()["rotary_percent"] if s.origin == "tree")
    plan = make_plan(spec, dataclasses.replace(sample, spellings={**own, "rotary_percent": percent.with_(implemented=True)}))
    assert plan.defaults["rotary_percent"] == 0.75
    assert not [e for e in plan.edits if e.feature == "rotary_percent"]
    assert not [e for e in plan.edits if e.template == "rotary_embedding.py.j2"]


# -- porter's rotary embedding with the switch, against transformers' Phi-3 rotary -----------------

@pytest.fixture(scope="module")
def partial_module():
    """rotary_embedding.py as porter writes it for a partial rotary spec."""
    text = environment().get_template("rotary_embedding.py.j2").render(partial_rotary={"percent": "args.rotary_percent"})
    namespace = {"__name__": "partial_rotary_embedding"}
    exec(compile(text, "rotary_embedding.py", "exec"), namespace)
    return namespace


def hf_reference(length):
    """Phi-4-mini's published rotary (longrope, short list below its 4096) on a [1, 1, s, 128] head."""
    from transformers import Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding, apply_rotary_pos_emb

    config = Phi3Config(**{k: v for k, v in published(PHI4).items() if k != "model_type"})
    cos, sin = Phi3RotaryEmbedding(config)(torch.zeros(1), torch.arange(length)[None])
    return cos, sin, apply_rotary_pos_emb


def ours(module, rotate, q, k):
    args = type("Args", (), {"rope_scaling_type": "longrope", "rope_scaling_factor": 32.0,
                             "rope_scaling_original_max_positions": 4096, "rope_scaling_attention_factor": None,
                             "rope_scaling_short_factor": published(PHI4)["rope_scaling"]["short_factor"],
                             "rope_scaling_long_factor": published(PHI4)["rope_scaling"]["long_factor"]})()
    embedding = module["RotaryEmbedding"](128, theta=10000.0, scaling=module["rope_scaling_of"](args),
                                          rotary_percent=0.75)
    embedding_apply = module["apply_rotary_pos_emb"]
    module["apply_rotary_pos_emb"] = rotate or embedding_apply
    try:  # [s, b, np, hn] in the tree
        q2, k2 = embedding(q.permute(2, 0, 1, 3), k.permute(2, 0, 1, 3))
    finally:
        module["apply_rotary_pos_emb"] = embedding_apply
    return q2.permute(1, 2, 0, 3), k2.permute(1, 2, 0, 3), embedding


def test_the_rotary_embedding_rotates_the_first_96_channels_as_transformers(partial_module):
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 3, 40, 128, generator=generator), torch.randn(1, 1, 40, 128, generator=generator)
    cos, sin, hf_apply = hf_reference(40)
    hf_q, hf_k = hf_apply(q, k, cos, sin)
    q2, k2, embedding = ours(partial_module, None, q, k)
    assert embedding.inv_freq.shape == (48,) and cos.shape[-1] == 96
    assert torch.equal(q2, hf_q) and torch.equal(k2, hf_k)
    assert torch.equal(q2[..., 96:], q[..., 96:]) and not torch.equal(q2[..., :96], q[..., :96])
    plain = partial_module["rotate_half"]

    def last_channels(t, cos, sin):  # broken on purpose: channels [32, 128) turn, [0, 32) pass on
        return torch.cat((t[..., :32], t[..., 32:] * cos + plain(t[..., 32:]) * sin), dim=-1)

    assert not torch.allclose(ours(partial_module, last_channels, q, k)[0], hf_q, atol=1e-3)
    with pytest.raises(RuntimeError):  # the whole head by a 96-wide table: no model at all
        ours(partial_module, lambda t, cos, sin: t * cos + plain(t) * sin, q, k)


# -- under -m slow: verify, smoke and broken on purpose on the sample tree -------------------------

@pytest.fixture(scope="module")
def phi4(tmp_path_factory):
    """Phi-4-mini's config.json applied to a copy of the sample tree: (the config's folder, the tree)."""
    root = tmp_path_factory.mktemp("phi4")
    folder = model_folder(root, PHI4, published(PHI4))
    tree = copy_sample_tree(root / "Megatron-DeepSpeed")
    done = CliRunner().invoke(app, ["apply", str(folder), "--target", str(tree)])
    assert done.exit_code == 0, done.output
    return folder, tree


def verify(folder, tree, workdir, *more):
    return CliRunner().invoke(app, ["verify", str(folder), "--target", str(tree), "--workdir", str(workdir),
                                    "--json", *more])


@pytest.mark.slow
@pytest.mark.parametrize("more", [(), ("--tp", "2"), ("--pp", "2")], ids=["tp1", "tp2", "pp2"])
def test_phi4_mini_matches_hf(phi4, tmp_path, more):
    done = verify(*phi4, tmp_path, *more)
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    classes = ["Phi4MiniInstructModelPipe"] if "--pp" in more else ["Phi4MiniInstructModel", "Phi4MiniInstructModelPipe"]
    assert doc["passed"] and [r["class"] for r in doc["results"]] == classes, doc  # PP=2: the pipe model only
    for r in doc["results"]:
        assert r["max_abs_logit_diff"] <= 1e-4 and r["argmax_equal"] and r["first_divergence"] is None, r
        print(f"{r['class']} {' '.join(more) or 'tp1'}: max |dlogit| {r['max_abs_logit_diff']:.3g}")


@pytest.mark.slow
def test_rotating_the_last_channels_fails_at_the_rotary_embedding(phi4, tmp_path):
    folder, tree = phi4
    line = "        return torch.cat((apply_rotary_pos_emb(t[..., :rotated], cos, sin), t[..., rotated:]), dim=-1)\n"
    broken = edited_copy(tree, tmp_path / "tree",
                         ("megatron/model/rotary_embedding.py", line,
                          "        return torch.cat((t[..., :-rotated], apply_rotary_pos_emb(t[..., -rotated:], "
                          "cos, sin)), dim=-1)\n"))
    done = verify(folder, broken, tmp_path / "verify", "--models", "model")
    assert done.exit_code == 1, done.output[-3000:]
    (r,) = json.loads(done.stdout)["results"]
    assert r["first_divergence"]["module"] == "language_model.encoder.layers.0.attention.rotary_emb", r
    assert r["first_divergence"]["what"].startswith("rotary position embedding")


@pytest.mark.slow
def test_phi4_mini_trains(phi4, tmp_path):
    folder, tree = phi4
    done = CliRunner().invoke(app, ["smoke", str(folder), "--cpu", "--steps", "20", "--target", str(tree),
                                    "--workdir", str(tmp_path), "--json"])
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["last5_mean"] < doc["first5_mean"]
    assert "--rotary-percent 0.75 " in (tmp_path / "train.log").read_text().split("\n\n", 1)[0]
    print(f"smoke phi4-mini: {doc['first5_mean']:.4f} -> {doc['last5_mean']:.4f}")
