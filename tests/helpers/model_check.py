"""Worker: build a ported tree's models for real and check them against what the spec says.

Run as a script (not imported by the tests) with the jobs as JSON:

    python model_check.py JOBS.json RESULTS.jsonl

Each job names a ported tree and the spec's switches. For each, in one process (trees
follow each other: `megatron` is imported afresh from each tree), it

1. initialises the tree's megatron (torch.distributed on gloo, one rank) with a tiny config
   and GPT's defaults, builds GPTModel through pretrain_gpt.py's model_provider and checks
   that it is still GPT: LayerNorm at every norm site, biases, a learned position table,
   gelu, tied output; its logits equal an independent reference model (written below in
   plain torch) on its own weights; forward and backward give finite gradients for every
   parameter;
2. initialises again with the generated entry point's defaults (pretrain_<name>.py) and
   builds the ported model both ways (plain and DeepSpeed PipelineModule), and checks for
   each: the norm sites of GPT's model, each now of the spec's norm class (the final one
   gone without a final norm); no bias (or bias) in every parallel linear; the MLP's
   width (twice for the fused SwiGLU gate+up); no position table and a rotary embedding in
   every attention with rotary; an untied output layer or the tied embedding; every norm,
   rotary embedding and output layer actually called by a forward pass (hooks); the logits
   equal to the reference model with the spec's switches; finite gradients for every
   parameter; and a checkpoint round trip (state_dict_for_save_checkpoint -> a fresh model's
   load_state_dict) that gives the same logits.

A result line per job: {"id", "ok", "problems": [...], "seconds"}. Anything unexpected
(an exception in the tree's code) is a problem with its traceback: a broken port.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import socket
import sys
import time
import traceback
from pathlib import Path

NORM_TYPES = {"LayerNorm", "MixedFusedLayerNorm", "FusedLayerNorm", "RMSNorm"}
BATCH, SEQ, HIDDEN, HEADS, LAYERS = 2, 16, 64, 4, 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1", MASTER_ADDR="127.0.0.1")
os.environ.setdefault("MASTER_PORT", str(_free_port()))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)

# One rank: no collective needs DeepSpeed's shared-memory op, which it JIT-builds on every
# CPU init (~20 s when the cache is cold or another process is building it). Only the
# communication backend skips it; the model code under test is untouched.
import deepspeed.comm.torch as _ds_comm_torch  # noqa: E402

_ds_comm_torch.build_shm_op = lambda: None


RENAMES: dict[str, str] = {}  # attribute renames of a mutated tree (tests/mutation)


def A(obj, name, *default):
    """getattr, following the job's attribute renames."""
    return getattr(obj, RENAMES.get(name, name), *default)


class Problems(list):
    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.append(message)


# -- the reference model ----------------------------------------------------------------------


def _norm(module, x, eps):
    if module is None or type(module).__name__ not in NORM_TYPES:
        return x  # no norm at this site (absent, or an Identity)
    kind = type(module).__name__
    if kind == "RMSNorm":
        x32 = x.float()
        return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * module.weight.float()
    return F.layer_norm(x, (x.size(-1),), module.weight, module.bias, eps)


def _linear(module, x):
    bias = getattr(module, "bias", None)
    return F.linear(x, module.weight, bias)


