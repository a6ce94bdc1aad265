"""Runs inside a ported tree (cwd = the tree): the measurements of bench/model.py.

usage: python model_worker.py MODE CONFIG_JSON
  time     training steps of every model, interleaved; median seconds per step
  memory   one model (CONFIG_JSON names it): peak resident memory above the process's
           before it was built, over its warm-up and measured steps
  kernels  RMSNorm, RoPE, SwiGLU and attention of the generated code against the simplest
           reference implementations; and which kernel the generated code selects per device
Prints one line `RESULT <json>`.

The models, all with the same config, batch, sequence length, dtype and threads:
  hf-sdpa, hf-eager  HF transformers' LlamaForCausalLM (attention "sdpa" / "eager"), a plain
                     loop: forward, cross entropy, backward, AdamW step
  porter             the generated LLaMAModel, the same plain loop with the tree's own
                     optimizer (torch AdamW in two weight-decay groups)
  porter-pipe        the generated LLaMAModelPipe as real training runs it: the tree's
                     setup_model_and_optimizer (optimizer, LR schedule, deepspeed.initialize),
                     then DeepSpeed's PipelineEngine.train_batch
  porter-pipe-before the same without the fused attention and with the TorchScript
                     bias-dropout-add (--ablation)
"""

import contextlib
import gc
import json
import os
import statistics
import sys
import time

mode, config = sys.argv[1], json.loads(sys.argv[2])
sys.argv = [sys.argv[0], *config["megatron_args"]]
sys.path.insert(0, os.getcwd())

import torch  # noqa: E402

torch.set_num_threads(config["threads"])

import importlib  # noqa: E402

from megatron import get_args  # noqa: E402
from megatron.initialize import initialize_megatron  # noqa: E402
from megatron.utils import get_ltor_masks_and_position_ids  # noqa: E402

entry = importlib.import_module(f"pretrain_{config['family']}")  # the family's generated entry point
initialize_megatron(extra_args_provider=getattr(entry, f"{config['family']}_defaults"))
args = get_args()
args.padded_vocab_size = config["vocab"]  # no tokenizer is built: the vocabulary size is given
B, S, V = args.micro_batch_size, args.seq_length, args.padded_vocab_size


def batch(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"text": torch.randint(0, V, (B, S + 1), generator=generator)}


def split_batch(data):
    """What the tree's get_batch_pipe returns, without a tokenizer (no EOD resets)."""
    tokens_ = data["text"].long()
    labels, tokens = tokens_[:, 1:].contiguous(), tokens_[:, :-1].contiguous()
    attention_mask, loss_mask, position_ids = get_ltor_masks_and_position_ids(tokens, -1, False, False, False)
    return (tokens, position_ids, attention_mask), (labels, loss_mask)


# -- the models: each a function that runs one training step -------------------------------------
PROFILING = mode == "profile"


def phase(name: str):
    """A labelled region of a step for torch.profiler (profile mode); nothing otherwise."""
    return torch.profiler.record_function(name) if PROFILING else contextlib.nullcontext()


