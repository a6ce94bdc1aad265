"""Detectors: the tree's GPT entry point (pretrain_gpt.py), its `pretrain()` and tokenizer factory.

The generated pretrain_<name>.py mirrors pretrain_gpt.py's `model_provider` in the tree's
own terms: the same pipe condition, device helper, config object and set-up statements,
the same extra positional arguments to `pretrain()`, and the names it imports from
pretrain_gpt.py exist there. Each answer is a plain value (source text or a flag).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import assigned_names, code
from porter.profile.arguments import top_level_imports

# What pretrain_<name>.py takes from pretrain_gpt.py when the tree has it.
REUSED_FROM_GPT = ("forward_step", "get_batch_pipe", "train_valid_test_datasets_provider")


@dataclass(frozen=True)
class EntryProfile:
    gpt_names: tuple[str, ...]  # top-level functions of pretrain_gpt.py
    pipe_condition: str | None  # the test that picks GPTModelPipe
    config: str | None  # `config = <this>` when the model classes take a config object
    device: str | None  # device expression of the precomputed causal mask; None: no precompute
    mask_adding: bool  # the mask is additive (-10000.0) when args.mask_tensor_adding
    pipe_setup: tuple[str, ...]  # `args.<x> = <constant>` statements before building the pipe model
    rotary_cache: tuple[str, str] | None  # (test, call) caching rotary tables for the pipe path
    pretrain_positional: tuple[str, ...]  # pretrain(...)'s positional arguments in pretrain_gpt.py
    imports: dict = field(default_factory=dict, hash=False, compare=False)  # name -> import source in pretrain_gpt.py
    pretrain_params: tuple[str, ...] = ()  # megatron.training.pretrain's parameters
    model_contexts: tuple[str, ...] = ()  # the `with` items the model is built under (deepspeed.zero.Init(...))
    context_setup: tuple[str, ...] = ()  # the statements before them that bind the local names they read

    def import_for(self, source: str | None) -> list[str]:
        """The pretrain_gpt.py imports the names of an expression (or statements) need."""
        if not source:
            return []
        try:
            node: cst.CSTNode = cst.parse_expression(source)
        except cst.ParserSyntaxError:
            node = cst.parse_module(source + "\n")
        names = {n.value for n in findall(node, m.Name())}
        return sorted({self.imports[n] for n in names if n in self.imports})


def _functions(module: cst.Module) -> dict[str, cst.FunctionDef]:
    return {s.name.value: s for s in module.body if isinstance(s, cst.FunctionDef)}


def _pipe_branch(provider: cst.FunctionDef) -> cst.If | None:
    for node in findall(provider, m.If()):
        if findall(node.body, m.Call(func=m.Name("GPTModelPipe"))):
            return node
    return None


def _device(branch: cst.If, provider: cst.FunctionDef) -> str | None:
    for call in findall(branch.body, m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("ones")))):
        device = next((a.value for a in call.args if a.keyword and a.keyword.value == "device"), None)
        if device is None:
            continue
        if isinstance(device, cst.Name):  # `current_device = get_current_device()` ... device=current_device
            for assign in findall(provider, m.Assign(targets=[m.AssignTarget(target=m.Name(device.value))])):
                return code(assign.value)
        return code(device)
    return None


def _pipe_setup(branch: cst.If) -> tuple[str, ...]:
    out = []
    for stmt in branch.body.body:
        if findall(stmt, m.Call(func=m.Name("GPTModelPipe"))):
            break
        if m.matches(stmt, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Attribute(value=m.Name("args")))])])):
            value = stmt.body[0].value
            if isinstance(value, (cst.Name, cst.Integer, cst.Float, cst.SimpleString)):
                out.append(code(stmt.body[0]))
    return tuple(out)


def _rotary_cache(branch: cst.If) -> tuple[str, str] | None:
    """(test, code): microsoft HEAD's `if ...: update_rotary_pos_emb(args.seq_length)`, or the
    statements of an `if` that compute the table inline and store it as `args.<rotary...> = ...`
    (microsoft late 2023: OpenLLM-France, deep-spin)."""
    ifs = findall(branch.body, m.If())
    for node in ifs:
        for call in findall(node.body, m.Call(func=m.Name())):
            if "rotary" in call.func.value:
                return code(node.test), code(call)
    for node in ifs:
        stores = findall(node.body, m.AssignTarget(target=m.Attribute(value=m.Name("args"))))
        if any("rotary" in s.target.attr.value for s in stores) and isinstance(node.body, cst.IndentedBlock):
            body = [s.with_changes(leading_lines=[]) if i == 0 else s for i, s in enumerate(node.body.body)]
            return code(node.test), "\n".join(code(s).rstrip("\n") for s in body)
    return None


def _model_contexts(provider: cst.FunctionDef, branch: cst.If) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The items of the `with` statements that enclose the pipe branch (ZeRO-3's
    deepspeed.zero.Init partitions the parameters as they are built), and the statements of the
    provider before them that bind local names those items read (`dpg = mpu.get_...()`)."""
    def holds(node: cst.CSTNode) -> bool:
        return any(found is branch for found in findall(node, m.If()))

    items: list[cst.WithItem] = []
    body = provider.body.body
    outer = None
    while True:
        inner = next((s for s in body if isinstance(s, cst.With) and holds(s)), None)
        if inner is None:
            break
        outer = outer or inner
        items += list(inner.items)
        body = inner.body.body
    if outer is None:
        return (), ()
    read = {n.value for item in items for n in findall(item.item, m.Name())}
    before = provider.body.body[: list(provider.body.body).index(outer)]
    setup = [s for s in before if assigned_names(s) & read and "args" not in assigned_names(s)]
    return tuple(code(item.item) for item in items), tuple(code(s) for s in setup)