def _rotate(t, theta):
    """t: [b, s, n, hn], rotate_half layout, positions 0..s-1."""
    hn = t.size(-1)
    inv_freq = 1.0 / (theta ** (torch.arange(0, hn, 2, dtype=torch.float64) / hn))
    angles = torch.outer(torch.arange(t.size(1), dtype=torch.float64), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    cos, sin = angles.cos().float()[None, :, None, :], angles.sin().float()[None, :, None, :]
    half1, half2 = t.chunk(2, dim=-1)
    return t * cos + torch.cat((-half2, half1), dim=-1) * sin


def reference_logits(parts, tokens, features, eps, theta):
    """The model the spec describes, in plain torch, on the given parts' weights.

    parts: embedding (word_embeddings, position_embeddings), layers (with input_layernorm,
    attention.query_key_value/dense, post_attention_layernorm, mlp's two linears), final
    norm (or None) and the output weight. Dropout is off.
    """
    emb = parts["embedding"]
    x = F.embedding(tokens, A(emb, "word_embeddings").weight)  # [b, s, h]
    if not features["rotary"]:
        positions = torch.arange(tokens.size(1))[None, :].expand_as(tokens)
        x = x + A(emb, "position_embeddings").weight[positions]
    s = tokens.size(1)
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    for layer in parts["layers"]:
        h1 = _norm(A(layer, "input_layernorm", None), x, eps)
        attention = A(layer, "attention")
        heads = attention.num_attention_heads_per_partition
        qkv = _linear(A(attention, "query_key_value"), h1)  # [b, s, n * 3 * hn], per head q|k|v
        qkv = qkv.view(qkv.size(0), s, heads, -1)
        q, k, v = qkv.chunk(3, dim=-1)  # [b, s, n, hn]
        if features["rotary"]:
            q, k = _rotate(q, theta), _rotate(k, theta)
        scores = torch.einsum("bqnd,bknd->bnqk", q, k) / math.sqrt(q.size(-1))
        scores = scores.masked_fill(~causal, float("-inf"))
        context = torch.einsum("bnqk,bknd->bqnd", scores.softmax(-1), v).reshape(x.size(0), s, -1)
        x = x + _linear(A(attention, "dense"), context)
        h2 = _norm(A(layer, "post_attention_layernorm", None), x, eps)
        up, down = parts["mlp_linears"](layer)
        y = _linear(up, h2)
        if features["swiglu"]:
            gate, value = y.chunk(2, dim=-1)
            y = F.silu(gate) * value
        elif A(A(layer, "mlp"), "bias_gelu_fusion", False):
            y = F.gelu(y, approximate="tanh")  # the tree's fused bias-gelu is the tanh approximation
        else:
            y = F.gelu(y)
        x = x + _linear(down, y)
    x = _norm(parts["final"], x, eps)
    return F.linear(x, parts["output_weight"])


# -- looking at a built model -------------------------------------------------------------------


def _type(module) -> str:
    return type(module).__name__


def _mlp_linears(layer):
    mlp = A(layer, "mlp")
    children = [m for m in mlp.children() if _type(m) in ("ColumnParallelLinear", "RowParallelLinear")]
    up = next(m for m in children if _type(m) == "ColumnParallelLinear")
    down = next(m for m in children if _type(m) == "RowParallelLinear")
    return up, down


def norm_sites(root) -> dict[str, str]:
    return {name: _type(m) for name, m in root.named_modules() if _type(m) in NORM_TYPES}


def plain_parts(model):
    lm = model.language_model
    encoder = lm.encoder
    final = A(encoder, "final_layernorm", None)
    if final is not None and _type(final) not in NORM_TYPES:
        final = None  # Identity: no final norm
    if hasattr(model, "output_layer"):
        output = model.output_layer.weight
    else:
        output = A(lm.embedding, "word_embeddings").weight
    return {"embedding": lm.embedding, "layers": list(encoder.layers), "final": final,
            "output_weight": output, "mlp_linears": _mlp_linears}


def pipe_parts(pipe):
    funcs = list(pipe.forward_funcs)
    modules = [f for f in funcs if isinstance(f, torch.nn.Module)]
    embedding = next(m for m in modules if A(m, "word_embeddings", None) is not None)
    layers = [m for m in modules if A(m, "attention", None) is not None and A(m, "mlp", None) is not None]
    last_layer = max(i for i, f in enumerate(funcs) if any(f is layer for layer in layers))
    final = next((f for f in funcs[last_layer + 1:] if isinstance(f, torch.nn.Module) and _type(f) in NORM_TYPES), None)
    head = next((m for m in modules if _type(m).endswith("OutputLayer")), None)
    output = head.weight if head is not None else A(embedding, "word_embeddings").weight
    return {"embedding": embedding, "layers": layers, "final": final, "output_weight": output,
            "mlp_linears": _mlp_linears}


def _batch(vocab):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (BATCH, SEQ + 1), generator=generator)
    inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    positions = torch.arange(SEQ)[None, :].expand(BATCH, SEQ).contiguous()
    mask = (torch.ones(1, 1, SEQ, SEQ).tril() < 0.5)
    return inputs, labels, positions, mask


