"""Opt-in (PORTER_REAL_TREES), slow: the families of issue 20 at TP=2 and PP=2 on real trees.

Each pair is ported once (`porter apply FAMILY` on a copy of the tree) and verified against HF at
TP=2 (both generated classes) and at PP=2 (the pipe), as `porter verify --tp 2` / `--pp 2` run
them. A family with one key/value head (Gemma's and Gemma-3's bundled checkpoints, multi-query)
cannot split it over two ranks: verify refuses by name, exit 2. Their tensor-parallel path is
verified with a config.json whose heads split (Gemma-7B's, multi-head; a Gemma-3 shape with four
key/value heads of eight, the 4B's heads without its rope scaling). OLMo-2's norm over the whole
query and key projections all-reduces its sum of squares over the tensor-parallel ranks: a copy
of the port without that all-reduce fails verify at TP=2, naming the query norm.

Figures on 2 cores (max |logit - HF|, both classes): TP=2 2e-6 (Qwen3, OLMo-2, Phi-3, Phi-3.5)
to 5e-6 (Gemma-2, the Gemma-3 shape); PP=2 0 to 1.4e-5 (Gemma-3 on Habana's head, within the
relative tolerance); without the all-reduce 2.7. A case takes about 1 minute; the whole module
about 40.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from porter.catalog import load_spec
from porter.cli import app
from porter.verify.parity import VerifyOptions, verify
from porter.verify.reference import TinyConfig
from tests.families.test_gemma_config import GEMMA_7B
from tests.realtrees.trees import NEEDS_TREES, copy_of

HF_CONFIGS = Path(__file__).resolve().parents[1] / "families" / "data" / "hf_configs"

pytestmark = [
    *NEEDS_TREES,
    pytest.mark.slow,
]

PAIRS = [("dspin-head", "qwen3"), ("dspin-head", "gemma2"), ("dspin-head", "gemma3"), ("dspin-head", "olmo2"),
         ("dspin-head", "phi3_5"), ("ms-llama", "qwen3"), ("ms-llama", "gemma3"), ("ms-llama", "phi3"),
         ("hab-llama", "olmo2"), ("hab-llama", "gemma"), ("hmd-head", "gemma2"), ("hmd-head", "gemma3"),
         ("ollf-head", "qwen3"), ("ollf-head", "gemma3")]
ONE_KV_HEAD = {"gemma", "gemma3"}  # the bundled checkpoints are multi-query: TP=2 is refused
LAYOUTS = {"tp2": VerifyOptions(tensor_parallel=2), "pp2": VerifyOptions(pipeline_parallel=2, kinds=("pipe",))}


def _folder(root: Path, name: str, config: dict) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def ported(tmp_path_factory):
    """port(label, model) -> a copy of the tree with `porter apply model` done (one per pair)."""
    done: dict[tuple[str, str], Path] = {}

    def port(label: str, model: str) -> Path:
        if (label, model) not in done:
            tree = copy_of(label, tmp_path_factory.mktemp(f"{label}-{Path(model).name}") / label)
            applied = CliRunner().invoke(app, ["apply", model, "--target", str(tree)])
            assert applied.exit_code == 0, applied.output
            done[label, model] = tree
        return done[label, model]

    return port


def verified(result, classes: list[str]) -> dict[str, float]:
    """Every class passed verify's own (relative) tolerance, argmax equal, no probe diverging."""
    assert result.passed, result.as_dict()
    assert [r.model_class for r in result.results] == classes
    for r in result.results:
        assert r.argmax_equal and not r.structure and not [p for p in r.probes if p.diverges], r.as_dict()
    return {r.model_class: r.max_logit_diff for r in result.results}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("label, family", PAIRS)
def test_a_family_verifies_at_tp2_and_pp2_on_a_real_tree(ported, label, family, layout, tmp_path):
    tree = ported(label, family)
    spec = load_spec(family)
    if layout == "tp2" and family in ONE_KV_HEAD:
        refused = CliRunner().invoke(app, ["verify", family, "--target", str(tree), "--tp", "2",
                                           "--workdir", str(tmp_path / "refused")])
        assert refused.exit_code == 2, refused.output
        assert "key/value heads (1) do not split over 2 tensor-parallel ranks" in refused.output
        assert "choose a tensor-parallel size that divides 1" in refused.output
        return
    options = LAYOUTS[layout]
    classes = [f"{spec.model_class}Pipe"] if options.kinds == ("pipe",) else [spec.model_class,
                                                                               f"{spec.model_class}Pipe"]
    print(verified(verify(spec, tree, tmp_path, options), classes))


@pytest.mark.parametrize("label, name, config", [
    ("hab-llama", "gemma-7b", GEMMA_7B),
    ("dspin-head", "gemma-3-kv4", None),
    ("hmd-head", "gemma-3-kv4", None),
])
def test_gemmas_tensor_parallel_path_verifies_with_heads_that_split(ported, label, name, config, tmp_path_factory,
                                                                   tmp_path):
    """Gemma-7B (a key/value head per query head) and a Gemma-3 of four key/value heads of eight
    (gemma-3-1b-pt's config with the 4B's heads, no rope scaling; six layers: five local, one
    global) at TP=2."""
    options = LAYOUTS["tp2"]
    if config is None:
        config = json.loads((HF_CONFIGS / "google--gemma-3-1b-pt.json").read_text())
        config.update(num_attention_heads=8, num_key_value_heads=4)
        options = VerifyOptions(tiny=TinyConfig(num_layers=6), tensor_parallel=2)
    folder = _folder(tmp_path_factory.mktemp("hf"), name, config)
    tree = ported(label, str(folder))
    spec = load_spec(str(folder))
    result = verify(spec, tree, tmp_path, options)
    print(verified(result, [spec.model_class, f"{spec.model_class}Pipe"]))
    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf["num_key_value_heads"] % 2 == 0 and result.results[0].tensor_parallel == 2


def test_olmo2s_whole_projection_norm_needs_its_all_reduce_at_tp2(ported, tmp_path):
    """The norm over the whole query projection divides by the mean of squares of every rank's
    heads: with each rank's own sum alone, verify fails at the query norm."""
    tree = tmp_path / "tree"
    shutil.copytree(ported("dspin-head", "olmo2"), tree, symlinks=True)
    module = tree / "megatron/model/qk_norm.py"
    text = module.read_text()
    reduce = "        if world > 1:\n            squares = _SumOverRanks.apply(squares, group)\n"
    assert text.count(reduce) == 1
    module.write_text(text.replace(reduce, ""))
    spec = load_spec("olmo2")
    result = verify(spec, tree, tmp_path / "verify", LAYOUTS["tp2"])
    assert not result.passed
    for r in result.results:
        assert r.first_divergence is not None, r.as_dict()
        assert r.first_divergence.name == "language_model.encoder.layers.0.self_attention.q_layernorm", r.as_dict()
