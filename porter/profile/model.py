"""Detectors: how the tree's model code is shaped where the port touches it.

One function per question, each reading the parsed file(s) it needs and answering with a
plain value (None when the construct is not there). The plan decides from these answers;
the templates receive them as plain values.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import code, dotted, top_level_names
from porter.profile.arguments import top_level_imports

RMSNORM_PATH = "megatron/model/rmsnorm.py"  # porter's own RMSNorm, when it writes one
# porter's RMSNorm modules a repaired fallback imports from (rmsnorm_porter: where the tree has its own rmsnorm.py)
PORTER_FALLBACK_MODULES = ("megatron.model.rmsnorm", "megatron.model.rmsnorm_porter")
MPU_LAYERS = ("megatron/mpu/layers.py", "megatron/core/tensor_parallel/layers.py")
# PipelineModule keywords every GPTModelPipe passes; anything else is the tree's own.
STANDARD_PIPE_KEYWORDS = {"layers", "loss_fn", "topology", "activation_checkpoint_interval", "partition_method"}


@dataclass(frozen=True)
class ModelProfile:
    parallel_style: str  # "mpu": `from megatron import mpu`; "core": megatron.core tensor_parallel + config
    ctor_style: str  # "init_method": (init_method, output_layer_init_method, ...); "config": (config, ...)
    attention_attr: str | None  # the layer's self-attention attribute: "attention" or "self_attention"
    core_attention: bool  # attention math split into a CoreAttention class
    qk_method: str | None  # the ParallelAttention method that binds query_layer and key_layer
    column_returns_bias: bool  # ColumnParallelLinear.forward returns (output, bias)
    mlp_bias_unguarded: bool  # ParallelMLP.forward adds its first projection's bias by hand, unchecked
    expand_as_unguarded: bool  # the layer forward calls bias.expand_as(...) without a None check
    plain_bias_helpers: tuple[str, ...]  # bias-dropout-add helpers whose bias is typed a plain Tensor
    layernorm_imports: dict  # file -> source of the import that binds LayerNorm there
    rmsnorm_exported: bool  # megatron.model exports an RMSNorm
    embedding_params: tuple[str, ...]  # Embedding.__init__ parameters, self excluded
    position_gate: str | None  # what guards the learned position table in Embedding.__init__
    language_model_moe: bool  # get_language_model takes num_experts (the model returns MoE losses)
    language_model_config: bool  # get_language_model takes a config object
    enums_module: str | None  # the module gpt_model imports AttnMaskType from
    loss_fn: str | None  # the pipe's loss function, as gpt_model defines it
    pipe_keywords: tuple[str, ...]  # GPTModelPipe's extra PipelineModule keywords, as source
    gpt_post_processing: bool  # gpt_model defines post_language_model_processing
    bias_gaps: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (class, linears without `bias=`) where others pass it
    rmsnorm_unavailable: tuple = ()  # NoneFallback rows: an RMSNorm class bound to None when its import fails
    rmsnorm_file: bool = False  # megatron/model/rmsnorm.py exists (porter's or the tree's)
    qkv_layout: str | None = None  # the fused QKV output's layout as the attention splits it (qkv_layout())
    blocked_split: BlockedSplit | None = None  # a q | k | v thirds split to repair (blocked_split())

    @property
    def bias_none_safe(self) -> bool:
        return not self.expand_as_unguarded and not self.plain_bias_helpers and not self.mlp_bias_unguarded


def _class(module: cst.Module | None, name: str) -> cst.ClassDef | None:
    if module is None:
        return None
    return next((s for s in module.body if isinstance(s, cst.ClassDef) and s.name.value == name), None)


def _function(scope, name: str) -> cst.FunctionDef | None:
    if scope is None:
        return None
    body = scope.body.body if isinstance(scope, cst.ClassDef) else scope.body
    return next((s for s in body if isinstance(s, cst.FunctionDef) and s.name.value == name), None)


def _params(func: cst.FunctionDef | None) -> tuple[str, ...]:
    if func is None:
        return ()
    names = [p.name.value for p in (*func.params.posonly_params, *func.params.params, *func.params.kwonly_params)]
    return tuple(n for n in names if n != "self")


def parallel_style(transformer: cst.Module) -> str:
    imports = top_level_imports(transformer)
    return "core" if "tensor_parallel" in imports else "mpu"


def ctor_style(transformer: cst.Module) -> str:
    params = _params(_function(_class(transformer, "ParallelMLP"), "__init__"))
    return "config" if params[:1] == ("config",) else "init_method"


def attention_attr(transformer: cst.Module) -> str | None:
    init = _function(_class(transformer, "ParallelTransformerLayer"), "__init__")
    if init is None:
        return None
    for assign in findall(init, m.Assign(value=m.Call(func=m.Name("ParallelAttention")))):
        target = assign.targets[0].target
        if isinstance(target, cst.Attribute) and dotted(target.value) == "self":
            return target.attr.value
    return None


def qk_method(transformer: cst.Module) -> str | None:
    """The method that projects hidden states to query and key (it calls self.query_key_value)."""
    attention = _class(transformer, "ParallelAttention")
    if attention is None:
        return None
    projects = m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name("query_key_value")))
    for stmt in attention.body.body:
        if not isinstance(stmt, cst.FunctionDef) or not findall(stmt, projects):
            continue
        names = set()
        for assign in findall(stmt, m.Assign()):
            for target in assign.targets:
                names.update(n.value for n in findall(target.target, m.Name()))
        if {"query_layer", "key_layer"} <= names:
            return stmt.name.value
    return None


@dataclass(frozen=True)
class BlockedSplit:
    """A fused QKV output cut into three equal blocks, q | k | v (`w = x.shape[-1] // 3`,
    `query_layer = x[..., :w]...`), next to the tree's own per-group split method."""

    func: str  # the ParallelAttention method holding the blocked split
    fused: str  # the fused projection output it slices (`mixed_x_layer`)
    width: str  # the name bound to `<fused>.shape[-1] // 3`
    split_method: str | None  # ParallelAttention's per-group split: torch.split(x, [groups, 1, 1], dim=-2)
    groups: str | None  # the query heads per key/value group that split takes (`self.num_key_value_groups`)