def _pretrain_call(module: cst.Module) -> cst.Call | None:
    calls = findall(module, m.Call(func=m.Name("pretrain")))
    return calls[-1] if calls else None


def read_entry(pretrain_gpt: cst.Module | None, training: cst.Module | None) -> EntryProfile | None:
    if pretrain_gpt is None:
        return None
    functions = _functions(pretrain_gpt)
    provider = functions.get("model_provider")
    branch = _pipe_branch(provider) if provider is not None else None
    config = None
    if provider is not None:
        for assign in findall(provider, m.Assign(targets=[m.AssignTarget(target=m.Name("config"))])):
            config = code(assign.value)
            break
    contexts, setup = _model_contexts(provider, branch) if branch is not None else ((), ())
    call = _pretrain_call(pretrain_gpt)
    positional = tuple(code(a.value) for a in call.args if a.keyword is None and a.star == "") if call else ()
    pretrain_params: tuple[str, ...] = ()
    if training is not None:
        pretrain = _functions(training).get("pretrain")
        if pretrain is not None:
            pretrain_params = tuple(p.name.value for p in pretrain.params.params)
    return EntryProfile(
        gpt_names=tuple(functions),
        pipe_condition=code(branch.test) if branch is not None else None,
        config=config,
        device=_device(branch, provider) if branch is not None else None,
        mask_adding=bool(branch is not None and findall(branch, m.Attribute(value=m.Name("args"), attr=m.Name("mask_tensor_adding")))),
        pipe_setup=_pipe_setup(branch) if branch is not None else (),
        rotary_cache=_rotary_cache(branch) if branch is not None else None,
        pretrain_positional=positional,
        imports=top_level_imports(pretrain_gpt),
        pretrain_params=pretrain_params,
        model_contexts=contexts,
        context_setup=setup,
    )


def tokenizer_branches(tokenizer: cst.Module | None) -> dict[str, str]:
    """tokenizer type -> source of its branch in build_tokenizer."""
    if tokenizer is None:
        return {}
    build = _functions(tokenizer).get("build_tokenizer")
    if build is None:
        return {}
    found = {}
    test = m.Comparison(
        left=m.Attribute(value=m.Name("args"), attr=m.Name("tokenizer_type")),
        comparisons=[m.ComparisonTarget(operator=m.Equal(), comparator=m.SimpleString())],
    )
    for node in findall(build, m.If(test=test)):
        found[node.test.comparisons[0].comparator.evaluated_value] = code(node.body)
    return found


def builds_tokenizer_when(global_vars: cst.Module | None) -> str | None:
    """The test under which set_global_variables builds the tokenizer ('' = always, None = unknown)."""
    if global_vars is None:
        return None
    setter = _functions(global_vars).get("set_global_variables")
    if setter is None:
        return None
    for stmt in setter.body.body:
        if findall(stmt, m.Call(func=m.Name("_build_tokenizer"))):
            return code(stmt.test) if isinstance(stmt, cst.If) else ""
    return None
