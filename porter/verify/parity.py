"""`porter verify`: the generated model against HF transformers' LLaMA, logit for logit.

1. The reference: a tiny random LlamaForCausalLM matching the spec (reference.py), run on a
   random token batch with hooks on every module (probes.capture_hf); saved as an HF
   directory, as a user's model would be.
2. `porter convert`'s own code turns that directory into the tree's checkpoints, one for the
   pipeline engine (LLaMAModelPipe) and one for the plain engine (LLaMAModel), sharded for
   the requested tensor- and pipeline-parallel sizes.
3. Workers inside the tree (worker.py; torch.distributed.run when TP x PP > 1) build the
   generated models with the tree's own machinery, load the checkpoints with the tree's own
   loader and run the batch, recording every probe.
4. Here: logits and loss compared; pass when max |logit difference| <= tolerance (relative to
   the largest |logit|, at least 1) and the argmax is identical everywhere. Every probe is compared too; on failure the report names
   the first module whose output diverges, and by how much.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from porter import convert
from porter.convert.shape_check import parameter_count
from porter.errors import PorterError
from porter.hf_config import causal_lm_class, hf_class_of
from porter.hf_reading import read_config, reading
from porter.naming import spec_in_tree
from porter.probe import probe_plan
from porter.source import SourceTree
from porter.spec import Spec
from porter.treerun.argv import entry_points, max_positions_allowed, tokenizer_argv, tree_job
from porter.treerun.device import runs_on_cpu
from porter.treerun.in_tree import run_in_tree
from porter.treerun.shape import tiny_spec
from porter.verify.probes import capture_hf, combine, orient, pipe_module
from porter.verify.reference import REFERENCE_ATTENTION, TinyConfig, random_reference, reference_attention, token_batch
from porter.verify.user_model import (
    BYTES,
    check_memory,
    describe_shrink,
    reference_from_file,
    shrink,
)

TOLERANCE = 1e-5
# bf16 (--hf --dtype bf16): both sides round every step to 8 bits of mantissa; the logits may
# differ by this many bf16 steps (2^-8 of their largest magnitude each)
BF16_STEPS = 16
# A probe "diverges" when its difference exceeds this, relative to max(1, its magnitude):
# float32 reorderings stay near 1e-6; a wrong port is off by 1e-2 or more.
PROBE_TOLERANCE = 1e-5


def logit_tolerance(options: "VerifyOptions", ref_logits: torch.Tensor) -> float:
    """The largest |logit difference| that passes: options.tolerance relative to the largest
    |logit| (at least 1), as a probe's is, since float32 sums taken in another order (a tree's own
    unfused attention beside HF's SDPA) move a logit by a few of its own ulps; in bf16 (both
    sides round every step) at least BF16_STEPS of its steps at the logits' size."""
    largest = ref_logits.abs().max().item()
    tolerance = options.tolerance * max(1.0, largest)
    if options.dtype == "bf16":
        tolerance = max(tolerance, BF16_STEPS * 2.0 ** -8 * largest)
    return tolerance


@dataclass
class VerifyOptions:
    tiny: TinyConfig = field(default_factory=TinyConfig)
    tensor_parallel: int = 1
    pipeline_parallel: int | None = None  # None: 1, or the checkpoint's
    kinds: tuple[str, ...] | None = None  # None: every class the port has ("model", "pipe")
    expert_parallel: int = 1  # the run's expert-parallel size (processes: x this; the difference says what it shards)
    tolerance: float = TOLERANCE
    timeout: float = 600.0
    checkpoint: Path | None = None  # verify this checkpoint of the tree instead of a random model
    # position ids restarting mid-sequence, attention causal over the whole row (--reset-position-ids)
    reset_positions: bool = False
    cpu: bool | None = True  # on the CPU with porter's stand-ins (None: when this machine has no CUDA)
    hf_dir: Path | None = None  # the user's own HF weights, through both sides at their real size
    dtype: str = "fp32"  # fp32, or bf16 (with --hf: the weights as the user runs them)