def _thirds(stmt: cst.CSTNode) -> tuple[str, str] | None:
    """(width, fused) for `width = fused.shape[-1] // 3`."""
    for assign in findall(stmt, m.Assign(value=m.BinaryOperation(operator=m.FloorDivide(), right=m.Integer("3")))):
        target, left = assign.targets[0].target, assign.value.left
        if (isinstance(target, cst.Name) and isinstance(left, cst.Subscript) and isinstance(left.value, cst.Attribute)
                and left.value.attr.value == "shape" and dotted(left.value.value)):
            return target.value, dotted(left.value.value)
    return None


def group_split_method(attention: cst.ClassDef) -> tuple[str, str] | None:
    """(method, groups) of a ParallelAttention method `def m(self, x)` that splits x's
    second-to-last dimension into [groups, 1, 1]: a key/value group's queries, its key, its value."""
    for stmt in attention.body.body:
        if not isinstance(stmt, cst.FunctionDef) or len(stmt.params.params) != 2:
            continue
        for call in findall(stmt, m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("split")))):
            if len(call.args) < 2 or not isinstance(call.args[1].value, cst.List):
                continue
            sizes = [code(e.value) for e in call.args[1].value.elements]
            dim = next((code(a.value) for a in call.args if a.keyword and a.keyword.value == "dim"), None)
            if len(sizes) == 3 and sizes[1:] == ["1", "1"] and dim == "-2":
                return stmt.name.value, sizes[0]
    return None


def blocked_split(transformer: cst.Module) -> BlockedSplit | None:
    """The blocked q | k | v split of ParallelAttention, when it has one (microsoft's FPDT
    rework: right for multi-head attention only if the weights are blocked, wrong under GQA)."""
    attention = _class(transformer, "ParallelAttention")
    if attention is None:
        return None
    for stmt in attention.body.body:
        if not isinstance(stmt, cst.FunctionDef):
            continue
        found = _thirds(stmt)
        if found is None:
            continue
        width, fused = found
        method, groups = group_split_method(attention) or (None, None)
        return BlockedSplit(stmt.name.value, fused, width, method, groups)
    return None


def qkv_layout(transformer: cst.Module) -> str | None:
    """How ParallelAttention lays out its fused QKV projection's output, from the code that splits it:
    'per_head' ([np, 3 * hn] views), 'per_group' ([ng, np/ng + 2, hn]: the tree's GQA split or
    porter's split_query_key_value; per head when ng = np), 'blocked' (q | k | v thirds), or None."""
    attention = _class(transformer, "ParallelAttention")
    if attention is None:
        return None
    if blocked_split(transformer) is not None:
        return "blocked"
    text = code(attention)
    if "split_query_key_value" in text or "self.num_key_value_groups + 2" in text:
        return "per_group"
    if "3 * self.hidden_size_per_attention_head" in text:
        return "per_head"
    return None


