"""A published config.json as a user brings it, end to end: apply, verify, convert both ways.

For each config of a group (battery.TINY), on one copy of the sample tree per group:
1. `porter apply <folder> --target <tree>`, the folder holding the published config.json;
2. `porter verify`'s check of that config: transformers' class built from the user's file
   (sizes shrunk, every ratio and number kept) against the generated model, the HF weights
   converted to the tree's checkpoint by porter convert's code; passes at <= 1e-5;
3. that checkpoint converted back to HF (megatron-to-hf): its config.json is the user's file
   (shrunk) field for field as transformers reads it, and the HF model gives the original's
   logits exactly.
Each test prints its figures (`pytest -s` shows them).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.cli import app
from porter.verify.parity import VerifyOptions, verify
from tests.conftest import copy_sample_tree
from tests.families.battery import model_folder


def ported_tree(root: Path, stems: list[str]) -> tuple[Path, dict[str, Path]]:
    """A copy of the sample tree with each config's port applied, and each config's folder."""
    tree = copy_sample_tree(root / "Megatron-DeepSpeed")
    folders = {}
    for stem in stems:
        folder = model_folder(root / "models", stem)
        result = CliRunner().invoke(app, ["apply", str(folder), "--target", str(tree)])
        assert result.exit_code == 0, f"{stem}: {result.output}"
        folders[stem] = folder
    return tree, folders


def loaded(folder: Path):
    """The HF model of a folder as a user loads it (fp32)."""
    import transformers

    from porter.verify.reference import reference_attention

    config = json.loads((folder / "config.json").read_text())
    cls = getattr(transformers, config["architectures"][0])
    # SDPA, or eager where the class has none (Gemma-2's soft-capped scores)
    return cls.from_pretrained(str(folder), dtype=torch.float32, attn_implementation=reference_attention(cls)).eval()


def check_config(tree: Path, folder: Path, workdir: Path) -> dict:
    """Verify one config's port, then convert its checkpoint back and compare. Returns figures."""
    from tests.families.test_battery_reading import transformers_reads

    spec = load_spec(str(folder))
    result = verify(spec, tree, workdir, VerifyOptions(kinds=("model",)))
    assert result.passed, "\n".join(result.reference) + "\n" + json.dumps(result.as_dict()["results"], default=str)[:3000]
    assert result.reference and "shrunk:" in result.reference[1]
    # the way back: the checkpoint verify loaded, to HF
    checkpoint = workdir / "megatron-model-tp1-pp1"
    back = workdir / "hf-again"
    convert.hf_from_checkpoint(spec, tree, checkpoint, back)
    sent = json.loads((workdir / "hf" / "config.json").read_text())  # the user's file, sizes shrunk
    returned = json.loads((back / "config.json").read_text())
    assert transformers_reads(returned) == {**transformers_reads(sent), "dtype": "float32"}
    # the same weights, bit for bit, as transformers loads them; hence the same logits (a fused
    # expert tensor built from per-expert files may take another kernel path: ~1e-6)
    original, again = loaded(workdir / "hf"), loaded(back)
    mine, theirs = again.state_dict(), original.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    tokens = torch.randint(0, result.config["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        drift = (again(tokens).logits - original(tokens).logits).abs().max().item()
    assert drift <= 1e-5
    run = result.results[0]
    worst = max(run.probes, key=lambda p: p.max_diff / max(1.0, p.scale), default=None)
    figures = {"model": run.model_class, "max_abs_logit_diff": run.max_logit_diff, "tolerance": run.tolerance,
               "argmax_equal": run.argmax_equal, "loss_diff": abs(run.loss - run.reference_loss),
               "max_abs_token_loss_diff": run.max_token_loss_diff,
               "worst_probe": "every probe 0" if worst is None or worst.max_diff == 0 else
               f"{worst.name} ({worst.what}) {worst.max_diff:.3g}",
               "round_trip_logit_diff": drift, "seconds": round(result.seconds, 1),
               "shrunk": result.reference[1].strip(), "kept": result.reference[2].strip()}
    print(json.dumps(figures))
    return figures
