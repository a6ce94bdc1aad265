"""The family's own files: the model module (<Prefix>Model, <Prefix>ModelPipe) and its entry point.

After the differences have planned their switches and code, the plan ends here. Two styles:
- explicit: porter's model template, built on the tree's language model and transformer
  (now carrying the switches), in the tree's signatures;
- flags: a tree whose GPT model implements every model difference behind its own switches
  (microsoft HEAD) gets a model module that subclasses its GPT classes and checks the switches.
Either way pretrain_<name>.py reuses the tree's pretrain_gpt.py and sets the defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import statements as parse_statements
from porter.edits.imports import InsertImport, defined_names
from porter.errors import PorterError
from porter.planner import Planner, rw, unsupported
from porter.profile import GPT_MODEL, LANGUAGE_MODEL, MODEL_INIT, PRETRAIN_GPT
from porter.profile.entry import REUSED_FROM_GPT

# Embedding.__init__ positional parameters -> the argument that fills them in the pipe spec.
EMBEDDING_ARGUMENTS = {
    "hidden_size": "args.hidden_size",
    "vocab_size": "args.padded_vocab_size",
    "max_sequence_length": "args.max_position_embeddings",
    "embedding_dropout_prob": "args.hidden_dropout",
}


# where a difference adds to model.py.j2: imports; the end of <Prefix>Model.__init__ (init); what the
# model does with the losses its layers return beside the output, right after its language model ran
# (losses: the tree's MoE-loss API); its checkpoint dict (save, load); <Prefix>ModelPipe.__init__; what
# the model does to its logits (logits)
MODEL_SLOTS = ("imports", "init", "losses", "save", "load", "pipe_init", "logits")


def model_values(p: Planner, wanted: dict[str, bool]) -> dict:
    """What every template says about the family: its names, which differences are on
    (difference name -> wanted), what differs from GPT (a line each) and what the wanted
    differences add to the model template's slots (slot -> templates `<package>/<file>`)."""
    spec = p.spec
    slots: dict[str, list[str]] = {slot: [] for slot in MODEL_SLOTS}
    for difference in spec.wanted():
        package = Path(sys.modules[type(difference).__module__].__file__).parent.name
        for slot, template in difference.model_slots.items():
            slots[slot].append(f"{package}/{template}")
    return {
        "name": spec.name,
        "class_prefix": spec.class_prefix,
        "model_class": spec.model_class,
        "module_name": spec.module_name,
        "script": spec.script,
        "description": spec.description,
        "final_norm": spec["norm.final_norm"],
        "on": dict(wanted),
        "differs": list(p.model_doc),
        "slots": slots,
    }


def flag_style(p: Planner, model_switches: list[str]) -> bool:
    """Is the family the tree's GPT classes with switches on?

    When the tree implements every model difference the spec wants behind its own switches,
    yes. When porter's model template does not fit the tree (config-object constructors,
    megatron.core), also when every difference is a switch of the tree's GPT code after the
    port: the tree's own, or porter's, added into the tree's transformer (the untied head
    and a missing final norm live in porter's template only: those need the tree's own).
    """
    if all(p.implemented(s) for s in model_switches) and model_switches:
        return True
    if (p.model.parallel_style, p.model.ctor_style) == ("mpu", "init_method"):
        return False
    return all(s in p.switches for s in model_switches)


def plan_model(p: Planner, model_switches: list[str]) -> str:
    """Plan the model module and entry point; returns the style ('explicit' or 'flags')."""
    if p.spec.renamed_because:
        p.reuse("model", f"the tree holds its own {', '.join(p.spec.renamed_because)}, left alone: porter's are "
                f"{p.spec.script}, megatron/model/{p.spec.module_name}.py and {p.spec.model_class}")
    if flag_style(p, model_switches):
        _flags_model(p, model_switches)
        return "flags"
    _explicit_model(p, model_switches)
    return "explicit"


def _defaults(p: Planner) -> dict:
    spec = p.spec
    defaults = dict(p.defaults)
    defaults.update(spec.training_defaults)
    unknown = [k for k in spec.training_defaults if not p.has_dest(k)]
    if unknown:
        raise PorterError(
            f"spec training_defaults name arguments this tree does not have: {', '.join(unknown)}",
            file=spec.path, construct="[training_defaults] keys = argument dests of the tree",
            found=", ".join(unknown),
            fix="remove them from the spec, or use this tree's argument names",
        )
    return defaults