def column_returns_bias(layers: cst.Module | None) -> bool:
    forward = _function(_class(layers, "ColumnParallelLinear"), "forward")
    if forward is None:
        return True  # Megatron's default convention
    returns = findall(forward, m.Return())
    return bool(returns) and isinstance(returns[-1].value, cst.Tuple)


class _GuardedUses(cst.CSTVisitor):
    """Uses of a bias `b` (`b.expand_as(...)`, `x + b`), each with whether an enclosing
    `if` or conditional expression tests `b`."""

    def __init__(self, names: set[str] | None = None) -> None:
        self.names = names  # None: any name (for expand_as)
        self.tests: list[cst.BaseExpression] = []
        self.expand_as: list[tuple[str, bool]] = []
        self.adds: list[tuple[str, bool]] = []

    def _guarded(self, name: str) -> bool:
        return any(findall(test, m.Name(name)) for test in self.tests)

    def visit_If(self, node):
        self.tests.append(node.test)

    def leave_If(self, node):
        self.tests.pop()

    def visit_IfExp(self, node):
        self.tests.append(node.test)

    def leave_IfExp(self, node):
        self.tests.pop()

    def visit_Call(self, node):
        if m.matches(node.func, m.Attribute(value=m.Name(), attr=m.Name("expand_as"))):
            name = node.func.value.value
            self.expand_as.append((name, self._guarded(name)))

    def visit_BinaryOperation(self, node):
        if isinstance(node.operator, cst.Add) and isinstance(node.right, cst.Name):
            name = node.right.value
            if self.names is None or name in self.names:
                self.adds.append((name, self._guarded(name)))


def mlp_bias_unguarded(transformer: cst.Module) -> bool:
    """ParallelMLP.forward adds its first projection's bias by hand, with no None check."""
    forward = _function(_class(transformer, "ParallelMLP"), "forward")
    if forward is None:
        return False
    unpacked = m.Assign(targets=[m.AssignTarget(target=m.Tuple())], value=m.Call(func=m.Attribute(value=m.Name("self"))))
    biases = set()
    for assign in findall(forward, unpacked):
        elements = assign.targets[0].target.elements
        if len(elements) == 2 and isinstance(elements[1].value, cst.Name):
            biases.add(elements[1].value.value)
    visitor = _GuardedUses(biases)
    forward.visit(visitor)
    return any(not guarded for _, guarded in visitor.adds)


def expand_as_unguarded(transformer: cst.Module) -> bool:
    forward = _function(_class(transformer, "ParallelTransformerLayer"), "forward")
    if forward is None:
        return False
    visitor = _GuardedUses()
    forward.visit(visitor)
    return any(not guarded for _, guarded in visitor.expand_as)


def plain_bias_helpers(transformer: cst.Module) -> tuple[str, ...]:
    """Top-level `bias_dropout_add*` helpers with a `bias` parameter not typed Optional.

    Typed by the function's first `# type:` comment (on the def line, above a statement,
    after a docstring: where TorchScript finds it) or by an annotation; an untyped bias is
    not Optional either (TorchScript takes it for a Tensor). OptionalBiasParameter retypes
    the comments and refuses what it cannot retype.
    """
    found = []
    for stmt in transformer.body:
        if not isinstance(stmt, cst.FunctionDef) or not stmt.name.value.startswith("bias_dropout_add"):
            continue
        params = [p.name.value for p in stmt.params.params]
        if "bias" not in params or not isinstance(stmt.body, cst.IndentedBlock) or not stmt.body.body:
            continue
        index = params.index("bias")
        annotation = stmt.params.params[index].annotation
        comments = [stmt.body.header.comment] + [line.comment for s in stmt.body.body for line in s.leading_lines]
        types = next((c.value for c in comments if c is not None and c.value.startswith("# type:")
                      and "ignore" not in c.value), None)
        if annotation is not None:
            optional = "Optional" in code(annotation.annotation)
        elif types is not None:
            parts = [t.strip() for t in types.partition("(")[2].partition(")")[0].split(",")]
            optional = index < len(parts) and parts[index].startswith("Optional")
        else:
            optional = False
        if not optional:
            found.append(stmt.name.value)
    return tuple(found)


def layernorm_import(module: cst.Module | None) -> str | None:
    if module is None:
        return None
    return top_level_imports(module).get("LayerNorm")


