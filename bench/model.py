"""Training speed and memory of the models porter generates, beside each family's HF class.

It ports every family asked for (`--families llama,llama3`: LLaMA-1 and the LLaMA-3 shape with
grouped-query attention, 2 key/value heads for 8; `gemma`: one key/value head, head size 64
for hidden 256 / 8 heads, GeGLU, the norm offset, scaled and tied embeddings; `phi3`, `phi3_5`:
Phi3ForCausalLM, its 2047 window longer than the bench's sequence, Phi-3.5's longrope lists taken
at the bench's head size) into one fresh copy of the bundled sample tree, then, inside it, per
family (bench/model_worker.py):
  1. times training steps (forward + backward + optimizer step) of the generated LLaMAModel
     (plain loop), LLaMAModelPipe (DeepSpeed's pipeline engine, train_batch, set up by the
     tree's own setup_model_and_optimizer) and HF's LlamaForCausalLM with "sdpa" and "eager"
     attention: same config, batch, sequence length, dtype and threads, interleaved in one
     process, median of the steps after warm-up;
  2. measures each model's peak memory in a process of its own;
  3. times RMSNorm, RoPE, SwiGLU and the attention core of the generated code against the
     simplest reference implementations, and reports which kernel the generated code selects
     on this device, on CUDA and on Gaudi.
Ratios are against HF with its default (sdpa) attention, or its eager attention where the class
cannot run SDPA (Gemma-2: soft-capped scores); below 1.00x is faster than HF.

Default config: 4 layers, hidden 256, 8 heads, seq 256, micro-batch 4, vocabulary 1024, fp32, CPU;
a family with grouped-query attention gets heads / 4 key/value heads (LLaMA-3 8B's ratio).

usage: python bench/model.py [--families llama,llama3] [--steps 20] [--warmup 3] [--threads N]
                             [--skip-memory] [--skip-kernels] [--ablation]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from versions import versions  # bench/versions.py (the script's folder is on sys.path)

import porter
from porter.differences.ffn_rule import default_ffn_hidden_size
from porter.differences.rope_scaling import longrope
from porter.resources import sample_tree_dir
from porter.smoke import SmokeConfig
from porter.smoke.ds_config import deepspeed_config
from porter.treerun.process import environment, remove_shared_memory
from porter.treerun.shape import RunShape, tiny_spec

WORKER = Path(__file__).with_name("model_worker.py")
MODELS = ["hf-sdpa", "hf-eager", "porter", "porter-pipe"]


def labels(spec) -> dict[str, str]:
    return {
        "hf-sdpa": f"HF {spec.hf_class}, sdpa attention",
        "hf-eager": f"HF {spec.hf_class}, eager attention",
        "porter": f"porter {spec.model_class} (plain loop)",
        "porter-pipe": f"porter {spec.model_class}Pipe (DeepSpeed pipeline engine)",
        "porter-pipe-before": "  the same, unfused attention and TorchScript bias-dropout-add (ablation)",
    }


def ported_sample_tree(folder: Path, families: list[str]) -> Path:
    tree = folder / "Megatron-DeepSpeed"
    shutil.copytree(sample_tree_dir(), tree, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(porter.__file__).resolve().parent.parent), env.get("PYTHONPATH")) if p)
    for family in families:
        done = subprocess.run([sys.executable, "-m", "porter", "apply", family, "--target", str(tree)],
                              env=env, cwd=folder, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"porter apply {family} failed:\n{done.stdout}{done.stderr}")
    return tree


def bench_spec(spec, cli):
    """The family at the bench's sizes (grouped-query attention keeps LLaMA-3 8B's 4:1 ratio,
    multi-query its one key/value head; a head size of its own is twice hidden / heads, as verify's)."""
    values = {"sizes.num_layers": cli.layers, "sizes.hidden_size": cli.hidden, "sizes.num_attention_heads": cli.heads,
              "sizes.vocab_size": cli.vocab, "sizes.max_position_embeddings": cli.seq}
    if spec["attention.num_query_groups"] is not None:
        values["attention.num_query_groups"] = 1 if spec["attention.num_query_groups"] == 1 else max(1, cli.heads // 4)
    if spec["attention.head_dim"] is not None:
        values["attention.head_dim"] = 2 * cli.hidden // cli.heads
    if isinstance(spec["mlp.ffn_hidden_size"], int):  # a real model's width: the bench's, given as a width too
        values["mlp.ffn_hidden_size"] = default_ffn_hidden_size(cli.hidden, "2/3*4h", 64)
    if spec["moe.num_experts"] is not None:  # verify's routing (at most 16 experts, top-k at most half; groups)
        shape = RunShape(num_layers=cli.layers, hidden_size=cli.hidden, num_attention_heads=cli.heads)
        tiny = tiny_spec(spec, shape)
        values.update({k: tiny[k] for k in tiny.values if k.startswith("moe.")})
    if spec["attention.latent.kv_lora_rank"] is not None:  # DeepSeek's latent at the bench's hidden size
        head = cli.hidden // cli.heads
        values.update({"attention.latent.kv_lora_rank": cli.hidden // 4, "attention.latent.qk_nope_head_dim": 2 * head,
                       "attention.latent.qk_rope_head_dim": head, "attention.latent.v_head_dim": 2 * head,
                       "attention.latent.q_lora_rank": cli.hidden // 2 if spec["attention.latent.q_lora_rank"] else None})
    if spec["position_embedding.rope_scaling.type"] == longrope.TYPE:  # a factor per frequency of the bench's heads
        values.update(longrope.tiny(spec, values.get("attention.head_dim") or cli.hidden // cli.heads))
    return spec.with_values(**values)


def family_config(spec, cli, tree: Path) -> dict:
    """What the worker needs of a family: its options for the tree, its HF class and config."""
    from porter.convert import Port
    from porter.hf_config import hf_config_of, installed_rope_spelling

    sized = bench_spec(spec, cli)
    return {"family": spec.name, "hf_class": spec.hf_class, "family_args": Port(spec, tree).run_argv(sized),
            "hf_config": installed_rope_spelling({**hf_config_of(sized), "attention_dropout": 0.0})}


def megatron_args(cli, folder: Path) -> list[str]:
    smoke = SmokeConfig(batch_size=cli.micro_batch, global_batch_size=cli.micro_batch)
    return [
        "--num-layers", str(cli.layers), "--hidden-size", str(cli.hidden), "--num-attention-heads", str(cli.heads),
        "--seq-length", str(cli.seq), "--micro-batch-size", str(cli.micro_batch),
        "--global-batch-size", str(cli.micro_batch), "--train-iters", "100000", "--lr", "1e-4", "--min-lr", "1e-5",
        "--lr-decay-style", "constant", "--distributed-backend", "gloo",
        "--deepspeed", "--deepspeed_config", str(deepspeed_config(folder, smoke)), "--zero-stage", "0",
    ]


def run_worker(tree: Path, mode: str, config: dict, threads: int) -> dict:
    env = environment(tree)
    env["OMP_NUM_THREADS"] = str(threads)
    try:
        done = subprocess.run([sys.executable, str(WORKER), mode, json.dumps(config)], cwd=tree, env=env,
                              capture_output=True, text=True)
    finally:
        remove_shared_memory(env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"model_worker {mode} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return json.loads(lines[-1][len("RESULT "):])



def print_times(times: dict, memory: dict, models: list[str], names: dict[str, str], hf: str = "hf-sdpa") -> None:
    """The table of step times against HF's own best attention (`hf`: SDPA, or eager where the class cannot run it)."""
    reference = times[hf]
    ref = hf.removeprefix("hf-")
    print(f"\n| model | s/step (median) | vs HF {ref} | paired (q1..q3) | min..max | vs HF {ref} (min) | CPU s/step | CPU paired "
          "| page faults/step | peak memory |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in models:
        t = times[name]
        peak = f"{memory[name]['peak_bytes'] / 2**20:.0f} MiB" if name in memory else "-"
        print(f"| {names[name]} | {t['median']:.3f} | {t['median'] / reference['median']:.2f}x | "
              f"{t['paired_ratio']:.2f}x ({t['paired_q1']:.2f}..{t['paired_q3']:.2f}) | {t['min']:.3f}..{t['max']:.3f} | "
              f"{t['min'] / reference['min']:.2f}x | {t['cpu_median']:.3f} | {t['cpu_paired_ratio']:.2f}x | "
              f"{t['faults_median']:.0f} | {peak} |")
    print(f"(paired: the median over rounds of a model's step time over HF {ref}'s in the same round, and its quartiles; "
          "CPU: the process's CPU time, all threads; page faults: minor faults, memory the allocator took from the system "
          "again)")


# The categories a profile sums ops into (by name; the first that matches).
CATEGORIES = (
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_grouped_mm")),
    ("attention kernel", ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention")),
    ("copies, layout, indexing", ("aten::copy_", "aten::cat", "aten::clone", "aten::index", "aten::_index_put",
                                  "aten::slice_backward", "aten::select_backward", "aten::fill_", "aten::zero_",
                                  "aten::scatter", "aten::gather", "aten::embedding", "aten::_to_copy")),
    ("communication", ("c10d::", "gloo:", "record_param_comms")),
)
OTHER_OPS, FRAMEWORK = "other tensor ops", "python, autograd, profiler"


def category(op: str) -> str:
    for name, prefixes in CATEGORIES:
        if op.startswith(prefixes):
            return name
    return OTHER_OPS if op.startswith("aten::") else FRAMEWORK


def print_profile(profiled: dict, names: dict[str, str], hf: str = "hf-sdpa", top: int = 12) -> None:
    """Where each model's step goes (bench/model_worker.py's profile mode), in ms per step, against
    `hf`: HF's class with the attention it is timed with (eager where it cannot run SDPA)."""
    models = list(profiled)
    reference = profiled[hf]
    print("\nprofile (torch.profiler, CPU; ms per step; the profiler's own overhead is in every figure):")
    print("\n| ms per step | " + " | ".join(names[m] for m in models) + " |")
    print("|---|" + "---|" * len(models))
    print("| step (profiled) | " + " | ".join(f"{profiled[m]['step_us'] / 1e3:.1f}" for m in models) + " |")
    groups = [name for name, _ in CATEGORIES] + [OTHER_OPS, FRAMEWORK]
    by_group = {m: dict.fromkeys(groups, 0.0) for m in models}
    for m in models:
        for op, v in profiled[m]["ops"].items():
            if op.startswith(("aten::", "c10d::", "gloo:", "record_param_comms")):
                by_group[m][category(op)] += v["self_us"] / 1e3
        ops_total = sum(by_group[m].values())
        by_group[m][FRAMEWORK] += profiled[m]["step_us"] / 1e3 - ops_total
    for group in groups:
        print(f"| {group} | " + " | ".join(f"{by_group[m][group]:.1f}" for m in models) + " |")
    for m in models:
        phases = profiled[m]["phases"]
        if phases:
            print(f"| {names[m]}: phases | " + "; ".join(f"{p.removeprefix('engine.')} {v['total_us'] / 1e3:.1f}"
                                                       for p, v in phases.items()) + " |" + " |" * (len(models) - 1))
    for m in models:
        if m == hf:
            continue
        ops, ref = profiled[m]["ops"], reference["ops"]
        keys = [k for k in set(ops) | set(ref) if k.startswith("aten::")]
        diff = {k: ops.get(k, {}).get("self_us", 0.0) - ref.get(k, {}).get("self_us", 0.0) for k in keys}
        worst = sorted(keys, key=lambda k: -abs(diff[k]))[:top]
        print(f"\nops that differ most, {names[m]} against {names[hf]} (ms per step, calls per step):")
        print(f"| op | this | calls | HF {hf.removeprefix('hf-')} | calls | difference |")
        print("|---|---|---|---|---|---|")
        for k in worst:
            a, b = ops.get(k, {"self_us": 0.0, "count": 0}), ref.get(k, {"self_us": 0.0, "count": 0})
            print(f"| {k} | {a['self_us'] / 1e3:.2f} | {a['count']:.0f} | {b['self_us'] / 1e3:.2f} | {b['count']:.0f} | "
                  f"{diff[k] / 1e3:+.2f} |")
        for p, v in profiled[m]["phases"].items():
            if p.startswith("engine.") and p not in ("engine.ForwardPass", "engine.BackwardPass"):
                inside = sorted(v["ops"].items(), key=lambda kv: -kv[1])[:6]
                print(f"  {p.removeprefix('engine.')} {v['total_us'] / 1e3:.2f} ms: "
                      + ", ".join(f"{op} {us / 1e3:.2f}" for op, us in inside if us >= 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="llama,llama3", help="comma-separated bundled specs, one table each")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--kernel-reps", type=int, default=50)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="also profile each model (torch.profiler, interleaved): where its step goes, per op "
                             "category, phase and engine instruction, and the ops that differ most from HF's")
    parser.add_argument("--profile-steps", type=int, default=10, help="profiled steps per model")
    parser.add_argument("--skip-time", action="store_true", help="no timing table (with --profile: the profile only)")
    parser.add_argument("--ablation", action="store_true",
                        help="also time the pipe without the fused attention and with the TorchScript bias-dropout-add")
    cli = parser.parse_args()
    models = MODELS + (["porter-pipe-before"] if cli.ablation else [])

    from porter.catalog import load_spec
    from porter.hf_config import hf_class_of
    from porter.verify.reference import reference_attention

    families = [load_spec(name) for name in cli.families.split(",")]
    print(f"# generated models vs their HF classes: training step (forward + backward + optimizer), "
          f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, {cli.threads} threads; {versions('torch', 'deepspeed', 'transformers')}")
    print(f"# config: {cli.layers} layers, hidden {cli.hidden}, {cli.heads} heads, seq {cli.seq}, "
          f"micro-batch {cli.micro_batch}, vocab {cli.vocab}, fp32; median of {cli.steps} interleaved steps "
          f"after {cli.warmup} warm-up")
    kernels = None
    with tempfile.TemporaryDirectory(prefix="porter-bench-model-") as scratch:
        folder = Path(scratch)
        tree = ported_sample_tree(folder, [spec.name for spec in families])
        for spec in families:
            family = family_config(spec, cli, tree)
            base = {"megatron_args": megatron_args(cli, folder) + family["family_args"], "threads": cli.threads,
                    "vocab": cli.vocab, "warmup": cli.warmup, "steps": cli.steps, "kernel_reps": cli.kernel_reps,
                    **family}
            # a model the pipeline engine cannot carry (a mixture of experts) is timed on the plain one only
            plain_only = not all(d.pipeline_engine for d in spec.wanted())
            # HF's own best attention is the reference: SDPA, or eager where the class cannot run SDPA (Gemma-2)
            hf = "hf-sdpa" if reference_attention(hf_class_of(spec.hf_class)) == "sdpa" else "hf-eager"
            family_models = [n for n in models if not (plain_only and n.startswith("porter-pipe"))
                             and not (hf == "hf-eager" and n == "hf-sdpa")]
            times = None if cli.skip_time else run_worker(tree, "time", {**base, "models": family_models}, cli.threads)
            memory = {}
            if not cli.skip_memory:
                for name in family_models:
                    memory[name] = run_worker(tree, "memory", {**base, "model": name}, cli.threads)
            if kernels is None and not cli.skip_kernels:
                kernels = run_worker(tree, "kernels", base, cli.threads)
            groups = family["hf_config"].get("num_key_value_heads") or cli.heads
            print(f"\n## {spec.name} ({spec.hf_class}; {groups} key/value heads of {cli.heads})")
            names = labels(spec)
            if times is not None:
                print_times(times, memory, family_models, names, hf)
            if cli.profile:
                profiled = [n for n in family_models if n != "hf-eager" or hf == "hf-eager"]
                print_profile(run_worker(tree, "profile", {**base, "models": profiled, "steps": cli.profile_steps},
                                         cli.threads), names, hf)

    if kernels:
        print("\n| kernel: generated vs reference (best of runs) | fwd ms | ref fwd ms | fwd ratio | fwd+bwd ms | ref fwd+bwd ms | fwd+bwd ratio | max abs diff |")
        print("|---|---|---|---|---|---|---|---|")
        for name, k in kernels["kernels"].items():
            diff = f"{k['max_abs_diff']:.1e}"
            print(f"| {name} | {k['generated_fwd_ms']:.2f} | {k['reference_fwd_ms']:.2f} | "
                  f"{k['generated_fwd_ms'] / k['reference_fwd_ms']:.2f}x | {k['generated_fwd_bwd_ms']:.2f} | "
                  f"{k['reference_fwd_bwd_ms']:.2f} | {k['generated_fwd_bwd_ms'] / k['reference_fwd_bwd_ms']:.2f}x | {diff} |")
        selection = kernels["selection"]
        here = selection.pop("this machine")
        print(f"\n# kernels the generated code selects (this machine: {here['device']}, "
              f"habana_frameworks {'present' if here['habana_frameworks'] else 'absent'})")
        print("| device | RMSNorm | RoPE | SwiGLU | attention |")
        print("|---|---|---|---|---|")
        for device, chosen in selection.items():
            print(f"| {device} | {chosen['RMSNorm']} | {chosen['RoPE']} | {chosen['SwiGLU']} | {chosen['attention']} |")
        print("(attention: fused only without active attention dropout, without a key/value cache, and with an "
              "fp32 softmax; otherwise the tree's own unfused baddbmm -> softmax -> bmm)")


if __name__ == "__main__":
    main()