def _entry_context(p: Planner) -> dict:
    """pretrain_<name>.py's values, read from the tree's pretrain_gpt.py."""
    entry = p.profile.entry
    if entry is None or entry.pipe_condition is None:
        raise unsupported("cannot read the tree's GPT entry point", PRETRAIN_GPT,
                          "pretrain_gpt.py with a model_provider that builds GPTModelPipe under an `if`",
                          "no pretrain_gpt.py" if entry is None else "no `if ...: GPTModelPipe(...)` in model_provider")
    missing = [n for n in ("forward_step", "train_valid_test_datasets_provider") if n not in entry.gpt_names]
    if missing:
        raise unsupported("the tree's pretrain_gpt.py lacks what the generated entry point reuses", PRETRAIN_GPT,
                          ", ".join(REUSED_FROM_GPT), "missing: " + ", ".join(missing))
    if entry.pretrain_params and "extra_args_provider" not in entry.pretrain_params:
        raise unsupported("the tree's pretrain() takes no extra-args provider, which sets the defaults",
                          "megatron/training.py", "def pretrain(..., extra_args_provider=None, ...)",
                          "pretrain(" + ", ".join(entry.pretrain_params) + ")")
    rotary_cache = entry.rotary_cache if p.implemented("rotary") else None
    if rotary_cache is not None:
        test, statements = rotary_cache
        for rewrite in p.entry_code:
            statements = rewrite(statements)
        rotary_cache = (test, statements)
    imports: list[str] = []
    for expression in (entry.device, entry.config, rotary_cache[1] if rotary_cache else None, *entry.pretrain_positional,
                       *entry.model_contexts, *entry.context_setup):
        imports += [i for i in entry.import_for(expression) if i not in imports and i not in p.entry_imports]
    if rotary_cache is not None:
        used = {n.value for n in findall(cst.parse_module(rotary_cache[1] + "\n"), m.Name())}
        imports += [i for i in p.entry_imports if defined_names(parse_statements(i)) & used and i not in imports]
    return dict(
        gpt_names=[n for n in REUSED_FROM_GPT if n in entry.gpt_names],
        imports=imports,
        pipe_condition=entry.pipe_condition,
        config=entry.config,
        device=entry.device,
        mask_adding=entry.mask_adding,
        pipe_setup=list(entry.pipe_setup),
        rotary_cache=rotary_cache,
        # continuation lines are relative to the `with`, one block deep in model_provider
        contexts=[context.replace("\n", "\n    ") for context in entry.model_contexts],
        context_setup=list(entry.context_setup),
        pretrain_args=list(entry.pretrain_positional),
        defaults=_defaults(p),
    )


def _export(p: Planner) -> None:
    spec = p.spec
    p.edit(MODEL_INIT, "model", f"exports {spec.model_class} after gpt_model",
           rw(InsertImport, source=f"from .{spec.module_name} import {spec.model_class}, {spec.model_class}Pipe",
              after="GPTModel"))


def _explicit_model(p: Planner, model_switches: list[str]) -> None:
    spec = p.spec
    model = p.model
    if model.parallel_style != "mpu" or model.ctor_style != "init_method":
        missing = [s for s in model_switches if s not in p.switches]
        raise unsupported(f"this tree builds its layers from a config object, and its GPT model has no switch for "
                          f"{', '.join(missing)}: porter would need its own model class there",
                          GPT_MODEL, "a switch of the tree's GPTModel for every model difference (microsoft's "
                          "--untie-embeddings-and-output-weights, ...), or mpu/(init_method, ...) constructors",
                          f"{model.parallel_style} style, {model.ctor_style} constructors; no switch for "
                          + ", ".join(missing))
    module = f"megatron/model/{spec.module_name}.py"
    norm_imports = [model.layernorm_imports.get(GPT_MODEL) or "from megatron.model import LayerNorm"]
    norm, more = p.final_norm or ("LayerNorm", None)
    if more is not None:  # a difference's norm next to the tree's LayerNorm (its import said by the difference)
        norm_imports = more(norm_imports)
    embedding_args = []
    for name in model.embedding_params:
        if name in EMBEDDING_ARGUMENTS:
            embedding_args.append(EMBEDDING_ARGUMENTS[name])
        elif name == "init_method":
            break
        else:
            raise unsupported("the Embedding takes a positional parameter porter does not know", LANGUAGE_MODEL,
                              "Embedding(" + ", ".join(EMBEDDING_ARGUMENTS) + ", init_method, ...)",
                              "Embedding(" + ", ".join(model.embedding_params) + ")")
    if spec["embeddings.tied"] and not model.gpt_post_processing:
        raise unsupported("a tied output needs gpt_model's post_language_model_processing", GPT_MODEL,
                          "def post_language_model_processing(...)", "no such function")
    loss = model.loss_fn or "CrossEntropy"
    p.create(module, "model", f"{spec.model_class} and {spec.model_class}Pipe, in this tree's signatures", "model.py.j2",
             norm_class=norm,
             norm_imports=norm_imports,
             enums_module=model.enums_module or "megatron.model.enums",
             loss_fn=loss,
             loss_name=loss.split("(")[0],
             tree_moe_api=model.language_model_moe,
             embedding_args=embedding_args,
             output_returns_bias=model.column_returns_bias,
             pipe_keywords=list(model.pipe_keywords))
    _export(p)
    p.create(spec.script, "model", f"the {spec.name} entry point with its defaults", "pretrain.py.j2",
             **_entry_context(p))


def _flags_model(p: Planner, model_switches: list[str]) -> None:
    spec = p.spec
    switches = [(p.tests[s], p.switches[s].switch) for s in model_switches if s in p.tests]
    changes_logits = [d.name for d in spec.wanted() if "logits" in d.model_slots and not d.tree_logits(p)]
    if changes_logits:
        raise unsupported(f"the tree's own GPT classes carry the {spec.name} port here, and they have no place "
                          f"for what {', '.join(changes_logits)} does to the logits", GPT_MODEL,
                          "porter's model template (its logits slot), which needs mpu/(init_method, ...) constructors",
                          f"{p.model.parallel_style} style, {p.model.ctor_style} constructors")
    if not spec["norm.final_norm"]:
        raise unsupported("the tree's GPT model always has a final norm; the spec has none", GPT_MODEL,
                          "a switch that removes the final norm", "none")
    for difference in spec.wanted():
        difference.tree_model(p)
    p.create(f"megatron/model/{spec.module_name}.py", "model",
             f"{spec.model_class} and {spec.model_class}Pipe: the tree's GPT classes with its switches checked",
             "model_flags.py.j2", switches=switches)
    _export(p)
    p.create(spec.script, "model", f"the {spec.name} entry point: turns the tree's switches on", "pretrain.py.j2",
             **_entry_context(p))