def rmsnorm_exported(model_init: cst.Module | None) -> bool:
    if model_init is None:
        return False
    for node in findall(model_init, m.ImportAlias()):
        bound = code(node.asname.name) if node.asname else code(node.name)
        if bound == "RMSNorm":
            return True
    return False


@dataclass(frozen=True)
class NoneFallback:
    """A class a top-level `try:` imports and its ImportError handler binds to None instead, and
    how the file calls it: `try: from apex.normalization import MixedFusedRMSNorm` /
    `except ImportError: MixedFusedRMSNorm = None` (apex is CUDA-only)."""

    file: str
    name: str
    keywords: tuple[str, ...]  # the keywords its calls pass (`LayerSpec(name, ...)` counts as a call)
    positional: int  # the most positional arguments a call passes


_IMPORT_ERRORS = ("ImportError", "ModuleNotFoundError", "Exception", "BaseException")


def _catches_import_error(handler: cst.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elements if isinstance(handler.type, cst.Tuple) else [handler.type]
    for t in types:
        node = t.value if isinstance(t, cst.Element) else t
        if (dotted(node) or "").rsplit(".", 1)[-1] in _IMPORT_ERRORS:
            return True
    return False


def none_on_import_error(module: cst.Module | None) -> tuple[str, ...]:
    """Names a top-level `try:` imports and a handler catching ImportError binds to None (or, once
    porter repaired it, imports from porter's megatron.model.rmsnorm)."""
    if module is None:
        return ()
    found: dict[str, None] = {}
    for stmt in module.body:
        if not isinstance(stmt, cst.Try):
            continue
        imported = top_level_names(list(stmt.body.body), assignments=False)
        for handler in stmt.handlers:
            if not _catches_import_error(handler):
                continue
            for assign in findall(handler.body, m.Assign(value=m.Name("None"))):
                for target in assign.targets:
                    if isinstance(target.target, cst.Name) and target.target.value in imported:
                        found.setdefault(target.target.value, None)
            # porter's repair of that fallback (edits/imports.py FallbackImport): still the same site
            for node in findall(handler.body, m.ImportFrom()):
                if node.module is not None and code(node.module) in PORTER_FALLBACK_MODULES:
                    for name in top_level_names([cst.SimpleStatementLine(body=[node])], assignments=False):
                        if name in imported:
                            found.setdefault(name, None)
    return tuple(found)


def _calls_of(module: cst.Module, name: str) -> tuple[tuple[str, ...], int]:
    """The keywords calls of `name` pass, and the most positional arguments one passes;
    `LayerSpec(name, a, b)` (DeepSpeed's deferred build) calls name(a, b)."""
    keywords: dict[str, None] = {}
    positional = 0
    for call in findall(module, m.Call()):
        if isinstance(call.func, cst.Name) and call.func.value == name:
            args = list(call.args)
        elif (dotted(call.func) or "").rsplit(".", 1)[-1] == "LayerSpec" and call.args \
                and m.matches(call.args[0].value, m.Name(name)):
            args = list(call.args[1:])
        else:
            continue
        for arg in args:
            if arg.keyword is not None:
                keywords.setdefault(arg.keyword.value, None)
        positional = max(positional, sum(1 for a in args if a.keyword is None))
    return tuple(keywords), positional


def rmsnorm_unavailable(files: dict[str, cst.Module | None]) -> tuple[NoneFallback, ...]:
    """The RMSNorm classes the model files bind to None when their import fails."""
    out = []
    for path, module in files.items():
        for name in none_on_import_error(module):
            if "rmsnorm" in name.lower():
                out.append(NoneFallback(path, name, *_calls_of(module, name)))
    return tuple(out)


def embedding_params(language_model: cst.Module) -> tuple[str, ...]:
    return _params(_function(_class(language_model, "Embedding"), "__init__"))


def position_gate(language_model: cst.Module) -> str | None:
    """The test of the `if` that creates `self.position_embeddings` in Embedding.__init__, if any."""
    init = _function(_class(language_model, "Embedding"), "__init__")
    if init is None:
        return None
    for stmt in init.body.body:
        if isinstance(stmt, cst.If):
            creates = findall(stmt.body, m.Assign(targets=[m.AssignTarget(target=m.Attribute(attr=m.Name("position_embeddings")))]))
            if creates:
                return code(stmt.test)
    return None


def get_language_model_params(language_model: cst.Module) -> tuple[str, ...]:
    return _params(_function(language_model, "get_language_model"))


def enums_module(gpt_model: cst.Module) -> str | None:
    source = top_level_imports(gpt_model).get("AttnMaskType")
    if source is None:
        return None
    node = cst.parse_statement(source).body[0]
    module = code(node.module) if node.module is not None else ""
    if node.relative:  # `from .enums import` inside megatron/model
        return "megatron.model" + ("." + module if module else "")
    return module


def loss_fn(gpt_model: cst.Module) -> str | None:
    names = {s.name.value for s in gpt_model.body if isinstance(s, cst.FunctionDef)}
    if "CrossEntropy" in names:
        return "CrossEntropy"
    if "get_cross_entropy" in names:
        return "get_cross_entropy(is_prefix=False)"
    return None


def pipe_keywords(gpt_model: cst.Module) -> tuple[str, ...]:
    init = _function(_class(gpt_model, "GPTModelPipe"), "__init__")
    if init is None:
        return ()
    calls = findall(init, m.Call(func=m.Attribute(value=m.Call(func=m.Name("super")), attr=m.Name("__init__"))))
    if not calls:
        return ()
    return tuple(
        f"{arg.keyword.value}={code(arg.value)}"
        for arg in calls[-1].args
        if arg.keyword is not None and arg.keyword.value not in STANDARD_PIPE_KEYWORDS
    )


def bias_gaps(transformer: cst.Module) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """In ParallelMLP and ParallelAttention, the tensor-parallel linears built without `bias=`
    when the class's other linears pass one: a no-bias switch that missed them."""
    out = []
    for cls_name in ("ParallelMLP", "ParallelAttention"):
        init = _function(_class(transformer, cls_name), "__init__")
        if init is None:
            continue
        with_bias, without = [], []
        for assign in findall(init, m.Assign(value=m.Call())):
            callee = (dotted(assign.value.func) or "").rsplit(".", 1)[-1]
            target = assign.targets[0].target
            if callee not in ("ColumnParallelLinear", "RowParallelLinear") or not isinstance(target, cst.Attribute):
                continue
            has = any(a.keyword is not None and a.keyword.value == "bias" for a in assign.value.args)
            (with_bias if has else without).append(target.attr.value)
        if with_bias and without:
            out.append((cls_name, tuple(without)))
    return tuple(out)


def read_model(files: dict[str, cst.Module | None]) -> ModelProfile:
    """files: path -> parsed module (None when the tree lacks it)."""
    transformer = files["megatron/model/transformer.py"]
    language_model = files["megatron/model/language_model.py"]
    gpt_model = files["megatron/model/gpt_model.py"]
    layers = next((files.get(p) for p in MPU_LAYERS if files.get(p) is not None), None)
    lm_params = get_language_model_params(language_model)
    return ModelProfile(
        parallel_style=parallel_style(transformer),
        ctor_style=ctor_style(transformer),
        attention_attr=attention_attr(transformer),
        core_attention=_class(transformer, "CoreAttention") is not None,
        qk_method=qk_method(transformer),
        column_returns_bias=column_returns_bias(layers),
        mlp_bias_unguarded=mlp_bias_unguarded(transformer),
        expand_as_unguarded=expand_as_unguarded(transformer),
        plain_bias_helpers=plain_bias_helpers(transformer),
        layernorm_imports={
            path: layernorm_import(files.get(path))
            for path in ("megatron/model/transformer.py", "megatron/model/gpt_model.py", "megatron/optimizer/__init__.py")
        },
        rmsnorm_exported=rmsnorm_exported(files.get("megatron/model/__init__.py")),
        rmsnorm_unavailable=rmsnorm_unavailable({
            path: files.get(path) for path in (
                "megatron/model/__init__.py", "megatron/model/transformer.py", "megatron/model/gpt_model.py",
                "megatron/optimizer/__init__.py",
            )
        }),
        rmsnorm_file=files.get(RMSNORM_PATH) is not None,
        embedding_params=embedding_params(language_model),
        position_gate=position_gate(language_model),
        language_model_moe="num_experts" in lm_params,
        language_model_config="config" in lm_params,
        enums_module=enums_module(gpt_model),
        loss_fn=loss_fn(gpt_model),
        pipe_keywords=pipe_keywords(gpt_model),
        gpt_post_processing=_function(gpt_model, "post_language_model_processing") is not None,
        bias_gaps=bias_gaps(transformer),
        qkv_layout=qkv_layout(transformer),
        blocked_split=blocked_split(transformer),
    )
