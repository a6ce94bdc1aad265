"""What `porter inspect` shows: the tree profile and the plan, as data and as text.

`inspect_data()` gives a JSON-ready dict with a stable schema (SCHEMA_VERSION; keys are
only ever added): the profile's answers and the plan's edits, each with its reason, what
the port reuses, and the port already in the tree (porter.port_state: each file porter
wrote that is no longer as porter left it, and what apply does about it). `render_text()` prints the same for a person. Nothing is rendered
or written: inspecting a tree reads it and plans, no more.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from porter import port_state
from porter.catalog import load_spec, profile_of
from porter.errors import PorterError
from porter.naming import spec_in_tree
from porter.plan import Plan, make_plan
from porter.profile import TreeProfile
from porter.source import SourceTree
from porter.spec import Spec

SCHEMA_VERSION = 1


def profile_data(profile: TreeProfile) -> dict:
    arguments = profile.arguments
    model = profile.model
    entry = profile.entry
    switches = {}
    for feature, spelling in profile.spellings.items():
        if spelling is None:
            switches[feature] = None
            continue
        switches[feature] = {
            "option": spelling.option,
            "dest": spelling.dest,
            "origin": spelling.origin,
            "implemented": spelling.implemented if spelling.origin == "tree" else None,
            "test": spelling.test,
            "on": spelling.on,
            "layout": spelling.layout or None,
        }
    sentencepiece = profile.sentencepiece()
    return {
        "root": str(profile.root),
        "arguments": {
            "file": arguments.path,
            "checks_in": arguments.checks_function,
            "parser_in": arguments.parse_function,
            "required": list(arguments.required),
            "forbids_max_position_embeddings_with_rotary": arguments.forbids_max_positions,
            "options": len(arguments.arguments),
        },
        "switches": switches,
        "model": None if model is None else {
            "parallel_style": model.parallel_style,
            "constructors": model.ctor_style,
            "attention_attribute": model.attention_attr,
            "core_attention_class": model.core_attention,
            "query_key_method": model.qk_method,
            "linears_return_bias": model.column_returns_bias,
            "layernorm_imports": dict(model.layernorm_imports),
            "embedding_parameters": list(model.embedding_params),
            "language_model_returns_moe_losses": model.language_model_moe,
            "language_model_takes_config": model.language_model_config,
            "enums_module": model.enums_module,
            "pipe_loss_fn": model.loss_fn,
            "pipe_extra_keywords": list(model.pipe_keywords),
            "post_language_model_processing": model.gpt_post_processing,
        },
        # what each difference's detector found (porter/differences/<name>/detect.py)
        "differences": {name: _plain(fact) for name, fact in profile.facts.items()},
        "entry": None if entry is None else {
            "gpt_functions": list(entry.gpt_names),
            "pipe_condition": entry.pipe_condition,
            "config": entry.config,
            "device": entry.device,
            "mask_adding": entry.mask_adding,
            "pipe_setup": list(entry.pipe_setup),
            "rotary_cache": list(entry.rotary_cache) if entry.rotary_cache else None,
            "pretrain_positional": list(entry.pretrain_positional),
            "pretrain_parameters": list(entry.pretrain_params),
        },
        "tokenizer": {
            "choices": list(profile.tokenizer_choices),
            "branches": sorted(profile.tokenizers),
            "sentencepiece": None if sentencepiece is None else {"choice": sentencepiece[0], "origin": sentencepiece[1]},
            "built_when": profile.tokenizer_built_when,
        },
        "enums": {
            name: {"file": fact.path, "members": list(fact.members), "used_by": list(fact.used_by)}
            for name, fact in profile.enums.items()
        },
        "generated": sorted(profile.generated),
    }


def plan_data(plan: Plan) -> dict:
    return {
        "style": plan.style,
        "reused": list(plan.reused),
        "edits": [
            {"file": e.file, "feature": e.feature, "kind": e.kind, "name": e.name, "reason": e.reason}
            for e in plan.edits
        ],
        "defaults": {k: (v if isinstance(v, (bool, int, float, str)) or v is None else repr(v)) for k, v in plan.defaults.items()},
    }


def inspect_data(model: str | Spec, target: str | Path) -> dict:
    given = model if isinstance(model, Spec) else load_spec(model)
    tree = SourceTree.open(target)
    state = port_state.read_state(tree.root)
    spec = spec_in_tree(given, tree)  # the family's names in this tree (free ones where the tree took them)
    profile = profile_of(port_state.repaired(tree, state))  # as apply sees it
    data = {"schema": SCHEMA_VERSION, "target": str(Path(target)), "spec": given.name,
            "profile": profile_data(profile), "plan": None,
            "port": {"journal": state.journaled, "files": len(state.files), "not_as_porter_left_them": state.notes()},
            "error": None}
    damaged = port_state.damage_refusal(state, shlex.quote(model) if isinstance(model, str) else spec.name)
    if damaged is not None:
        data["error"] = damaged.as_dict()
        return data
    try:
        data["plan"] = plan_data(make_plan(spec, profile))
    except PorterError as exc:
        data["error"] = exc.as_dict()
    return data


def _plain(value):
    """A detector's facts as JSON values: dataclasses as objects, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _yes(value) -> str:
    return "yes" if value else "no"


def _said(value) -> str:
    if isinstance(value, bool):
        return _yes(value)
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_said(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list):
        return ", ".join(_said(v) for v in value)
    return str(value)


