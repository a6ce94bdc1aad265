"""Published config.json files of the battery as tiny models of the same structure, end to end
(tests/families/battery_models.py): apply, verify against transformers' class of the file,
convert both ways. Group: llama."""

import pytest

from tests.families.battery import TINY
from tests.families.battery_models import check_config, ported_tree


@pytest.fixture(scope="module")
def ported(tmp_path_factory):
    return ported_tree(tmp_path_factory.mktemp("battery_llama"), TINY["llama"])


@pytest.mark.parametrize("stem", TINY["llama"])
def test_the_published_config_ports_verifies_and_round_trips(ported, tmp_path, stem):
    tree, folders = ported
    check_config(tree, folders[stem], tmp_path / "verify")


def test_the_proof_sees_a_misreading(ported, tmp_path, monkeypatch):
    """Were porter to give Meta-Llama-3-8B (`rope_scaling: null`) LLaMA-3.1's scaling, as its
    closest-family reading once did, verify's reference (transformers' reading of the user's own
    file) fails the port."""
    from porter.differences.rope_scaling import RopeScaling
    from porter.catalog import load_spec
    from porter.verify.parity import VerifyOptions, describe, verify

    tree, folders = ported
    spec = load_spec(str(folders["meta-llama--Meta-Llama-3-8B"]))
    assert spec["position_embedding.rope_scaling.type"] == "none"
    llama31 = load_spec(str(folders["meta-llama--Llama-3.1-8B"]))
    misread = {k: v for k, v in llama31.values.items() if k.startswith("position_embedding.rope_scaling.")}
    monkeypatch.setattr(RopeScaling, "from_hf", lambda self, config: misread)
    result = verify(spec, tree, tmp_path / "verify", VerifyOptions(kinds=("model",)))
    report = describe(result).replace(str(folders["meta-llama--Meta-Llama-3-8B"].parent) + "/", "./")
    print(report)
    assert not result.passed and result.results[0].max_logit_diff > 1e-3
    assert "rotary" in result.results[0].first_divergence.what
    from tests.docs.runner import checked_block, matches

    shown = checked_block("test_the_proof_sees_a_misreading")  # the README shows this report
    assert matches(shown.text, report, shown.tolerance), report


def test_verify_runs_the_users_own_weights_or_says_the_bytes_they_need(ported, tmp_path):
    """`porter verify MODEL --hf DIR`: the user's HF folder through both sides, nothing shrunk;
    weights that would not fit in memory are refused before anything is read, with the bytes."""
    import json

    from typer.testing import CliRunner

    from porter.cli import app
    from porter.convert.shape_check import parameter_count
    from porter.verify.user_model import reference_from_file, shrink
    from tests.families.battery import published

    tree, folders = ported
    folder = folders["meta-llama--Meta-Llama-3-8B"]
    shrunk = shrink(published("meta-llama--Meta-Llama-3-8B"))
    mine = tmp_path / "my-llama3"
    reference_from_file(shrunk.config, "LlamaForCausalLM", 0.1, 7, "sdpa").save_pretrained(str(mine))
    (mine / "config.json").write_text(json.dumps(shrunk.config))  # the user's own file
    runner = CliRunner()
    result = runner.invoke(app, ["verify", str(folder), "--target", str(tree), "--hf", str(mine), "--models", "model",
                                 "--workdir", str(tmp_path / "work")])
    print(result.output)
    assert result.exit_code == 0, result.output
    assert f"from_pretrained({mine}) in fp32: your own weights, nothing shrunk" in result.output
    assert "max |logit - HF| = 0 " in result.output
    # the published 8B: 8,030,261,248 parameters, five copies in fp32, refused where memory is short
    assert parameter_count(published("meta-llama--Meta-Llama-3-8B"), "LlamaForCausalLM") == 8_030_261_248
    big = runner.invoke(app, ["verify", str(folder), "--target", str(tree), "--hf", str(folder), "--models", "model"],
                        env={"PORTER_MEMORY_AVAILABLE": str(64 << 30)})
    assert big.exit_code == 2, big.output
    assert f"{5 * 4 * 8_030_261_248 + (1 << 30):,} bytes needed, {64 << 30:,} available" in big.output


@pytest.mark.slow
def test_verify_runs_the_users_own_weights_in_bf16(ported, tmp_path):
    """`--hf DIR --dtype bf16`: both sides in bf16; the logits within 16 bf16 steps of their size."""
    from porter.catalog import load_spec
    from porter.verify.parity import VerifyOptions, describe, verify
    from porter.verify.user_model import reference_from_file, shrink
    from tests.families.battery import published

    import json

    tree, folders = ported
    shrunk = shrink(published("meta-llama--Meta-Llama-3-8B"))
    mine = tmp_path / "my-llama3"
    reference_from_file(shrunk.config, "LlamaForCausalLM", 0.1, 7, "sdpa").save_pretrained(str(mine))
    (mine / "config.json").write_text(json.dumps(shrunk.config))
    result = verify(load_spec(str(folders["meta-llama--Meta-Llama-3-8B"])), tree, tmp_path / "verify",
                    VerifyOptions(kinds=("model",), hf_dir=mine, dtype="bf16"))
    print(describe(result))
    assert result.passed and "in bf16" in result.reference[0]
    assert 1e-3 < result.results[0].tolerance < 1.0