@dataclass
class ProbeResult:
    name: str  # the module's path in the plain model
    what: str
    max_diff: float
    scale: float
    pipe_name: str | None = None  # its path in the pipe model, for the pipe model's results

    @property
    def diverges(self) -> bool:
        return not self.max_diff <= PROBE_TOLERANCE * max(1.0, self.scale)

    def as_dict(self) -> dict:
        out = {"module": self.name, "what": self.what, "max_abs_diff": self.max_diff, "max_abs_reference": self.scale}
        if self.pipe_name is not None:
            out["pipe_module"] = self.pipe_name
        return out


@dataclass
class KindResult:
    kind: str  # "model" (LLaMAModel) or "pipe" (LLaMAModelPipe)
    model_class: str
    tensor_parallel: int
    pipeline_parallel: int
    max_logit_diff: float
    argmax_equal: bool
    loss: float
    reference_loss: float
    max_token_loss_diff: float | None
    loaded_by: str
    structure: list[dict]
    probes: list[ProbeResult]
    tolerance: float
    logits: torch.Tensor | None = field(default=None, repr=False)  # [b, s, vocab], the ranks joined

    @property
    def first_divergence(self) -> ProbeResult | None:
        return next((p for p in self.probes if p.diverges), None)

    @property
    def passed(self) -> bool:
        return (not self.structure and self.max_logit_diff <= self.tolerance and self.argmax_equal
                and abs(self.loss - self.reference_loss) <= self.tolerance)

    def as_dict(self) -> dict:
        first = self.first_divergence
        return {
            "kind": self.kind, "class": self.model_class, "passed": self.passed,
            "tensor_parallel": self.tensor_parallel, "pipeline_parallel": self.pipeline_parallel,
            "max_abs_logit_diff": self.max_logit_diff, "argmax_equal": self.argmax_equal,
            "loss": self.loss, "reference_loss": self.reference_loss,
            "max_abs_token_loss_diff": self.max_token_loss_diff,
            "loaded_by": self.loaded_by, "structure": self.structure,
            "first_divergence": first.as_dict() if first else None,
            "probes": [p.as_dict() for p in self.probes],
        }


@dataclass
class VerifyResult:
    spec: str
    target: str
    config: dict
    results: list[KindResult]
    workdir: str
    seconds: float
    standins: list = field(default_factory=list)  # porter.treerun.standins.StandIn: those the tree's run used
    reference: list[str] = field(default_factory=list)  # what the reference is: a user's file, shrunk how

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "spec": self.spec, "target": self.target, "config": self.config,
                "reference": self.reference,
                "results": [r.as_dict() for r in self.results], "workdir": self.workdir,
                "seconds": round(self.seconds, 2), "standins": [s.name for s in self.standins]}


# -- the comparison -------------------------------------------------------------------------------


def _collect(out: Path, kind: str) -> list[dict]:
    records = [torch.load(p, map_location="cpu", weights_only=False) for p in sorted(out.glob(f"{kind}-rank*.pt"))]
    if not records:
        raise PorterError(f"the worker wrote no results for {kind}", file=str(out), fix="see the worker log")
    return records


def _assemble(records: list[dict], name: str, probe, batch_size: int) -> torch.Tensor | None:
    """One probe's value from every rank that saw it: the TP ranks of one pipeline stage."""
    holders = [r for r in records if name in r["probes"]]
    if not holders:
        return None
    stage = min(r["pp_rank"] for r in holders)
    ranks = sorted((r for r in holders if r["pp_rank"] == stage), key=lambda r: r["tp_rank"])
    return combine(probe, [orient(probe, r["probes"][name], batch_size) for r in ranks])


