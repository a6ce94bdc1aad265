"""`porter smoke` for Qwen3 and OLMo-2 on the tree holding both: each trains, the loss falling, on the
pipeline engine and on the plain one; at TP=2 Qwen3's per-head q/k norm weights, whole on each rank,
stay equal on both ranks through training (their gradients are summed over the ranks)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from porter.catalog import load_spec
from porter.cli import app
from porter.smoke import SmokeConfig, run_smoke

def smoke(family, tree, workdir, *more):
    done = CliRunner().invoke(app, ["smoke", family, "--target", str(tree), "--steps", "10",
                                    "--workdir", str(workdir), "--json", *more])
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["last5_mean"] < doc["first5_mean"]
    assert f"pretrain_{family}.py" in (workdir / "train.log").read_text().split("\n\n", 1)[0]
    print(f"smoke {family} {' '.join(more) or 'pipe'}: {doc['first5_mean']:.4f} -> {doc['last5_mean']:.4f}")
    return doc


@pytest.mark.parametrize(("family", "engine"), [
    ("qwen3", ()), ("qwen3", ("--no-pipe",)), ("olmo2", ("--no-pipe",)), ("olmo2", ()),
], ids=["qwen3-pipe", "qwen3-plain", "olmo2-plain", "olmo2-pipe"])
def test_qwen3_and_olmo2_train(qwen3_olmo2_tree, smoke_workdir, family, engine):
    smoke(family, qwen3_olmo2_tree, smoke_workdir, *engine)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen3", "olmo2"])
def test_qk_norm_weights_train_alike_on_two_tensor_parallel_ranks(qwen3_olmo2_tree, smoke_workdir, tmp_path, family):
    saved = tmp_path / "checkpoints"
    run = run_smoke(load_spec(family), qwen3_olmo2_tree, smoke_workdir,
                    SmokeConfig(steps=20, nproc=2, tensor_parallel=2, pipe=False,
                                extra_args=["--save", str(saved), "--save-interval", "20"]))
    assert run.returncode == 0 and run.passed, run.log[-3000:]
    print(f"smoke {family} TP=2 plain: {run.losses[:5]} ... {run.losses[-5:]}")
    files = sorted(saved.rglob("mp_rank_0*_model_states.pt")) or sorted(saved.rglob("mp_rank_0*/*.pt"))
    assert len(files) == 2, files
    ranks = []
    for path in files:
        state = torch.load(path, map_location="cpu", weights_only=False)["module"]
        flat: dict = {}

        def walk(prefix, value, flat=flat):
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, inner)
            elif torch.is_tensor(value):
                flat[prefix] = value
        walk("", state)
        ranks.append({k: v for k, v in flat.items() if "_layernorm.weight" in k and ".attention." in k})
    assert ranks[0] and sorted(ranks[0]) == sorted(ranks[1]), ranks[0].keys()
    for key, weight in ranks[0].items():
        assert not torch.equal(weight, torch.ones_like(weight)), f"{key} did not train"
        if family == "qwen3":  # per head: whole on each rank, the same
            assert torch.equal(weight, ranks[1][key]), key
        else:  # over the whole projection: each rank its own heads' half
            assert weight.shape == ranks[1][key].shape and not torch.equal(weight, ranks[1][key]), key