def hf_step(attention: str):
    """The family's HF class from the config porter writes for the same model (bench/model.py)."""
    import transformers

    cls = getattr(transformers, config["hf_class"])
    fields = {k: v for k, v in config["hf_config"].items() if k not in ("architectures", "model_type")}
    hf_config = cls.config_class(**fields)
    assert hf_config.intermediate_size == args.ffn_hidden_size, (hf_config.intermediate_size, args.ffn_hidden_size)
    model = cls._from_config(hf_config, attn_implementation=attention, torch_dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(args.adam_beta1, args.adam_beta2),
                                  eps=args.adam_eps, weight_decay=args.weight_decay)
    data = split_batch(batch(1))

    def step():
        (tokens, _, _), (labels, _) = data
        with phase("forward"):
            logits = model(input_ids=tokens).logits
            loss = torch.nn.functional.cross_entropy(logits.view(-1, V).float(), labels.view(-1))
        with phase("backward"):
            loss.backward()
        with phase("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def porter_step():
    from megatron.optimizer import get_megatron_optimizer

    args.no_pipeline_parallel = True
    model = entry.model_provider()
    args.no_pipeline_parallel = False
    model.train()
    optimizer = get_megatron_optimizer([model])
    data = split_batch(batch(1))

    def step():
        (tokens, position_ids, attention_mask), (labels, loss_mask) = data
        with phase("forward"):
            losses = model(tokens, position_ids, attention_mask, labels=labels)[0]
            loss = torch.sum(losses.view(-1) * loss_mask.view(-1)) / loss_mask.sum()
        with phase("backward"):
            loss.backward()
        with phase("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def porter_pipe_step(as_before: bool = False):
    """as_before: the port without this issue's two changes (an ablation): the tree's unfused
    attention, and the TorchScript bias-dropout-add fusion on."""
    import deepspeed
    import megatron.model.transformer as transformer
    from megatron.training import setup_model_and_optimizer

    fusion = args.bias_dropout_fusion
    args.bias_dropout_fusion = fusion or as_before  # read when the layers are built
    model, _, _ = setup_model_and_optimizer(entry.model_provider)
    args.bias_dropout_fusion = fusion
    engine = model[0]
    assert isinstance(engine, deepspeed.PipelineEngine)
    engine.set_batch_fn(split_batch)
    if as_before:
        # this model's attention keeps to the tree's code; the others' are unaffected
        applies = transformer.fused_attention_applies
        for module in engine.module.modules():
            if hasattr(module, "scale_mask_softmax"):
                module.scale_mask_softmax.unfused_for_bench = True
        transformer.fused_attention_applies = lambda query, softmax, dropout: (
            not getattr(softmax, "unfused_for_bench", False) and applies(query, softmax, dropout))
    data = batch(1)

    def step():
        return float(engine.train_batch(data_iter=iter([data])))

    step.engine = engine
    return step


BUILDERS = {
    "hf-sdpa": lambda: hf_step("sdpa"),
    "hf-eager": lambda: hf_step("eager"),
    "porter": porter_step,
    "porter-pipe": porter_pipe_step,
    "porter-pipe-before": lambda: porter_pipe_step(as_before=True),
}


def time_models() -> dict:
    """Wall time per step (interleaved, the order rotating), and beside it the process's CPU time
    and minor page faults per step: on a machine other work is loading, CPU time is disturbed far
    less than wall time, and page faults show memory handed back to the system and taken again."""
    import resource

    names = config["models"]
    steps = {name: BUILDERS[name]() for name in names}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[int]] = {name: [] for name in names}
    losses: dict[str, float] = {}
    for round_ in range(config["warmup"] + config["steps"]):
        order = names[round_ % len(names):] + names[: round_ % len(names)]  # rotate: no model always first
        for name in order:
            gc.collect()
            faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start, start_cpu = time.perf_counter(), time.process_time()
            losses[name] = steps[name]()
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            if round_ >= config["warmup"]:
                seconds[name].append(elapsed)
                cpu[name].append(elapsed_cpu)
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faulted)

    def paired(values, reference):
        # each step against the reference's step of the same round: load that comes and
        # goes over a round hits both and cancels
        ratios = sorted(t / r for t, r in zip(values, reference, strict=True))
        return statistics.median(ratios), ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]

    reference = names[0]
    out = {}
    for name, s in seconds.items():
        ratio, low, high = paired(s, seconds[reference])
        cpu_ratio, _, _ = paired(cpu[name], cpu[reference])
        out[name] = {
            "median": statistics.median(s), "min": min(s), "max": max(s), "loss": losses[name],
            "paired_ratio": ratio, "paired_q1": low, "paired_q3": high,
            "cpu_median": statistics.median(cpu[name]), "cpu_paired_ratio": cpu_ratio,
            "faults_median": statistics.median(faults[name]),
        }
    return out


