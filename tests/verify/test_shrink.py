"""verify's shrinking of a user's config.json: only layers, width and vocabulary shrink; every
ratio and structural number stays as published, and the report says what shrank."""

from porter.catalog import differences
from porter.hf_reading import reading
from porter.verify.user_model import shrink
from tests.families.battery import published


def sizes(config):
    read = reading(config)
    heads, kv, hidden = read["num_attention_heads"], read["num_key_value_heads"], read["hidden_size"]
    head_dim = read.get("head_dim") or hidden // heads
    return {"per_group": heads // kv, "attention_width": heads * head_dim / hidden,
            "mlp": read["intermediate_size"] / hidden, "rope": read["rope_parameters"],
            "tied": read["tie_word_embeddings"], "layers": read["num_hidden_layers"], "vocab": read["vocab_size"]}


def test_mistral_nemo_keeps_its_head_size_below_hidden_over_heads():
    published_ = published("mistralai--Mistral-Nemo-Base-2407")
    shrunk = shrink(published_, differences())
    before, after = sizes(published_), sizes(shrunk.config)
    assert after["attention_width"] == before["attention_width"] == 0.8
    assert after["per_group"] == before["per_group"] == 4 and after["mlp"] == before["mlp"] == 2.8
    assert after["rope"] == before["rope"] and (after["layers"], after["vocab"]) == (2, 256)
    assert shrunk.config["head_dim"] * shrunk.config["num_attention_heads"] != shrunk.config["hidden_size"]
    assert "hidden 5120 -> 160 (heads x head size = 0.8 x hidden, as published)" in shrunk.shrunk


# where 2 layers would leave out a kind of layer the file has: its first of each kind kept
MORE_LAYERS = {"google--gemma-3-1b-pt": 6, "deepseek-ai--DeepSeek-V3": 4}


def test_every_ratio_and_number_is_kept_for_every_published_config():
    from tests.families.battery import BATTERY, Refused

    for stem, expected in BATTERY.items():
        if isinstance(expected, Refused):
            continue
        before, after = sizes(published(stem)), sizes(shrink(published(stem), differences()).config)
        for key in ("per_group", "rope", "tied"):
            assert after[key] == before[key], (stem, key)
        if "kv_lora_rank" not in published(stem):  # latent attention: its width is its ranks', not heads x head_dim
            assert abs(after["attention_width"] - before["attention_width"]) < 0.05, stem
        assert abs(after["mlp"] - before["mlp"]) < 0.05, stem
        assert (after["layers"], after["vocab"]) == (MORE_LAYERS.get(stem, 2), 256), stem