def compare(kind: str, records: list[dict], probes, ref_logits, captures, labels, vocab: int,
            tolerance: float, model_class: str, layout=None) -> KindResult:
    results = []
    num_layers = 1 + max((p.layer for p in probes), default=-1)
    for probe in probes:
        mine = _assemble(records, probe.name, probe, labels.shape[0])
        if mine is None:
            continue
        theirs = probe.hf(captures).float()
        if probe.site == "output":
            mine = mine[..., :vocab]
        pipe_name = pipe_module(probe, num_layers, layout) if kind == "pipe" else None
        if mine.shape != theirs.shape:
            results.append(ProbeResult(probe.name, f"{probe.what} (shape {tuple(mine.shape)} vs HF "
                                                   f"{tuple(theirs.shape)})", float("inf"), 0.0, pipe_name))
            continue
        results.append(ProbeResult(probe.name, probe.what, (mine - theirs).abs().max().item(),
                                   theirs.abs().max().item(), pipe_name))
    head = next(p for p in probes if p.site == "output")
    logits = _assemble(records, head.name, head, labels.shape[0])
    if logits is None:
        raise PorterError(f"no logits from the tree's {model_class}", construct=f"its module {head.name}",
                          found="no output of that module was seen during the forward pass",
                          fix="does the generated model still end with its output layer?")
    padded = logits.shape[-1]
    logits = logits[..., :vocab]
    if logits.shape != ref_logits.shape:
        max_diff, argmax_equal = float("inf"), False
    else:
        max_diff = (logits - ref_logits).abs().max().item()
        argmax_equal = bool(torch.equal(logits.argmax(-1), ref_logits.argmax(-1)))
    # The tree's loss runs over its padded vocabulary: the padding rows are zero, so their logits are 0.
    padded_ref = torch.cat((ref_logits, ref_logits.new_zeros(*ref_logits.shape[:-1], padded - vocab)), dim=-1)
    ref_tokens = F.cross_entropy(padded_ref.reshape(-1, padded), labels.reshape(-1), reduction="none")
    ref_tokens = ref_tokens.view_as(labels)
    last = max(records, key=lambda r: (r["pp_rank"], -r["tp_rank"]))
    token_diff = None
    if "per_token_loss" in last:
        mine_tokens = last["per_token_loss"]
        token_diff = (mine_tokens - ref_tokens).abs().max().item()
        loss = mine_tokens.mean().item()
    else:
        loss = last.get("loss") if last.get("loss") is not None else float("nan")
    structure = [p for r in records for p in r.get("structure", [])]
    unique = {json.dumps(p, sort_keys=True): p for p in structure}
    return KindResult(
        kind=kind, model_class=model_class, tensor_parallel=records[0]["tp"], pipeline_parallel=records[0]["pp"],
        max_logit_diff=max_diff, argmax_equal=argmax_equal, loss=loss, reference_loss=ref_tokens.mean().item(),
        max_token_loss_diff=token_diff, loaded_by=records[0].get("loaded_by", ""),
        structure=list(unique.values()), probes=results, tolerance=tolerance, logits=logits,
    )


# -- the whole check --------------------------------------------------------------------------------


def _kinds(spec: Spec, asked: tuple[str, ...] | None) -> tuple[str, ...]:
    """The generated classes to verify: those asked for, else every one the port has (a
    difference the pipe model cannot carry leaves the plain one)."""
    pipe = all(d.pipeline_engine for d in spec.wanted())
    if asked is None:
        return ("model", "pipe") if pipe else ("model",)
    if "pipe" in asked and not pipe:
        names = ", ".join(d.name for d in spec.wanted() if not d.pipeline_engine)
        raise PorterError(f"the {spec.name} port's {spec.model_class}Pipe cannot carry {names}",
                          file=spec.path, construct="--models model", found="--models " + ",".join(asked),
                          fix=f"verify {spec.model_class} (--models model): the port trains on the plain engine")
    return asked


