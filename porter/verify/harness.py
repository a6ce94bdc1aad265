"""Build and run the generated model INSIDE a ported tree, with the tree's own machinery.

This module runs in a process of its own whose sys.path starts with the target tree (the
tree's `megatron` package keeps global state: its args, its model-parallel groups). It
imports only torch at module level; the tree (and deepspeed) when a session starts.
`porter.verify.worker` drives it for verify; bench scripts can drive it to time the
generated model:

    session = TreeSession.start(job)         # the tree's initialize_megatron, its args
    engine = session.engine("pipe")          # model_provider() -> LLaMAModelPipe -> deepspeed
    session.load(engine)                     # the tree's megatron.checkpointing.load_checkpoint
    result = session.run(engine, tokens, labels)

`job` is a plain dict (see `TreeJob`): the script and its extra-args provider, the command
line the tree's parser reads (tiny model, TP/PP sizes, --load, ...), the real vocabulary.
The parent process makes it with `porter.treerun.argv.tree_job(spec, tree, profile, tiny)`
and starts a module of its own in the tree with `parity.run_workers(..., module=...)`
(the tree and porter on PYTHONPATH; torch.distributed.run when TP x PP > 1).
Every step goes through the tree's own code: its argument parser with the spec's defaults,
its model_provider, DeepSpeed's engines, its checkpoint loader, its mask helper.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from porter.convert import flatten_state

KINDS = ("model", "pipe")  # the generated <Prefix>Model (plain engine) and <Prefix>ModelPipe


@dataclass
class TreeJob:
    script_module: str  # e.g. "pretrain_llama"
    extra_args_provider: str | None  # e.g. "llama_defaults"
    argv: list[str]  # what the tree's parser reads
    vocab_size: int  # the real vocabulary; the tree pads it
    micro_batch_size: int
    deepspeed_config: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> TreeJob:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def parallel_state():
    """The tree's model-parallel state: megatron.mpu (2023 trees) or megatron.core's parallel_state."""
    for name in ("megatron.mpu", "megatron.core.parallel_state"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "get_tensor_model_parallel_rank"):
            return module
    raise RuntimeError("the tree has neither megatron.mpu nor megatron.core.parallel_state")


def _tensor_parallel_defaults(param) -> None:
    """What the tree's get_model does to every parameter (mpu's or core.tensor_parallel's)."""
    for name in ("megatron.mpu", "megatron.core.tensor_parallel"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "set_defaults_if_not_set_tensor_model_parallel_attributes"):
            module.set_defaults_if_not_set_tensor_model_parallel_attributes(param)
            return