def test_gemma_3_keeps_its_first_global_layer():
    """gemma-3-1b-pt windows 5 layers of 6: at 2 layers verify would prove the windowed layers
    only, never the global one's rotary base; it runs 6, five windowed and one global, as
    transformers reads the shrunk file, whether the file gives a pattern or writes layer_types."""
    pattern = published("google--gemma-3-1b-pt")
    written = {**{k: v for k, v in pattern.items() if k != "sliding_window_pattern"},
               "layer_types": reading(pattern)["layer_types"]}
    for raw in (pattern, written):
        shrunk = shrink(raw, differences())
        assert shrunk.num_layers == 6 and shrunk.shrunk[0] == "layers 26 -> 6"
        assert "6 layers, not 2: its first full_attention and sliding_attention layers among them" in shrunk.shrunk
        assert reading(shrunk.config)["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    gemma2 = shrink(published("google--gemma-2-9b"), differences())  # its 2nd layer is global: 2 are enough
    assert gemma2.num_layers == 2 and reading(gemma2.config)["layer_types"] == ["sliding_attention", "full_attention"]


def test_a_window_shrinks_below_the_batch_and_the_report_says_so():
    shrunk = shrink(published("mistralai--Mistral-7B-v0.1"), differences())
    assert shrunk.config["sliding_window"] == 8
    assert "sliding window 4096 -> 8 (shorter than the 32-token batch)" in shrunk.shrunk
    assert "sliding_window" not in shrink(published("mistralai--Mistral-7B-v0.3"), differences()).config or \
        shrink(published("mistralai--Mistral-7B-v0.3"), differences()).config["sliding_window"] is None


def test_experts_top_k_and_llama3_numbers_are_kept():
    mixtral = shrink(published("mistralai--Mixtral-8x7B-v0.1"), differences()).config
    assert (mixtral["num_local_experts"], mixtral["num_experts_per_tok"]) == (8, 2)
    llama = shrink(published("meta-llama--Llama-3.1-8B"), differences())
    assert llama.config["rope_scaling"] == published("meta-llama--Llama-3.1-8B")["rope_scaling"]
    assert any("original_max_position_embeddings 8192" in line for line in llama.kept)


def test_the_engine_shrinks_the_sizes_and_each_difference_its_own_fields():
    """shrink names no difference: a window shrinks because SlidingWindow's shrink_hf says so,
    and what is kept as published is the differences' own config.json fields (hf_fields)."""
    from porter.differences.base import Difference
    from porter.differences.sliding_window import SlidingWindow

    class Eps(Difference):
        name = "eps_for_the_test"
        hf_fields = ("hidden_act", "rms_norm_eps")

        def shrink_hf(self, read, out, layers, seq_length):
            out["rms_norm_eps"] = 1e-3
            return [f"rms_norm_eps {read['rms_norm_eps']} -> 1e-3"]

    mistral = published("mistralai--Mistral-7B-v0.1")
    alone = shrink(mistral, [Eps()])
    assert alone.config["sliding_window"] == 4096  # no difference shrank it
    assert alone.shrunk[-1] == "rms_norm_eps 1e-05 -> 1e-3" and alone.config["rms_norm_eps"] == 1e-3
    assert alone.kept == ["hidden_act silu"]  # rms_norm_eps changed: not kept as published
    both = shrink(mistral, [Eps(), SlidingWindow()])
    assert both.config["sliding_window"] == 8 and both.shrunk[-1].startswith("sliding window 4096 -> 8")
    assert "sliding_window" not in " ".join(both.kept)


def test_deepseek_v3_keeps_a_layer_with_experts_and_its_rope_head_size():
    """first_k_dense_replace 3: 2 layers were a dense model; 4 hold its first expert layer. The
    latent's head size stays qk_rope_head_dim, as transformers derives it."""
    shrunk = shrink(published("deepseek-ai--DeepSeek-V3"), differences())
    assert shrunk.num_layers == 4 and shrunk.config["first_k_dense_replace"] == 3
    assert "4 layers, not 2: its first dense layer (0) and first expert layer (3) among them" in shrunk.shrunk
    assert shrunk.config["head_dim"] == shrunk.config["qk_rope_head_dim"] == 64
    qwen = published("Qwen--Qwen3-30B-A3B")
    spread = shrink({**qwen, "decoder_sparse_step": 2, "mlp_only_layers": [2, 5, 40]}, differences())
    assert spread.num_layers == 2 and spread.config["mlp_only_layers"] == [] and spread.shrunk[0] == "layers 48 -> 2"
    late = shrink({**qwen, "mlp_only_layers": [0, 1, 2]}, differences())
    assert late.num_layers == 4 and late.config["mlp_only_layers"] == [0, 1, 2]


def test_longrope_lists_per_rotary_frequency_keep_a_partial_rotary_head_whole():
    """Phi-4-mini: 48 factors for 0.75 of a head of 128 (96 channels rotate): the head keeps its size."""
    published_ = published("microsoft--Phi-4-mini-instruct")
    shrunk = shrink(published_, differences())
    assert shrunk.config["hidden_size"] // shrunk.config["num_attention_heads"] == 128
    assert len(sizes(shrunk.config)["rope"]["long_factor"]) == 48