def _reference_from_checkpoint(port: convert.Port, checkpoint: Path, tiny: TinyConfig, workdir: Path):
    """The HF reference converted from a checkpoint of the tree (the tree's padding rows kept)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    reader = convert.CheckpointReader(checkpoint, port.layout, keep_padding=True)
    reader.shape = shape = replace(reader.shape, vocab_size=reader.padded_vocab)  # every row: comparable losses
    hf_dir = workdir / "hf"
    config = convert.hf_config_for(port, reader, torch.float32)
    weights = port.weights(config, shape)
    model = convert.read_checkpoint(reader, weights)
    convert.write_hf(hf_dir, config, convert.megatron_to_hf(model), port.spec.hf_class)
    cls = hf_class_of(port.spec.hf_class)
    reference = cls.from_pretrained(str(hf_dir), attn_implementation=reference_attention(cls)).float().eval()
    tiny = replace(tiny, num_layers=shape.num_layers, hidden_size=shape.hidden_size,
                   num_attention_heads=shape.num_attention_heads, vocab_size=shape.vocab_size,
                   seq_length=min(tiny.seq_length, config.get("max_position_embeddings") or tiny.seq_length))
    return reference, tiny, model


def verify(spec: Spec, target: Path, workdir: Path, options: VerifyOptions | None = None) -> VerifyResult:
    """Run the parity check of spec's port in the tree at target; files go to workdir.

    With options.checkpoint, the reference is that checkpoint converted to HF (megatron-to-hf)
    and the tree loads the checkpoint itself: this proves a trained checkpoint's conversion.
    """
    options = options or VerifyOptions()
    tiny = options.tiny
    start = time.monotonic()
    tree = SourceTree.open(target)
    spec = spec_in_tree(spec, tree)
    entry_points(tree, spec)  # refuses a tree that is not ported, before any work
    port = convert.Port(spec, tree.root)
    profile, layout = port.profile, port.layout
    workdir = Path(workdir).resolve()  # the workers run in the tree's copy: every path they get is absolute
    workdir.mkdir(parents=True, exist_ok=True)
    tp, pp = options.tensor_parallel, options.pipeline_parallel or 1
    ep = options.expert_parallel
    argv_extra: list[str] = port.expert_parallel_argv(ep)

    source_config = None  # the user's config.json (shrunk) that the HF directory holds
    report: list[str] = []
    if options.checkpoint is not None:
        reference, tiny, model = _reference_from_checkpoint(port, Path(options.checkpoint), tiny, workdir)
        kinds = ("pipe",) if model.extra["pipe"] else ("model",)
        tp = model.extra["tensor_parallel"]
        pp = options.pipeline_parallel or model.extra["pipeline_parallel"]
        # what the tree's load_checkpoint compares with the checkpoint's args
        argv_extra += port.run_argv(port.spec_from_args(model.extra["args"])) + \
            ["--ffn-hidden-size", str(model.shape.ffn_hidden_size)]
        if max_positions_allowed(spec, profile):
            positions = getattr(model.extra["args"], "max_position_embeddings", None) or tiny.seq_length
            argv_extra += ["--max-position-embeddings", str(positions)]
        checkpoints = {kinds[0]: str(options.checkpoint)}
    elif options.hf_dir is not None:
        kinds = _kinds(spec, options.kinds)
        reference, tiny, report = _users_weights(spec, Path(options.hf_dir), tiny, options.dtype)
        argv_extra += port.run_argv(port.spec_for(users_config(Path(options.hf_dir))[0]))
    elif spec.hf_source:
        # the user's own config.json, shrunk: transformers reads it for the reference, porter for the port
        kinds = _kinds(spec, options.kinds)
        shrunk = shrink(dict(spec.hf_source), spec.differences, tiny.num_layers, tiny.num_attention_heads,
                        tiny.vocab_size, tiny.seq_length)
        tiny = replace(tiny, num_layers=shrunk.num_layers, hidden_size=shrunk.hidden_size,
                       num_attention_heads=shrunk.num_attention_heads, vocab_size=shrunk.vocab_size)
        reference = reference_from_file(shrunk.config, spec.hf_class, tiny.weight_std, tiny.seed, REFERENCE_ATTENTION)
        source_config, report = shrunk.config, describe_shrink(shrunk, spec.path)
        argv_extra += port.run_argv(port.spec_for(shrunk.config, spec.path))
        positions = reading(shrunk.config).get("max_position_embeddings")
        if positions and max_positions_allowed(spec, profile):  # the checkpoint's args keep the published context
            argv_extra += ["--max-position-embeddings", str(max(positions, tiny.seq_length))]
    else:
        kinds = _kinds(spec, options.kinds)
        reference = random_reference(spec, tiny)
        argv_extra += port.run_argv(tiny_spec(spec, tiny))
    if options.dtype == "bf16":
        argv_extra += ["--bf16"]
    if tiny.num_layers % pp:
        raise PorterError(f"{tiny.num_layers} layers do not split over {pp} pipeline stages",
                          construct="--layers divisible by --pp", found=f"--layers {tiny.num_layers} --pp {pp}",
                          fix="choose a layer count divisible by the pipeline-parallel size")
    if pp > 1:  # LLaMAModel runs on the plain engine: no pipeline stages
        kinds = tuple(k for k in kinds if k != "model")
    if not kinds:
        plain_only = _kinds(spec, None) == ("model",)
        raise PorterError(f"{spec.model_class} runs on the plain engine, which has no pipeline stages",
                          construct="--pp 1 with --models model", found=f"--pp {pp}",
                          fix=f"the {spec.name} port trains on the plain engine only: verify with --pp 1" if plain_only
                          else "verify the pipe model (--models pipe) for pipeline-parallel sizes > 1")

    tokens, labels = token_batch(tiny)
    positions = reset_positions(tiny) if options.reset_positions else None
    ref_logits, captures = capture_hf(reference, tokens, positions)

    if options.checkpoint is None:
        # The user's path: an HF directory, converted by porter convert's own code.
        hf_dir = Path(options.hf_dir) if options.hf_dir is not None else workdir / "hf"
        if options.hf_dir is None:
            convert.write_hf(hf_dir, reference.config.to_dict(), reference.state_dict(), spec.hf_class)
            if source_config is not None:  # the user's file as they wrote it, sizes shrunk
                (hf_dir / "config.json").write_text(json.dumps(source_config, indent=2))
        config, state = convert.read_hf(hf_dir)
        read = reading(config, str(hf_dir / "config.json"))
        port.check_hf_shapes({k: t.shape for k, t in state.items()}, read)
        model = port.to_megatron(state, read, tensor_parallel=tp)
        del state
        numbers = {dest: value for dest, (_, value) in port.numbers(port.spec_for(config)).items()}
        checkpoints = {}
        for kind in kinds:
            path = workdir / f"megatron-{kind}-tp{tp}-pp{pp}"
            convert.write_checkpoint(model, path, tp=tp, pp=pp, pipe=kind == "pipe",
                                     args=numbers, hf_config=config)
            checkpoints[kind] = str(path)
        del model

    probes = probe_plan(layout, tiny.num_layers, tiny.num_attention_heads, spec.wanted(), reference.config.to_dict())
    out = workdir / "out"
    out.mkdir(exist_ok=True)
    for stale in out.glob("*"):
        stale.unlink()
    job = {
        "tree": {**tree_job(spec, tree, profile, tiny, tp, pp,
                            argv_extra + tokenizer_argv(spec, profile, workdir), dp=ep),
                 **({"deepspeed_config": {"bf16": {"enabled": True}}} if options.dtype == "bf16" else {})},
        "stamp_args": options.checkpoint is None,
        "kinds": list(kinds), "checkpoints": checkpoints, "out": str(out), "layout": layout.as_dict(),
        "num_layers": tiny.num_layers, "probes": [p.tree_side() for p in probes],
        "apart": [d.apart_tensors for d in spec.wanted() if d.apart_tensors],
        # the layer tensors the conversion makes from the config (the tree's code computes them too)
        "made": sorted({w.key for i in range(tiny.num_layers)
                        for w in port.weights(reference.config.to_dict()).layer(i) if w.made is not None}),
        "tokens": tokens.tolist(), "labels": labels.tolist(),
        "positions": None if positions is None else positions.tolist(), "weight_std": tiny.weight_std, "seed": tiny.seed,
    }
    job_path = workdir / "job.json"
    job_path.write_text(json.dumps(job, indent=1))
    used = run_in_tree(tree.root, "porter.verify.worker", job_path, tp * pp * ep, workdir / "worker.log",
                       options.timeout, what=f"building, loading and running the generated {spec.model_class}",
                       cpu=runs_on_cpu(options.cpu))

    tolerance = logit_tolerance(options, ref_logits)
    results = []
    for kind in kinds:
        model_class = spec.model_class + ("Pipe" if kind == "pipe" else "")
        records = _collect(out, kind)
        # data-parallel replicas (expert parallelism) ran the same batch: each is compared, the worst reported
        replicas = [compare(kind, [r for r in records if r.get("dp_rank", 0) == dp], probes, ref_logits, captures,
                            labels, tiny.vocab_size, tolerance, model_class, layout)
                    for dp in sorted({r.get("dp_rank", 0) for r in records})]
        results.append(max(replicas, key=lambda r: (not r.passed, r.max_logit_diff)))
    config = {**tiny.as_dict(), "tensor_parallel": tp, "pipeline_parallel": pp, "expert_parallel": ep,
              "checkpoint": None if options.checkpoint is None else str(options.checkpoint)}
    return VerifyResult(spec=spec.name, target=str(target), config=config, results=results,
                        workdir=str(workdir), seconds=time.monotonic() - start, standins=used, reference=report)


def _users_weights(spec: Spec, hf_dir: Path, tiny: TinyConfig, dtype: str):
    """The user's own HF model, loaded by transformers at its real size (refused, with the bytes
    needed, where it would not fit in memory); the run's sizes are its own. Of a multimodal
    model, its language model and head, checked to give the whole model's logits on text tokens."""
    config_path = hf_dir / "config.json"
    if dtype not in BYTES:
        raise PorterError(f"unknown --dtype {dtype!r}", construct="--dtype fp32 or bf16", found=dtype,
                          fix="pass --dtype fp32 or --dtype bf16")
    raw, found = users_config(hf_dir)
    check_memory(raw, spec.hf_class, dtype, str(config_path))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cls = causal_lm_class(raw, spec.hf_class)
    torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
    read = reading(raw, str(config_path))
    tiny = replace(tiny, num_layers=read["num_hidden_layers"], hidden_size=read["hidden_size"],
                   num_attention_heads=read["num_attention_heads"], vocab_size=read["vocab_size"])
    if found is None:
        reference = cls.from_pretrained(str(hf_dir), dtype=torch_dtype, attn_implementation=reference_attention(cls)).eval()
        how = f"transformers' {cls.__name__}.from_pretrained({hf_dir})"
    else:
        reference, how = _language_model(hf_dir, found, cls, torch_dtype, token_batch(tiny)[0])
    report = [f"reference: {how} in {dtype}: your own weights, nothing shrunk ({parameter_count(raw, spec.hf_class):,} "
              "parameters" + (" in the language model)" if found else ")")]
    return reference, tiny, report