def _status(field: str) -> int:
    """VmRSS / VmHWM of this process in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def memory() -> dict:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak (VmHWM) to the current resident size
    before = _status("VmRSS")
    step = BUILDERS[config["model"]]()
    for _ in range(config["warmup"] + 3):
        step()
    return {"peak_bytes": _status("VmHWM") - before, "resident_after_bytes": _status("VmRSS") - before}


# -- kernels -------------------------------------------------------------------------------------
def _best_ms(generated, reference, reps: int) -> tuple[float, float]:
    """The fastest of `reps` runs of each, in ms, alternating them run by run after a warm-up
    (the first runs of a shape pay for fresh memory; a kernel's least disturbed run is its measure)."""
    for _ in range(10):
        generated()
        reference()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        for fn, spent in ((generated, times[0]), (reference, times[1])):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return 1e3 * min(times[0]), 1e3 * min(times[1])


def _fwd_bwd(fn, *inputs):
    def run():
        out = fn(*inputs)
        out = out if isinstance(out, tuple) else (out,)
        sum(o.float().sum() for o in out).backward()
        for t in inputs:
            if isinstance(t, torch.Tensor) and t.grad is not None:
                t.grad = None

    return run


def kernels() -> dict:
    import torch.nn.functional as F
    from megatron.model import rmsnorm, rotary_embedding, swiglu
    from megatron.model.enums import AttnMaskType
    from megatron.model.fused_softmax import FusedScaleMaskSoftmax
    from megatron.model.utils import attention_mask_func

    h, heads, ffn = args.hidden_size, args.num_attention_heads, args.ffn_hidden_size
    hn = h // heads
    reps = config["kernel_reps"]
    torch.manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, requires_grad=True)

    results = {}

    # RMSNorm: the generated module against the textbook formula (HF's LlamaRMSNorm).
    x, norm = leaf(S, B, h), rmsnorm.RMSNorm(h, eps=1e-6)

    def rms_reference(x):
        return norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    results["RMSNorm"] = (norm, rms_reference, (x,))

    # RoPE: the generated module (cached tables) against tables computed per call, rotate_half.
    q, k = leaf(S, B, heads, hn), leaf(S, B, heads, hn)
    rope = rotary_embedding.RotaryEmbedding(hn, theta=10000.0)

    def rope_reference(q, k):
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, hn, 2).float() / hn))
        angles = torch.outer(torch.arange(S).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos()[:, None, None, :], angles.sin()[:, None, None, :]

        def rotate(t):
            return torch.cat((-t[..., hn // 2:], t[..., : hn // 2]), dim=-1)

        return q * cos + rotate(q) * sin, k * cos + rotate(k) * sin

    results["RoPE"] = (lambda q, k: rope(q, k), rope_reference, (q, k))

    # SwiGLU with its input projection: one fused gate+up GEMM and swiglu, against two GEMMs
    # and silu(gate) * up (HF's LlamaMLP).
    xs = leaf(S, B, h)
    w_gate, w_up = (torch.randn(ffn, h, requires_grad=True) for _ in range(2))
    w_fused = torch.cat((w_gate, w_up)).detach().requires_grad_()  # [gate; up], the port's layout
    results["SwiGLU (+ gate/up projection)"] = (
        lambda x: swiglu.swiglu(F.linear(x, w_fused)),
        lambda x: F.silu(F.linear(x, w_gate)) * F.linear(x, w_up),
        (xs,),
    )

    # Attention core: the generated fused attention against the unfused math (the tree's
    # baddbmm -> masked softmax -> bmm, written plainly).
    from megatron.model.fused_attention import fused_attention

    qa, ka, va = (leaf(S, B, heads, hn) for _ in range(3))
    mask = torch.triu(torch.ones(1, 1, S, S, dtype=torch.bool), diagonal=1)
    softmax = FusedScaleMaskSoftmax(False, False, AttnMaskType.causal, False, attention_mask_func, True, None)
    alpha = 1.0 / hn ** 0.5

    def attention_reference(q, k, v):
        q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))  # [b, np, s, hn]
        scores = torch.matmul(q, k.transpose(-1, -2)) * alpha
        probs = scores.masked_fill(mask, -10000.0).softmax(dim=-1)
        return torch.matmul(probs, v).permute(2, 0, 1, 3).reshape(S, B, h)

    results["attention core"] = (
        lambda q, k, v: fused_attention(q, k, v, mask, alpha=alpha, softmax=softmax),
        attention_reference,
        (qa, ka, va),
    )

    out = {}
    for name, (generated, reference, inputs) in results.items():
        with torch.no_grad():
            got, want = generated(*inputs), reference(*inputs)
            got = got if isinstance(got, tuple) else (got,)
            want = want if isinstance(want, tuple) else (want,)
            diff = max((a - b).abs().max().item() for a, b in zip(got, want, strict=True))
        ms = {}
        forward = [lambda fn=fn, inputs=inputs: torch.no_grad()(fn)(*inputs) for fn in (generated, reference)]
        ms["generated_fwd_ms"], ms["reference_fwd_ms"] = _best_ms(*forward, reps)
        ms["generated_fwd_bwd_ms"], ms["reference_fwd_bwd_ms"] = _best_ms(
            _fwd_bwd(generated, *inputs), _fwd_bwd(reference, *inputs), reps)
        out[name] = {**ms, "max_abs_diff": diff}
    return {"kernels": out, "selection": selection()}


def selection() -> dict:
    """Which kernel the generated code selects, per device type, from its own selection code.

    The Gaudi column asks the same functions with habana_frameworks' kernels present (they are
    not installed here; the functions only test that the import succeeded).
    """
    from megatron.model import fused_attention, rmsnorm, rotary_embedding

    swiglu = "torch ops: silu(gate) * up on the fused gate+up projection (no kernel choice)"
    found = {}
    for device in ("cpu", "cuda", "hpu"):
        found[device] = {
            "RMSNorm": rmsnorm.rms_norm_kernel(device),
            "RoPE": rotary_embedding.rope_kernel(device),
            "SwiGLU": swiglu,
            "attention": fused_attention.attention_kernel(device),
        }
    present = object()
    saved = (rmsnorm._GaudiRMSNorm, rotary_embedding._GaudiRoPE, fused_attention._GaudiSDPA)
    rmsnorm._GaudiRMSNorm = rotary_embedding._GaudiRoPE = fused_attention._GaudiSDPA = present
    try:
        found["hpu with habana_frameworks"] = {
            "RMSNorm": rmsnorm.rms_norm_kernel("hpu"),
            "RoPE": rotary_embedding.rope_kernel("hpu"),
            "SwiGLU": swiglu,
            "attention": fused_attention.attention_kernel("hpu"),
        }
    finally:
        rmsnorm._GaudiRMSNorm, rotary_embedding._GaudiRoPE, fused_attention._GaudiSDPA = saved
    found["this machine"] = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "habana_frameworks": saved[0] is not None,
    }
    return found


PHASES = ("forward", "backward", "optimizer")


def profile_models() -> dict:
    """Where each model's step goes, per op and per phase, from torch.profiler (CPU).

    The models are profiled one step at a time, interleaved as in `time` (the order rotating),
    over `steps` rounds after the warm-up, so that load on the machine hits all alike; every
    figure is a mean per step. Per op: self time and calls. Per phase: the plain loops' forward,
    backward and optimizer (labelled in their step functions); the pipeline engine's
    instructions (ForwardPass, BackwardPass, ReduceGrads, OptimizerStep, ...) with the ops
    inside each.
    """
    from torch.profiler import ProfilerActivity, profile

    names = config["models"]
    steps = {name: BUILDERS[name]() for name in names}
    for name in names:
        engine = getattr(steps[name], "engine", None)
        if engine is not None:  # label each pipeline instruction, and the loss's aggregation
            def labelled(function, label):
                def run(*a, **k):
                    with phase("engine." + label):
                        return function(*a, **k)
                return run

            engine._INSTRUCTION_MAP = {kind: labelled(function, kind.__name__)
                                       for kind, function in type(engine)._INSTRUCTION_MAP.items()}
            engine._aggregate_total_loss = labelled(engine._aggregate_total_loss, "aggregate_total_loss")
    for _ in range(config["warmup"]):
        for name in names:
            steps[name]()
    rounds = config["steps"]
    ops: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    phases: dict[str, dict[str, dict]] = {name: {} for name in names}
    totals: dict[str, float] = {name: 0.0 for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            gc.collect()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                steps[name]()
            for event in prof.key_averages():
                entry_ = ops[name].setdefault(event.key, [0.0, 0.0])
                entry_[0] += event.self_cpu_time_total / rounds
                entry_[1] += event.count / rounds
            for event in prof.events():
                if event.name in PHASES or event.name.startswith("engine."):
                    region = phases[name].setdefault(event.name, {"total_us": 0.0, "ops": {}})
                    region["total_us"] += event.cpu_time_total / rounds
                    stack = list(event.cpu_children)
                    while stack:
                        child = stack.pop()
                        region["ops"][child.name] = region["ops"].get(child.name, 0.0) + child.self_cpu_time_total / rounds
                        stack.extend(child.cpu_children)
                if event.cpu_parent is None:
                    totals[name] += event.cpu_time_total / rounds
    return {name: {"step_us": totals[name], "phases": phases[name],
                   "ops": {op: {"self_us": v[0], "count": v[1]} for op, v in ops[name].items()}}
            for name in names}


if mode == "time":
    result = time_models()
elif mode == "memory":
    result = memory()
elif mode == "profile":
    result = profile_models()
elif mode == "kernels":
    result = kernels()
else:
    raise SystemExit(f"unknown mode {mode}")
print("RESULT " + json.dumps(result), flush=True)
