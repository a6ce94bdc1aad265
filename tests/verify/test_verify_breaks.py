"""Ports broken on purpose: verify must fail and name the module that is wrong."""

import json

import pytest
from typer.testing import CliRunner

from porter.catalog import load_spec
from porter.cli import app
from porter.verify.parity import VerifyOptions, describe, verify
from tests.docs.runner import checked_block, matches

SPEC = load_spec("llama")
LAYER0 = "language_model.encoder.layers.0"

ROTATE_HALF = ("    x1, x2 = x.chunk(2, dim=-1)\n    return torch.cat((-x2, x1), dim=-1)",
               "    x1, x2 = x[..., 0::2], x[..., 1::2]\n    return torch.stack((-x2, x1), dim=-1).flatten(-2)")
# both angle tables: the cached one (positions 0..s-1) and the one for explicit position ids
PAIRED_ANGLES = [("angles = torch.cat((freqs, freqs), dim=-1)  #", "angles = freqs.repeat_interleave(2, dim=-1)  #"),
                 ("angles = torch.cat((freqs, freqs), dim=-1).transpose",
                  "angles = freqs.repeat_interleave(2, dim=-1).transpose")]
MLP_OUT = ("            args.ffn_hidden_size,\n            args.hidden_size,\n            input_is_parallel=True,\n"
           "            init_method=output_layer_init_method,\n            skip_bias_add=True,\n")

BREAKS = {
    # Meta's interleaved pairs (2i, 2i+1) instead of HF's rotate_half pairs (i, i + d/2)
    "rope interleaved": ("megatron/model/rotary_embedding.py", [ROTATE_HALF, *PAIRED_ANGLES],
                         f"{LAYER0}.attention.rotary_emb"),
    # theta^(-2i/(2d)) instead of theta^(-2i/d)
    "rope angle": ("megatron/model/rotary_embedding.py", [(".float() / dim))", ".float() / (2 * dim)))")],
                   f"{LAYER0}.attention.rotary_emb"),
    # a bias the no-bias switch does not reach
    "bias left on": ("megatron/model/transformer.py",
                     [(MLP_OUT + "            bias=not args.no_bias)", MLP_OUT + "            bias=True)")],
                     f"{LAYER0}.mlp.dense_4h_to_h"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_verify_names_the_broken_module(broken_copy, tmp_path, name):
    file, edits, module = BREAKS[name]
    result = verify(SPEC, broken_copy(file, edits), tmp_path / "verify", VerifyOptions(kinds=("model",)))
    assert not result.passed
    (r,) = result.results
    first = r.first_divergence
    assert first is not None and first.name == module, [(p.name, p.max_diff) for p in r.probes]
    assert first.max_diff > 1e-2
    if name == "rope interleaved":  # the README shows this report: its figures are these
        shown = checked_block("test_verify_names_the_broken_module[rope interleaved]")
        assert matches(shown.text, describe(result), shown.tolerance), describe(result)
    if name == "bias left on":
        assert {p["tensor"] for p in r.structure} >= {f"{LAYER0}.mlp.dense_4h_to_h.bias"}
        assert r.loaded_by.startswith("porter (loosely")


def test_gate_and_up_swapped_fails_the_command(broken_copy, tmp_path):
    tree = broken_copy("megatron/model/swiglu.py", [("    gate, up = torch.chunk(x, 2, dim=-1)",
                                                      "    up, gate = torch.chunk(x, 2, dim=-1)")])
    done = CliRunner().invoke(app, ["verify", "llama", "--target", str(tree), "--models", "model",
                                    "--workdir", str(tmp_path / "verify"), "--json"])
    assert done.exit_code == 1, done.output
    (result,) = json.loads(done.output)["results"]
    assert result["passed"] is False and result["max_abs_logit_diff"] > 1e-2
    assert result["first_divergence"]["module"] == f"{LAYER0}.mlp"  # the SwiGLU activation
    assert "SwiGLU" in result["first_divergence"]["what"]
    human = CliRunner().invoke(app, ["verify", "llama", "--target", str(tree), "--models", "model",
                                     "--workdir", str(tmp_path / "verify2")])
    assert human.exit_code == 1
    assert f"first divergence: {LAYER0}.mlp (SwiGLU activation" in human.output
