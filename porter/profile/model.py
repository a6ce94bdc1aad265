"""Detectors: how the tree's model code is shaped where the port touches it.

One function per question, each reading the parsed file(s) it needs and answering with a
plain value (None when the construct is not there). The plan decides from these answers;
the templates receive them as plain values.
"""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from porter.cst import match as m
from porter.cst.find import class_named, findall, function_named
from porter.cst.nodes import code, dotted
from porter.profile.arguments import top_level_imports

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
    layernorm_imports: dict  # file -> source of the import that binds LayerNorm there
    embedding_params: tuple[str, ...]  # Embedding.__init__ parameters, self excluded
    language_model_moe: bool  # get_language_model takes num_experts (the model returns MoE losses)
    language_model_config: bool  # get_language_model takes a config object
    enums_module: str | None  # the module gpt_model imports AttnMaskType from
    loss_fn: str | None  # the pipe's loss function, as gpt_model defines it
    pipe_keywords: tuple[str, ...]  # GPTModelPipe's extra PipelineModule keywords, as source
    gpt_post_processing: bool  # gpt_model defines post_language_model_processing


def _params(func: cst.FunctionDef | None) -> tuple[str, ...]:
    if func is None:
        return ()
    names = [p.name.value for p in (*func.params.posonly_params, *func.params.params, *func.params.kwonly_params)]
    return tuple(n for n in names if n != "self")


def parallel_style(transformer: cst.Module) -> str:
    imports = top_level_imports(transformer)
    return "core" if "tensor_parallel" in imports else "mpu"


def ctor_style(transformer: cst.Module) -> str:
    params = _params(function_named(class_named(transformer, "ParallelMLP"), "__init__"))
    return "config" if params[:1] == ("config",) else "init_method"


def attention_attr(transformer: cst.Module) -> str | None:
    init = function_named(class_named(transformer, "ParallelTransformerLayer"), "__init__")
    if init is None:
        return None
    for assign in findall(init, m.Assign(value=m.Call(func=m.Name("ParallelAttention")))):
        target = assign.targets[0].target
        if isinstance(target, cst.Attribute) and dotted(target.value) == "self":
            return target.attr.value
    return None


def qk_method(transformer: cst.Module) -> str | None:
    """The method that projects hidden states to query and key (it calls self.query_key_value)."""
    attention = class_named(transformer, "ParallelAttention")
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


def column_returns_bias(layers: cst.Module | None) -> bool:
    forward = function_named(class_named(layers, "ColumnParallelLinear"), "forward")
    if forward is None:
        return True  # Megatron's default convention
    returns = findall(forward, m.Return())
    return bool(returns) and isinstance(returns[-1].value, cst.Tuple)


def layernorm_import(module: cst.Module | None) -> str | None:
    if module is None:
        return None
    return top_level_imports(module).get("LayerNorm")


def embedding_params(language_model: cst.Module) -> tuple[str, ...]:
    return _params(function_named(class_named(language_model, "Embedding"), "__init__"))


def get_language_model_params(language_model: cst.Module) -> tuple[str, ...]:
    return _params(function_named(language_model, "get_language_model"))


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
    init = function_named(class_named(gpt_model, "GPTModelPipe"), "__init__")
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
        core_attention=class_named(transformer, "CoreAttention") is not None,
        qk_method=qk_method(transformer),
        column_returns_bias=column_returns_bias(layers),
        layernorm_imports={
            path: layernorm_import(files.get(path))
            for path in ("megatron/model/transformer.py", "megatron/model/gpt_model.py", "megatron/optimizer/__init__.py")
        },
        embedding_params=embedding_params(language_model),
        language_model_moe="num_experts" in lm_params,
        language_model_config="config" in lm_params,
        enums_module=enums_module(gpt_model),
        loss_fn=loss_fn(gpt_model),
        pipe_keywords=pipe_keywords(gpt_model),
        gpt_post_processing=function_named(gpt_model, "post_language_model_processing") is not None,
    )