class TreeSession:
    """Megatron initialised in this process from the tree's own argument machinery."""

    def __init__(self, job: TreeJob, script, args) -> None:
        self.job = job
        self.script = script
        self.args = args

    @classmethod
    def start(cls, job: TreeJob) -> TreeSession:
        sys.argv = [f"{job.script_module}.py", *job.argv]
        script = importlib.import_module(job.script_module)
        from megatron import get_args
        from megatron.initialize import initialize_megatron

        provider = getattr(script, job.extra_args_provider) if job.extra_args_provider else None
        initialize_megatron(extra_args_provider=provider)
        args = get_args()
        if not hasattr(args, "model_type"):  # megatron.core trees: pretrain() sets it for the GPT family
            try:
                from megatron.core.enums import ModelType

                args.model_type = ModelType.encoder_or_decoder
            except ImportError:
                pass
        # The model's vocabulary is the job's, padded by the tree's own rule: a tokenizer the
        # tree may have built on the way (some trees always build one) does not decide it.
        args.padded_vocab_size = padded_vocab(job.vocab_size, args)
        return cls(job, script, args)

    # -- model -------------------------------------------------------------------------------
    def build(self, kind: str):
        """The tree's model_provider with its engine switch set for `kind`."""
        mpu = parallel_state()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self.args.deepspeed = True
        self.args.no_pipeline_parallel = kind == "model"
        if hasattr(self.args, "ds_pipeline_enabled"):
            self.args.ds_pipeline_enabled = kind == "pipe"
        # pretrain() of trees run with --deepspeed keeps the DeepSpeed config as a dict in
        # args.deepspeed_config_dict before it builds the model (their model_provider hands it to
        # deepspeed.zero.Init, their GPTModelPipe reads its pipeline section): the same config
        # the engine gets here
        if getattr(self.args, "deepspeed_config_dict", None) is None:
            self.args.deepspeed_config_dict = self.deepspeed_config()
        model = self.script.model_provider(pre_process=mpu.is_pipeline_first_stage(),
                                           post_process=mpu.is_pipeline_last_stage())
        for param in model.parameters():
            _tensor_parallel_defaults(param)
        return model

    def engine(self, kind: str, model=None):
        """A DeepSpeed engine around the model: PipelineEngine for 'pipe', else the plain one."""
        import deepspeed

        mpu = parallel_state()
        model = model if model is not None else self.build(kind)
        config = self.deepspeed_config()
        engine, *_ = deepspeed.initialize(model=model, config=config, mpu=None if kind == "pipe" else mpu)
        return engine

    def deepspeed_config(self) -> dict:
        """The DeepSpeed config of verify's engines."""
        mpu = parallel_state()
        return {
            "train_micro_batch_size_per_gpu": self.job.micro_batch_size,
            "gradient_accumulation_steps": 1,
            "train_batch_size": self.job.micro_batch_size * mpu.get_data_parallel_world_size(),
            "zero_optimization": {"stage": 0},
            "steps_per_print": 10**9,
            **self.job.deepspeed_config,
        }

    def load(self, engine, strict: bool = True) -> int:
        """The tree's load_checkpoint on [engine] (reads --load, honours --finetune)."""
        from megatron.checkpointing import load_checkpoint

        return load_checkpoint([engine], None, None, strict=strict)

    # -- data --------------------------------------------------------------------------------
    def batch(self, tokens: torch.Tensor):
        """(attention_mask, loss_mask, position_ids) from the tree's own mask helper."""
        from megatron.utils import get_ltor_masks_and_position_ids

        mask, loss_mask, positions = get_ltor_masks_and_position_ids(tokens, 0, False, False, False)
        return mask, loss_mask, positions

    # -- forward -----------------------------------------------------------------------------
    def run(self, engine, tokens: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None) -> dict:
        """The batch through the model in eval mode, as the tree's own steps run it (with the
        given position ids [b, s] in place of the tree's 0..s-1, when given).

        Returns 'logits' (this rank's vocabulary slice, [b, s, vocab/p]; None on a pipeline
        stage that is not the last) and the loss: 'per_token_loss' [b, s] from the plain
        model, 'loss' (the pipeline's loss function, a mean) from the pipe model.
        """
        import deepspeed

        mask, loss_mask, counted = self.batch(tokens)
        positions = counted if positions is None else positions
        if isinstance(engine, deepspeed.PipelineEngine):
            # The stage's output, copied before the loss function sees it: older trees' vocab-parallel
            # cross entropy subtracts the max from the logits in place.
            seen = {}

            def keep(module, args, output):
                seen["logits"] = _first(output).detach().float().clone()

            handle = engine.module.register_forward_hook(keep)
            try:
                loss = engine.eval_batch(iter([((tokens, positions, mask), (labels, loss_mask))]))
            finally:
                handle.remove()
            return {"loss": None if loss is None else float(loss),
                    "logits": seen.get("logits") if engine.is_last_stage() else None}
        engine.eval()
        with torch.no_grad():
            logits = _first(engine(tokens, positions, mask))
            losses = _first(engine(tokens, positions, mask, labels=labels))
        return {"logits": logits.detach().float().clone(), "per_token_loss": losses.detach().float().clone()}


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value