class CallCounter:
    def __init__(self, modules):
        self.counts = {name: 0 for name, _ in modules}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules]

    def _hook(self, name):
        def hook(module, args, output):
            self.counts[name] += 1
        return hook

    def uncalled(self):
        return [name for name, count in self.counts.items() if count == 0]

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _close(a, b) -> tuple[bool, float]:
    diff = (a.float() - b.float()).abs().max().item()
    return diff <= 1e-4 * max(1.0, b.float().abs().max().item()), diff


def check_gradients(model, problems: Problems, label: str) -> None:
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    problems.check(not missing, f"{label}: parameters without a gradient (unused): {missing[:6]}")
    problems.check(not bad, f"{label}: non-finite gradients: {bad[:6]}")


def check_structure(root, parts, gpt, features, ffn, problems: Problems, label: str) -> None:
    """The ported model's shape against GPT's sites and the spec's switches."""
    sites = norm_sites(root)
    want = "RMSNorm" if features["rmsnorm"] else "LayerNorm"
    layer_norms = [n for n in gpt["layer_norm_sites"]]
    got_layer = {}
    for index, layer in enumerate(parts["layers"]):
        for name, module in layer.named_modules():
            if _type(module) in NORM_TYPES:
                got_layer[f"{index}.{name}"] = _type(module)
    problems.check(sorted(got_layer) == sorted(layer_norms),
                   f"{label}: layer norm sites {sorted(got_layer)} differ from GPT's {sorted(layer_norms)}")
    wrong = {k: v for k, v in got_layer.items() if v != want and not (want == "LayerNorm" and v in NORM_TYPES - {"RMSNorm"})}
    problems.check(not wrong, f"{label}: norm sites not {want}: {wrong}")
    final = parts["final"]
    if features["final_norm"]:
        problems.check(final is not None, f"{label}: no final norm, the spec wants one")
        if final is not None:
            problems.check((_type(final) == "RMSNorm") == features["rmsnorm"],
                           f"{label}: final norm is {_type(final)}, the spec wants {want}")
    else:
        problems.check(final is None, f"{label}: a final norm ({_type(final)}), the spec wants none")
    problems.check(len(sites) == len(got_layer) + (final is not None),
                   f"{label}: norm modules outside the layers and final norm: {sorted(sites)}")
    for index, layer in enumerate(parts["layers"]):
        linears = [(n, m) for n, m in layer.named_modules() if _type(m) in ("ColumnParallelLinear", "RowParallelLinear")]
        for name, module in linears:
            has_bias = getattr(module, "bias", None) is not None
            problems.check(has_bias == features["bias"],
                           f"{label}: layer {index} {name} has{'' if has_bias else ' no'} bias; spec bias={features['bias']}")
        up, down = _mlp_linears(layer)
        width = down.weight.size(1)
        problems.check(width == ffn, f"{label}: layer {index} MLP width {width}, expected {ffn}")
        factor = 2 if features["swiglu"] else 1
        problems.check(up.weight.size(0) == factor * width,
                       f"{label}: layer {index} first MLP projection {up.weight.size(0)} wide, expected {factor} x {width}")
        rotary = [m for m in A(layer, "attention").modules() if "Rotary" in _type(m)]
        problems.check(bool(rotary) == features["rotary"],
                       f"{label}: layer {index} attention {'has' if rotary else 'lacks'} a rotary embedding; spec rotary={features['rotary']}")
    table = A(parts["embedding"], "position_embeddings", None)
    problems.check((table is None) == features["rotary"],
                   f"{label}: position table {'absent' if table is None else 'present'}; spec rotary={features['rotary']}")
    tied = parts["output_weight"] is A(parts["embedding"], "word_embeddings").weight
    problems.check(tied == features["tied"], f"{label}: output {'tied' if tied else 'untied'}; spec tied={features['tied']}")