def users_config(hf_dir: Path) -> tuple[dict, object]:
    """The config.json of the user's HF folder as porter ports it (a multimodal model's language
    model's; porter.hf_reading.read_config, its refusals naming the file), and the multimodal model
    it is part of (None for a text model)."""
    read = read_config(hf_dir)
    return read.raw, read.multimodal


def _language_model(hf_dir: Path, found, cls, torch_dtype, tokens: torch.Tensor):
    """The multimodal model as transformers loads it (`from_pretrained` of its *ForConditionalGeneration),
    its language model and head run as the text model's class (`cls`: the modules verify's probes
    name); refused where that does not give the whole model's logits on text tokens."""
    import transformers

    whole_cls = getattr(transformers, found.architecture, None)
    if whole_cls is None:
        raise PorterError(f"transformers {transformers.__version__} has no {found.architecture}",
                          file=str(hf_dir / "config.json"), construct=f"architectures = [{found.architecture!r}], "
                          "a class of the installed transformers (verify --hf runs the whole model as it loads it)",
                          found=f"no transformers.{found.architecture} (a model of remote code, or a later release's)",
                          fix=f"install a transformers that has {found.architecture}, or verify without --hf "
                              "(a model built from the text config)")
    whole = whole_cls.from_pretrained(str(hf_dir), dtype=torch_dtype,
                                      attn_implementation=reference_attention(cls)).eval()
    text_config = whole.config.get_text_config()
    text_config._attn_implementation = whole.get_decoder().config._attn_implementation
    with torch.device("meta"):
        reference = cls(text_config)
    reference.model = whole.get_decoder()
    reference.lm_head = whole.get_output_embeddings()
    reference.eval()
    with torch.no_grad():
        mine = reference(input_ids=tokens, use_cache=False).logits
        theirs = whole(input_ids=tokens, use_cache=False).logits
    difference = (mine.float() - theirs.float()).abs().max().item()
    if difference > TOLERANCE * max(1.0, theirs.abs().max().item()):
        raise PorterError(f"{cls.__name__} on {found.architecture}'s language model does not give its logits",
                          file=str(hf_dir / "config.json"), construct="the language model of the multimodal model, "
                          "run on text tokens as the text model's class", found=f"max |logit difference| {difference:.3g}",
                          fix="report this: porter ports the language model as the text class transformers has for it")
    return reference, (f"transformers' {found.architecture}.from_pretrained({hf_dir}), its language model and head "
                       f"run as {cls.__name__} (the whole model's logits on the batch's text tokens: max |difference| "
                       f"{difference:.3g}; the vision tower and projector not run)")