def padded_vocab(vocab: int, args) -> int:
    """The tree's own padding function when it has one, else the usual rule."""
    try:
        from megatron.tokenizer.tokenizer import _vocab_size_with_padding
    except ImportError:
        multiple = args.make_vocab_size_divisible_by * args.tensor_model_parallel_size
        return -(-vocab // multiple) * multiple
    return _vocab_size_with_padding(vocab, args)


# -- probes: forward hooks ------------------------------------------------------------------------


def site_modules(model, layout: dict, num_layers: int, kind: str) -> dict[tuple[str, int], torch.nn.Module]:
    """(site, layer) -> the module of this process's model that holds it (absent: another stage)."""
    from porter.layout import WeightLayout

    found: dict[tuple[str, int], torch.nn.Module] = {}
    modules = dict(model.named_modules())
    if kind == "pipe":
        order = WeightLayout.from_dict(layout)
        names = {("embedding", -1): str(order.pipe_embedding), ("final_norm", -1): str(order.pipe_final_norm(num_layers)),
                 ("output", -1): str(order.pipe_output_layer(num_layers))}
        names.update({("layer", i): str(order.pipe_layer(i)) for i in range(num_layers)})
    else:
        lm = f"{layout['language_model_key']}"
        encoder = f"{lm}.{layout['encoder']}"
        names = {("embedding", -1): f"{lm}.{layout['embedding']}",
                 ("final_norm", -1): f"{encoder}.{layout['final_norm']}"}
        stack = modules.get(f"{encoder}.{layout['layers']}")
        offset = 0
        if stack is not None and len(stack) and num_layers != len(stack):
            offset = parallel_state().get_pipeline_model_parallel_rank() * len(stack)
        names.update({("layer", offset + j): f"{encoder}.{layout['layers']}.{j}" for j in range(len(stack or []))})
    if kind == "pipe" and names[("embedding", -1)] not in modules:
        names[("embedding", -1)] = "tied_modules.embed"  # a tied embedding: DeepSpeed keeps it apart (TiedLayerSpec)
    for key, name in names.items():
        if name in modules:
            found[key] = modules[name]
    return found


def attach_probes(model, probes: Iterable[dict], layout: dict, num_layers: int, kind: str) -> tuple[dict, list]:
    """Forward hooks that keep each probe's value (detached, on CPU). `probes`: each probe's
    tree side (porter.verify.probes.Probe.tree_side). Returns (values, handles)."""
    values: dict[str, torch.Tensor] = {}
    handles = []
    sites = site_modules(model, layout, num_layers, kind)
    for probe in probes:
        if probe["site"] == "output":  # the model's returned logits: see TreeSession.run
            continue
        owner = sites.get((probe["site"], probe["layer"]))
        if owner is None:
            continue
        try:
            module = owner.get_submodule(probe["path"]) if probe["path"] else owner
        except AttributeError:
            continue
        handles.append(module.register_forward_hook(_keeper(values, probe["name"], probe["take"])))
    return values, handles


def _keeper(values: dict, name: str, take: str):
    """A forward hook keeping what `take` says: the output, the input, output + bias, or what a
    difference's function ('package.module:function') makes of (module, args, output)."""
    made = _function(take) if ":" in take else None

    def hook(module, args, output):
        if made is not None:
            value = made(module, args, output)
        elif take == "input":
            value = args[0]
        elif take == "output+bias" and isinstance(output, (tuple, list)):
            value = output[0] if len(output) < 2 or output[1] is None else output[0] + output[1]
        else:
            value = output[0] if isinstance(output, (tuple, list)) else output
        values[name] = value.detach().float().cpu().clone()
    return hook


def _function(dotted: str):
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


# -- structure: the model's tensors against a checkpoint's --------------------------------------------


def expected_tensors(model, kind: str, folder, tp_rank: int, apart: Iterable[str] = ()
                     ) -> dict[str, tuple[tuple, tuple | None]]:
    """name -> (shape in the model, shape in the checkpoint or None), for this rank's model."""
    found: dict[str, tuple[tuple, tuple | None]] = {}
    if kind == "pipe":
        for name, layer in model.named_children():
            # tensors only: a tree's linears may keep `_extra_state: None` in their state dict
            mine = flatten_state(layer.state_dict()) if name.isdigit() else {}
            if not mine:
                continue
            path = os.path.join(folder, f"layer_{int(name):02d}-model_{tp_rank:02d}-model_states.pt")
            saved = flatten_state(torch.load(path, map_location="cpu", weights_only=False)) \
                if os.path.exists(path) else {}
            for key, value in mine.items():
                theirs = saved.get(key)
                found[f"{name}.{key}"] = (tuple(value.shape), None if theirs is None else tuple(theirs.shape))
            for key in set(saved) - set(mine):
                found[f"{name}.{key}"] = ((), tuple(saved[key].shape))
    else:
        path = os.path.join(folder, f"mp_rank_{tp_rank:02d}_model_states.pt")
        saved = flatten_state(torch.load(path, map_location="cpu", weights_only=False)["module"]) \
            if os.path.exists(path) else {}
        saved.update(apart_tensors(model, folder, tp_rank, apart))
        mine = flatten_state(model.state_dict_for_save_checkpoint())
        for key, value in mine.items():
            theirs = saved.get(key)
            found[key] = (tuple(value.shape), None if theirs is None else tuple(theirs.shape))
        for key in set(saved) - set(mine):
            found[key] = ((), tuple(saved[key].shape))
    return found


def apart_tensors(model, folder, tp_rank: int, apart: Iterable[str]) -> dict[str, torch.Tensor]:
    """This rank's tensors that the engine saves in files of their own,
    keyed as the model names them: each difference's own reader ('module:function', its
    Difference.apart_tensors) called with the model, the tag folder and the rank."""
    found: dict[str, torch.Tensor] = {}
    for reader in apart:
        found.update(_function(reader)(model, folder, tp_rank))
    return found


def structure_problems(found: dict[str, tuple[tuple, tuple | None]]) -> list[dict]:
    problems = []
    for name, (mine, theirs) in sorted(found.items()):
        if theirs is None:
            problems.append({"tensor": name, "problem": "in the tree's model, not in the converted HF weights",
                             "shape": list(mine)})
        elif mine == ():
            problems.append({"tensor": name, "problem": "in the converted HF weights, not in the tree's model",
                             "shape": list(theirs)})
        elif mine != theirs:
            problems.append({"tensor": name, "problem": "shape differs", "model": list(mine),
                             "weights": list(theirs)})
    return problems


def computed_differently(model, kind: str, folder, tp_rank: int, made: Iterable[str]) -> list[dict]:
    """The tensors the tree's code computes itself (buffers, not parameters, that the conversion
    makes from the config rather than reads from HF: `made`, layer keys, e.g. a rotary embedding's
    saved `inv_freq`) whose values differ from what the converted checkpoint holds for them.

    Loading the checkpoint overwrites them, so the forward pass would never show code that
    computes them wrongly (a layer built with another rotary base than its weights say); a run
    from scratch keeps the tree's own. Read before the load; each one is named."""
    problems = []
    if kind == "pipe":
        parts = [(f"{name}.", layer, os.path.join(folder, f"layer_{int(name):02d}-model_{tp_rank:02d}-model_states.pt"))
                 for name, layer in model.named_children() if name.isdigit()]
    else:
        parts = [("", model, os.path.join(folder, f"mp_rank_{tp_rank:02d}_model_states.pt"))]
    for prefix, module, path in parts:
        parameters = {p.data_ptr() for p in module.parameters()}
        state = module.state_dict() if kind == "pipe" else module.state_dict_for_save_checkpoint()
        buffers = {k: v for k, v in flatten_state(state).items()
                   if v.numel() and v.is_floating_point() and v.data_ptr() not in parameters
                   and any(k == m or k.endswith(f".{m}") for m in made)}
        if not buffers or not os.path.exists(path):
            continue
        saved = torch.load(path, map_location="cpu", weights_only=False)
        saved = flatten_state(saved if kind == "pipe" else saved["module"])
        for key, value in sorted(buffers.items()):
            theirs = saved.get(key)
            if theirs is None or theirs.shape != value.shape:
                continue  # a structure problem, said by structure_problems
            mine = value.detach().float().cpu()
            theirs = theirs.to(value.dtype).float()  # as the load would copy them into the tree's tensor
            if not torch.allclose(mine, theirs, rtol=1e-6, atol=0.0):
                problems.append({"tensor": prefix + key, "problem": "the tree's code computes it otherwise than the "
                                 f"converted weights hold it (max difference {(mine - theirs).abs().max():.3g}); "
                                 "loading them would hide it"})
    return problems


def load_loosely(model, kind: str, folder, tp_rank: int, std: float, seed: int, apart: Iterable[str] = ()) -> None:
    """After a structure mismatch: draw every parameter at random, then copy what fits.

    What the converted HF weights do not fill (a bias left on, say) keeps random values, so the
    forward pass shows where it matters instead of hiding behind a zero initialisation.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    if kind == "pipe":
        # the layers as DeepSpeed saves and loads them (its forward_funcs, numbered from the stage's
        # first): a tied layer (the embedding the head shares) is there too, not a numbered child
        start = getattr(model, "_local_start", 0)
        for index, layer in enumerate(model.forward_funcs):
            path = os.path.join(folder, f"layer_{start + index:02d}-model_{tp_rank:02d}-model_states.pt")
            if hasattr(layer, "state_dict") and os.path.exists(path):
                _copy_matching(layer, torch.load(path, map_location="cpu", weights_only=False))
    else:
        path = os.path.join(folder, f"mp_rank_{tp_rank:02d}_model_states.pt")
        saved = flatten_state(torch.load(path, map_location="cpu", weights_only=False)["module"])
        saved.update(apart_tensors(model, folder, tp_rank, apart))
        mine = flatten_state(model.state_dict_for_save_checkpoint(keep_vars=True))
        with torch.no_grad():
            for key, tensor in mine.items():
                if key in saved and saved[key].shape == tensor.shape:
                    tensor.copy_(saved[key])


def _copy_matching(module, saved: dict) -> None:
    own = flatten_state(module.state_dict(keep_vars=True))
    with torch.no_grad():
        for key, tensor in own.items():
            if key in saved and saved[key].shape == tensor.shape:
                tensor.copy_(saved[key])