# -- one tree -------------------------------------------------------------------------------


def _fresh_imports(tree: Path, script: str) -> None:
    for name in list(sys.modules):
        if name == "megatron" or name.startswith("megatron.") or name in ("pretrain_gpt", Path(script).stem):
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p != getattr(_fresh_imports, "last", None)]
    sys.path.insert(0, str(tree))
    _fresh_imports.last = str(tree)


def _reset_globals() -> None:
    gv = sys.modules.get("megatron.global_vars")
    if gv is not None:
        for name in dir(gv):
            if name.startswith("_GLOBAL_"):
                setattr(gv, name, None)


def _argv(job, tree: Path) -> list[str]:
    from megatron.arguments import parse_args  # noqa: F401  (the tree's parser must import)

    args = [
        "--num-layers", str(LAYERS), "--hidden-size", str(HIDDEN), "--num-attention-heads", str(HEADS),
        "--seq-length", str(SEQ), "--max-position-embeddings", str(SEQ),
        "--micro-batch-size", str(BATCH), "--global-batch-size", str(BATCH),
        "--train-iters", "1", "--lr", "1e-3", "--seed", "1234",
        "--hidden-dropout", "0", "--attention-dropout", "0",
        "--distributed-backend", "gloo", "--no-masked-softmax-fusion",
    ]
    if not job.get("gpt_only"):
        args += ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", job["tokenizer_model"]]
    return [str(tree / job["script"])] + args


def _initialize(job, tree: Path, extra_args_provider) -> object:
    from megatron import get_args
    from megatron.initialize import initialize_megatron

    _reset_globals()
    sys.argv = _argv(job, tree)
    initialize_megatron(extra_args_provider=extra_args_provider)
    args = get_args()
    if job.get("gpt_only") and getattr(args, "padded_vocab_size", None) is None:
        args.padded_vocab_size = 1024  # no tokenizer: the un-ported tree has no SentencePiece
    return args


def _run_plain(model, batch, problems, label):
    inputs, labels, positions, mask = batch
    logits = model(inputs, positions, mask)
    logits = logits[0] if isinstance(logits, (tuple, list)) else logits
    losses = model(inputs, positions, mask, labels=labels)
    losses = losses[0] if isinstance(losses, (tuple, list)) else losses
    loss = losses.float().mean()
    problems.check(bool(torch.isfinite(loss)), f"{label}: loss {loss.item()} is not finite")
    loss.backward()
    return logits.detach()


def check_gpt(job, tree: Path, problems: Problems) -> dict:
    """The ported tree still builds and runs GPT as GPT."""
    args = _initialize(job, tree, None)
    gpt_module = importlib.import_module("pretrain_gpt")
    args.deepspeed = False
    args.no_pipeline_parallel = True
    model = gpt_module.model_provider()
    batch = _batch(args.padded_vocab_size)
    parts = plain_parts(model)
    gpt_features = {"swiglu": False, "rotary": False, "rmsnorm": False, "final_norm": True, "tied": True, "bias": True}
    check_structure(model, parts, {"layer_norm_sites": [
        f"{i}.{n}" for i, layer in enumerate(parts["layers"]) for n, m in layer.named_modules() if _type(m) in NORM_TYPES
    ]}, gpt_features, 4 * HIDDEN, problems, "GPT")
    model.train(False)
    logits = _run_plain(model, batch, problems, "GPT")
    reference = reference_logits(parts, batch[0], gpt_features, args.layernorm_epsilon, 10000.0)
    same, diff = _close(logits, reference)
    problems.check(same, f"GPT: logits differ from the reference GPT by {diff:.3g}")
    check_gradients(model, problems, "GPT")
    return {"layer_norm_sites": sorted(
        f"{i}.{n}" for i, layer in enumerate(parts["layers"]) for n, m in layer.named_modules() if _type(m) in NORM_TYPES
    )}