def reset_positions(tiny: TinyConfig) -> torch.Tensor:
    """Position ids [b, s] that restart at 0 a third of the way in, and again in the second row."""
    s = tiny.seq_length
    rows = []
    for row in range(tiny.batch_size):
        cut = s // 3 if row % 2 == 0 else 2 * s // 3
        rows.append(torch.cat((torch.arange(cut), torch.arange(s - cut))))
    return torch.stack(rows)


def describe(result: VerifyResult) -> str:
    """The report a person reads."""
    lines = list(result.reference)
    ep = result.config.get("expert_parallel", 1)
    expert_parallel = f", EP={ep}" if ep > 1 else ""
    for r in result.results:
        verdict = "passed" if r.passed else "FAILED"
        lines.append(
            f"{r.model_class} (TP={r.tensor_parallel}, PP={r.pipeline_parallel}{expert_parallel}): {verdict}: "
            f"max |logit - HF| = {r.max_logit_diff:.3g} (tolerance {r.tolerance:.2g}), "
            f"argmax {'identical' if r.argmax_equal else 'DIFFERS'}, "
            f"loss {r.loss:.6f} vs HF {r.reference_loss:.6f}"
        )
        for problem in r.structure[:8]:
            lines.append(f"  structure: {problem['tensor']}: {problem['problem']}")
        first = r.first_divergence
        if not r.passed and first is not None:
            where = f" (in {r.model_class}: {first.pipe_name})" if first.pipe_name else ""
            lines.append(f"  first divergence: {first.name}{where} ({first.what}): "
                         f"max |diff| = {first.max_diff:.3g} (values up to {first.scale:.3g})")
    return "\n".join(lines)
