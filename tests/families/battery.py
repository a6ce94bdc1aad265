"""The battery: published config.json files (tests/families/data/hf_configs/, written from public
knowledge of each checkpoint's file: facts, not code) and what porter must do with each.

Each file is named <owner>--<repo>.json after the checkpoint it copies. Every one is read by
porter and by transformers and compared field for field (test_battery_reading.py); those in
TINY also become a tiny model of the same structure, sizes shrunk, that goes through apply,
convert both ways and verify (test_battery_models*.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data" / "hf_configs"


@dataclass(frozen=True)
class Refused:
    """A family porter does not port: words its refusal must say, and the closest family."""

    says: tuple[str, ...]
    closest: str


# file stem -> (the bundled family porter reads it with, what it shows) or Refused
BATTERY: dict[str, tuple[str, str] | Refused] = {
    "huggyllama--llama-7b": ("llama", "LLaMA-1: eps 1e-6, no num_key_value_heads (one per head), max_sequence_length"),
    "meta-llama--Llama-2-7b-hf": ("llama", "LLaMA-2: eps 1e-5, rope_scaling null"),
    "meta-llama--Llama-2-13b-hf": ("llama", "LLaMA-2 13B: 40 heads"),
    "meta-llama--Llama-2-70b-hf": ("llama", "LLaMA-2 70B: 8 key/value heads of 64"),
    "meta-llama--Meta-Llama-3-8B": ("llama", "LLaMA-3: rope_scaling null, theta 5e5: no scaling"),
    "meta-llama--Meta-Llama-3-8B-Instruct": ("llama", "LLaMA-3 instruct: eos 128009"),
    "meta-llama--Meta-Llama-3-70B": ("llama", "LLaMA-3 70B: no scaling"),
    "meta-llama--Llama-3.1-8B": ("llama", "LLaMA-3.1: llama3 scaling factor 8"),
    "meta-llama--Llama-3.1-70B": ("llama", "LLaMA-3.1 70B: llama3 scaling"),
    "meta-llama--Llama-3.2-1B": ("llama", "LLaMA-3.2 1B: tied, head_dim 64, llama3 factor 32"),
    "meta-llama--Llama-3.2-3B": ("llama", "LLaMA-3.2 3B: tied, 24 heads of 128"),
    "deepseek-ai--DeepSeek-R1-Distill-Llama-8B": ("llama", "R1-Distill on LLaMA-3.1"),
    "codellama--CodeLlama-7b-hf": ("llama", "CodeLlama: theta 1e6, vocab 32016"),
    "TinyLlama--TinyLlama-1.1B-intermediate-step-1431k-3T": ("llama", "TinyLlama: 4 key/value heads of 32"),
    "HuggingFaceTB--SmolLM2-135M": ("llama", "SmolLM2: is_llama_config, rope_interleaved false, 9 heads / 3"),
    "HuggingFaceTB--SmolLM2-1.7B": ("llama", "SmolLM2 1.7B: tied, theta 130000"),
    "lmsys--longchat-7b-v1.5-32k": ("llama", "longchat: linear rope scaling factor 8"),
    "01-ai--Yi-6B": ("llama", "Yi: 4 key/value heads, theta 5e6, vocab 64000"),
    "deepseek-ai--deepseek-llm-7b-base": ("llama", "DeepSeek-LLM: 30 layers, vocab 102400"),
    "mistralai--Mistral-7B-v0.1": ("mistral", "Mistral v0.1: a 4096 window, theta 10000"),
    "mistralai--Mistral-7B-Instruct-v0.2": ("mistral", "Mistral v0.2: window null, theta 1e6"),
    "mistralai--Mistral-7B-v0.3": ("mistral", "Mistral v0.3: window null, vocab 32768"),
    "mistralai--Mistral-Nemo-Base-2407": ("mistral", "Mistral-Nemo: head_dim 128, 32 x 128 < hidden 5120"),
    "mistralai--Mistral-Small-24B-Base-2501": ("mistral", "Mistral-Small: head_dim 128, theta 1e8"),
    "mistralai--Mixtral-8x7B-v0.1": ("mixtral", "Mixtral 8x7B: 8 experts, top-2, window null"),
    "mistralai--Mixtral-8x22B-v0.1": ("mixtral", "Mixtral 8x22B: 48 heads, aux loss 0.001"),
    "Qwen--Qwen1.5-0.5B": ("qwen2", "Qwen1.5 0.5B: tied, a window use_sliding_window leaves off"),
    "Qwen--Qwen1.5-7B": ("qwen2", "Qwen1.5 7B: one key/value head each"),
    "Qwen--Qwen2-7B": ("qwen2", "Qwen2 7B: 4 key/value heads of 28"),
    "Qwen--Qwen2.5-0.5B": ("qwen2", "Qwen2.5 0.5B: tied, use_mrope false"),
    "Qwen--Qwen2.5-7B-Instruct": ("qwen2", "Qwen2.5 7B instruct: untied"),
    "Qwen--Qwen2.5-7B-Instruct-YaRN": ("qwen2", "Qwen2.5 7B with its documented YaRN rope_scaling (factor 4)"),
    "deepseek-ai--DeepSeek-R1-Distill-Qwen-1.5B": ("qwen2", "R1-Distill on Qwen2.5: use_mrope false, window off"),
    "google--gemma-2b": ("gemma", "Gemma 2B: multi-query, legacy hidden_act gelu (the tanh GELU)"),
    "google--gemma-7b": ("gemma", "Gemma 7B: head_dim 256, 16 x 256 > hidden 3072"),
    "google--gemma-1.1-2b-it": ("gemma", "Gemma 1.1 2B: hidden_activation beside hidden_act"),
    "google--gemma-2-9b": ("gemma2", "Gemma-2 9B: soft-capped scores and logits, a 4096 window on every other "
                           "layer, sandwich norms, sliding_window_size (an old name nothing reads)"),
    "google--gemma-2-2b": ("gemma2", "Gemma-2 2B: 4 key/value heads of 8, head_dim 256 > hidden / heads"),
    "google--gemma-3-1b-pt": ("gemma3", "Gemma-3 1B: q/k norm, a 512 window on 5 layers of 6, rope_local_base_freq "
                              "10000 beside rope_theta 1e6, multi-query"),
    "microsoft--Phi-3-mini-4k-instruct": ("phi3", "Phi-3 mini 4k: a 2047 window, a top-level original context"),
    "microsoft--Phi-3.5-mini-instruct": ("phi3", "Phi-3.5 mini: longrope (48 short and long factors), auto_map, "
                                         "a window longer than the context"),
    "Qwen--Qwen3-8B": ("qwen3", "Qwen3 8B: RMSNorm on each head's q and k, head_dim 128, no bias, untied"),
    "allenai--OLMo-2-1124-7B": ("olmo2", "OLMo-2 7B: post-norm layers, q/k RMSNorm over the projection"),
    "allenai--OLMo-2-0425-1B": ("olmo2", "OLMo-2 1B: a short file (no max_position_embeddings: the class's 2048)"),
    "Qwen--Qwen3-4B-Instruct-2507": ("qwen3", "Qwen3 4B 2507: tied, theta 5e6, 262144 positions, 32 x 128 > hidden"),
    "microsoft--phi-4": ("phi3", "Phi-4 14B: model_type phi3, 10 key/value heads, window null, no scaling"),
    "Qwen--Qwen3-30B-A3B": ("qwen3_moe", "Qwen3-30B-A3B: 128 experts top-8 renormalised, num_experts spelled so"),
    "deepseek-ai--DeepSeek-V2-Lite": ("deepseek_v2_lite", "DeepSeek-V2-Lite: latent attention, 64+2 experts, "
                                      "YaRN with mscale 0.707, DeepSeek's own fields (seq_aux, scoring_func)"),
    "deepseek-ai--DeepSeek-V3": ("deepseek_v3", "DeepSeek-V3: a query latent, 256+1 experts in groups, block-fp8, "
                                 "a multi-token prediction layer, YaRN"),
    "tiiuae--falcon-7b": Refused(("parallel", "ALiBi", "multi-query"), "gemma"),
    "EleutherAI--pythia-1b": Refused(("partial rotary", "parallel residual", "LayerNorm"), "llama"),
    "internlm--internlm2-7b": Refused(("auto_map", "wqkv"), "llama"),
    "baichuan-inc--Baichuan2-7B-Base": Refused(("ALiBi", "NormHead", "W_pack"), "llama"),
    "meta-llama--Llama-4-Scout-17B-16E": Refused(("chunked local attention", "NoPE", "shared expert"), "mixtral"),
}

# A tiny model of each of these (same structure, sizes shrunk) goes through apply, convert both
# ways and verify, in the default test command; one sample tree per group, shared. 12 of them:
# each published structure porter ports at least once (MHA, GQA at 3, 4, 7 and 8 heads per
# group, multi-query, head_dim != hidden / heads both ways, tied and untied, a QKV bias, rope
# none / llama3 / linear / yarn, a window, experts).
TINY = {
    "llama": ["meta-llama--Meta-Llama-3-8B", "meta-llama--Llama-3.1-8B", "meta-llama--Llama-3.2-1B",
              "lmsys--longchat-7b-v1.5-32k", "HuggingFaceTB--SmolLM2-135M"],
    "mistral_qwen2": ["mistralai--Mistral-7B-v0.1", "mistralai--Mistral-Nemo-Base-2407", "Qwen--Qwen2.5-0.5B",
                      "Qwen--Qwen2.5-7B-Instruct-YaRN"],
    "gemma_mixtral": ["google--gemma-2b", "google--gemma-7b", "mistralai--Mixtral-8x7B-v0.1"],
}
# The rest of the battery's ported configs, the same way, under `pytest -m slow`.
TINY_SLOW = sorted(s for s, e in BATTERY.items() if not isinstance(e, Refused) and s not in sum(TINY.values(), []))


def published(stem: str) -> dict:
    return json.loads((DATA / f"{stem}.json").read_text())


def model_folder(root: Path, stem: str, config: dict | None = None) -> Path:
    """<root>/<repo>/config.json, as a user's download holds it (the repo's name, the file)."""
    folder = root / stem.split("--", 1)[1]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(published(stem) if config is None else config, indent=2))
    return folder