def check_weight_decay(model, problems: Problems, label: str) -> None:
    """Norm weights go to the no-weight-decay group, as LayerNorm's do."""
    optimizer = importlib.import_module("megatron.optimizer")
    groups = optimizer._get_params_for_weight_decay_optimization([model])
    no_decay = {id(p) for p in groups[1]["params"]}
    decayed = [n for n, m in model.named_modules() if _type(m) in NORM_TYPES
               for p in m.parameters(recurse=False) if id(p) not in no_decay]
    problems.check(not decayed, f"{label}: norm weights under weight decay: {decayed[:4]}")


def check_port(job, tree: Path, gpt: dict, problems: Problems) -> None:
    script = importlib.import_module(Path(job["script"]).stem)
    defaults = getattr(script, f"{job['name']}_defaults")
    args = _initialize(job, tree, defaults)
    features = job["features"]
    eps = job.get("norm_eps", args.layernorm_epsilon)
    problems.check(args.layernorm_epsilon == eps, f"the port's default norm eps is {args.layernorm_epsilon}, the spec says {eps}")
    batch = _batch(args.padded_vocab_size)
    model_class = getattr(importlib.import_module("megatron.model"), job["model_class"])

    for pipe in (False, True):
        label = f"{job['model_class']}{'Pipe' if pipe else ''}"
        args.deepspeed = pipe
        args.no_pipeline_parallel = not pipe
        model = script.model_provider()
        problems.check(type(model).__name__ == label, f"model_provider built {type(model).__name__}, expected {label}")
        if not pipe:
            problems.check(isinstance(model, model_class), f"{label}: not an instance of megatron.model.{job['model_class']}")
        parts = pipe_parts(model) if pipe else plain_parts(model)
        check_structure(model, parts, gpt, features, job["ffn_hidden_size"], problems, label)
        watched = [(n, m) for n, m in model.named_modules()
                   if _type(m) in NORM_TYPES or "Rotary" in _type(m) or _type(m).endswith("OutputLayer")]
        calls = CallCounter(watched)
        model.train(False)
        if pipe:
            inputs, labels, positions, mask = batch
            args.attn_mask = mask
            logits = model((inputs, positions, mask))
            loss = model.loss_fn(logits, (labels, torch.ones_like(labels, dtype=torch.float)))
            loss = loss[0] if isinstance(loss, (tuple, list)) else loss
            problems.check(bool(torch.isfinite(loss)), f"{label}: loss is not finite")
            loss.backward()
            logits = logits.detach()
        else:
            logits = _run_plain(model, batch, problems, label)
        calls.remove()
        problems.check(not calls.uncalled(), f"{label}: modules built but never called: {calls.uncalled()}")
        reference = reference_logits(parts, batch[0], features, args.layernorm_epsilon, job["rope_theta"])
        same, diff = _close(logits, reference)
        problems.check(same, f"{label}: logits differ from the reference model of the spec by {diff:.3g}")
        check_gradients(model, problems, label)
        check_weight_decay(model, problems, label)
        if not pipe:
            saved = model.state_dict_for_save_checkpoint()
            fresh = script.model_provider()
            fresh.load_state_dict(saved, strict=True)
            fresh.train(False)
            again = fresh(batch[0], batch[2], batch[3])
            again = again[0] if isinstance(again, (tuple, list)) else again
            same, diff = _close(again.detach(), logits)
            problems.check(same, f"{label}: a checkpoint round trip changes the logits by {diff:.3g}")


def run_job(job) -> dict:
    start = time.monotonic()
    tree = Path(job["tree"]).resolve()
    problems = Problems()
    RENAMES.clear()
    RENAMES.update(job.get("renames", {}))
    try:
        _fresh_imports(tree, job["script"])
        gpt = check_gpt(job, tree, problems)
        if not job.get("gpt_only"):
            check_port(job, tree, gpt, problems)
    except Exception:
        problems.append("exception:\n" + traceback.format_exc()[-3000:])
    return {"id": job["id"], "ok": not problems, "problems": list(problems), "seconds": round(time.monotonic() - start, 2)}


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    with open(sys.argv[2], "a") as out:
        for job in jobs:
            result = run_job(job)
            out.write(json.dumps(result) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