def render_text(data: dict) -> str:
    p = data["profile"]
    lines = [f"porter inspect {data['spec']} --target {data['target']}", "", "Profile"]
    a = p["arguments"]
    lines.append(f"  arguments: {a['options']} options in {a['file']}; checks in {a['checks_in']}; "
                 f"required: {', '.join(a['required']) or '-'}")
    if a["forbids_max_position_embeddings_with_rotary"]:
        lines.append("    the checks forbid --max-position-embeddings with rotary")
    lines.append("  switches (the tree's, and porter's from an earlier apply; --json lists every one looked for):")
    missing = [feature for feature, s in p["switches"].items() if s is None]
    for feature, s in p["switches"].items():
        if s is None:
            continue
        how = "porter's, from an earlier apply" if s["origin"] == "porter" else (
            "the tree's, implemented" if s["implemented"] else "the tree's, option only")
        layout = f"; {s['layout']}" if s["layout"] else ""
        lines.append(f"    {feature:<16} {s['option']} (dest {s['dest']}; {how}{layout}); on when `{s['test']}`")
    lines.append(f"    none for: {', '.join(missing) or '-'}")
    m = p["model"]
    if m is not None:
        lines += [
            "  model code:",
            f"    parallel layers   {m['parallel_style']} style, ({m['constructors']}, ...) constructors",
            f"    attention         self.{m['attention_attribute']}; "
            f"{'math in CoreAttention' if m['core_attention_class'] else 'one ParallelAttention class'}; "
            f"query/key in ParallelAttention.{m['query_key_method']}",
            f"    linears           return (output, bias): {_yes(m['linears_return_bias'])}",
        ]
        for file, source in m["layernorm_imports"].items():
            lines.append(f"    LayerNorm in {file}: {source or '-'}")
        lines += [
            f"    Embedding         ({', '.join(m['embedding_parameters'])})",
            f"    language model    returns MoE losses: {_yes(m['language_model_returns_moe_losses'])}; "
            f"takes a config: {_yes(m['language_model_takes_config'])}; enums from {m['enums_module']}",
            f"    GPT pipe          loss {m['pipe_loss_fn']}; extra PipelineModule keywords: "
            f"{', '.join(m['pipe_extra_keywords']) or '-'}",
        ]
    if p["differences"]:
        lines.append("  what the differences' detectors found:")
        for name, fact in p["differences"].items():
            lines.append(f"    {name:<16} " + "; ".join(f"{k}: {_said(v)}" for k, v in fact.items()))
    e = p["entry"]
    if e is not None:
        lines += [
            "  entry point (pretrain_gpt.py):",
            f"    pipe when         {e['pipe_condition']}",
            f"    config            {e['config'] or '-'}",
            f"    causal mask on    {e['device'] or '- (not precomputed)'}" + (" (additive with --mask-tensor-adding)" if e["mask_adding"] else ""),
            f"    pipe set-up       {'; '.join(e['pipe_setup']) or '-'}",
            f"    rotary cache      {' -> '.join(e['rotary_cache']) if e['rotary_cache'] else '-'}",
            f"    pretrain(...)     {', '.join(e['pretrain_positional'])}",
        ]
    t = p["tokenizer"]
    sp = t["sentencepiece"]
    lines.append(f"  tokenizer: choices {', '.join(t['choices']) or '-'}; SentencePiece: "
                 + (f"{sp['choice']} ({sp['origin']})" if sp else "none")
                 + f"; built {'always' if t['built_when'] == '' else 'when ' + str(t['built_when'])}")
    for name, fact in p["enums"].items():
        used = f"used by {', '.join(fact['used_by'])}" if fact["used_by"] else "used nowhere: not a feature"
        lines.append(f"  enum {name} ({fact['file']}: {', '.join(fact['members'])}): {used}")
    if p["generated"]:
        lines.append(f"  written by porter earlier: {', '.join(p['generated'])}")
    port = data["port"]
    if port["journal"]:
        notes = port["not_as_porter_left_them"]
        lines.append(f"  port already here: {port['files']} files in porter's journal, "
                     + ("all as porter left them" if not notes else f"{len(notes)} not as porter left them:"))
        lines += [f"    {n['path']}: {n['what']}: {n['action']}" for n in notes]

    lines.append("")
    if data["error"] is not None:
        err = data["error"]
        lines += ["Plan: none, porter refuses this tree", f"  {err['message']}"]
        lines += [f"  {k}: {err[k]}" for k in ("file", "construct", "found", "fix") if err.get(k)]
        return "\n".join(lines) + "\n"
    plan = data["plan"]
    style = "wire the tree's own switches" if plan["style"] == "flags" else "add what the tree lacks, reuse the rest"
    lines.append(f"Plan ({style})")
    if plan["reused"]:
        lines.append("  reuses:")
        lines += [f"    {r}" for r in plan["reused"]]
    lines.append("  changes, by file:")
    files: dict[str, list[dict]] = {}
    for edit in plan["edits"]:
        files.setdefault(edit["file"], []).append(edit)
    for file, edits in files.items():
        lines.append(f"    {file}")
        for edit in edits:
            lines.append(f"      {edit['feature']:<16} {edit['name']:<24} {edit['reason']}")
    lines.append("  defaults set by the entry point:")
    lines += [f"    {k} = {v!r}" for k, v in plan["defaults"].items()]
    return "\n".join(lines) + "\n"
