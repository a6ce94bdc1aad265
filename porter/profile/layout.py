"""Reading a ported tree's WeightLayout (porter.layout) from its source and the spec.

`read_layout(profile, spec)` finds the names by structure (libcst), like every detector, and
refuses with a PorterError naming the file and construct when the tree has another shape.
"""

from __future__ import annotations

import libcst as cst

from porter.cst import match as m
from porter.cst.find import class_named, findall, function_named
from porter.cst.nodes import code, dotted
from porter.errors import PorterError
from porter.layout import WeightLayout
from porter.profile import GPT_MODEL, LANGUAGE_MODEL, TRANSFORMER, TreeProfile
from porter.profile.pipe_order import head_key, read_order
from porter.spec import Spec


def _class(module: cst.Module, name: str, path: str) -> cst.ClassDef:
    """The tree's class `name`, which verify and convert need: refused by name when missing."""
    found = class_named(module, name)
    if found is not None:
        return found
    raise PorterError(
        f"{path} has no class {name}",
        file=path,
        construct=f"class {name}",
        found="classes: " + ", ".join(s.name.value for s in module.body if isinstance(s, cst.ClassDef)),
        fix="verify and convert read weight names from the tree's model classes; port the tree first",
    )


def _self_assignments(node: cst.CSTNode) -> list[tuple[str, cst.BaseExpression]]:
    """(attr, value) of every `self.attr = value` inside node, in source order."""
    out = []
    for assign in findall(node, m.Assign(targets=[m.AssignTarget(target=m.Attribute(value=m.Name("self")))])):
        out.append((assign.targets[0].target.attr.value, assign.value))
    return out


def _called(value: cst.BaseExpression) -> str:
    """'ColumnParallelLinear' for `mpu.ColumnParallelLinear(...)` / `tensor_parallel.X(...)`."""
    if isinstance(value, cst.Call):
        name = dotted(value.func) or ""
        return name.rsplit(".", 1)[-1]
    return ""


def _attrs_calling(node: cst.CSTNode, predicate) -> list[str]:
    return [attr for attr, value in _self_assignments(node) if predicate(_called(value))]


def _string_keys(node: cst.CSTNode) -> dict[str, str]:
    """self._x_key = 'value' assignments: {'_x_key': 'value'}."""
    keys = {}
    for attr, value in _self_assignments(node):
        if attr.endswith("_key") and isinstance(value, cst.SimpleString):
            keys[attr] = value.evaluated_value
    return keys


def _first(found: list[str], path: str, construct: str, what: str) -> str:
    if not found:
        raise PorterError(
            f"cannot find {what} in {path}",
            file=path,
            construct=construct,
            found="no such assignment",
            fix="this tree names its modules in a way porter's weight layout does not know; report the variant",
        )
    return found[0]


def _rotary(attention_cls: cst.ClassDef) -> str:
    """The attention's rotary module that rotates q and k (verify probes its output): a
    `self.<x> = RotaryEmbedding(...)` the attention calls with two tensors or more,
    `self.<x>(query_layer, key_layer, ...)`. One called with a length only makes angles that the
    attention hands on (a local layers' base, Gemma-3 on a tree that hands the angles): not it."""
    built = _attrs_calling(attention_cls, lambda c: c == "RotaryEmbedding")
    for attr in built:
        calls = findall(attention_cls, m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name(attr))))
        if any(len([a for a in call.args if a.keyword is None]) >= 2 for call in calls):
            return attr
    return "rotary_emb"


def read_layout(profile: TreeProfile, spec: Spec) -> WeightLayout:
    """The weight layout of the ported tree `profile` describes, for `spec`'s model."""
    tree = profile.tree
    transformer = tree.file(TRANSFORMER).module
    layer = _class(transformer, "ParallelTransformerLayer", TRANSFORMER)
    attention_cls = _class(transformer, "ParallelAttention", TRANSFORMER)
    mlp_cls = _class(transformer, "ParallelMLP", TRANSFORMER)
    stack = _class(transformer, "ParallelTransformer", TRANSFORMER)

    # (a tree may assign one norm in several branches: LayerNorm or RMSNorm)
    norms = list(dict.fromkeys(a for a in _attrs_calling(layer, lambda c: c.endswith("Norm") or c == "norm_class")
                               if "inter" not in a))
    if len(norms) < 2:
        raise PorterError(
            "cannot find the two norms of ParallelTransformerLayer",
            file=TRANSFORMER, construct="self.<input norm> = <Norm>(...) and self.<post-attention norm> = <Norm>(...)",
            found=f"norm assignments: {norms}", fix="report the variant",
        )
    attention = _first(_attrs_calling(layer, lambda c: c == "ParallelAttention"), TRANSFORMER,
                       "ParallelTransformerLayer.__init__: self.<name> = ParallelAttention(...)", "the attention")
    mlp = _first(_attrs_calling(layer, lambda c: c in ("ParallelMLP", "MoE")), TRANSFORMER,
                 "ParallelTransformerLayer.__init__: self.<name> = ParallelMLP(...)", "the MLP")
    init = function_named(attention_cls, "__init__") or attention_cls
    qkv = _first(_attrs_calling(init, lambda c: c == "ColumnParallelLinear"), TRANSFORMER,
                 "ParallelAttention.__init__: self.<name> = ColumnParallelLinear(...)", "the fused QKV projection")
    dense = _first(_attrs_calling(init, lambda c: c == "RowParallelLinear"), TRANSFORMER,
                   "ParallelAttention.__init__: self.<name> = RowParallelLinear(...)", "the attention output projection")
    columns = _attrs_calling(mlp_cls, lambda c: c == "ColumnParallelLinear")
    fc1 = _first(columns, TRANSFORMER,
                 "ParallelMLP.__init__: self.<name> = ColumnParallelLinear(...)", "the MLP input projection")
    # two input projections: the first is the gate (the activation's input), the second the up one
    up = columns[1] if len(columns) > 1 else ""
    fc2 = _first(_attrs_calling(mlp_cls, lambda c: c == "RowParallelLinear"), TRANSFORMER,
                 "ParallelMLP.__init__: self.<name> = RowParallelLinear(...)", "the MLP output projection")
    rotary = _rotary(attention_cls)
    layers = _first(_attrs_calling(stack, lambda c: c == "ModuleList"), TRANSFORMER,
                    "ParallelTransformer.__init__: self.<name> = torch.nn.ModuleList(...)", "the layer list")
    final = [a for a in _attrs_calling(stack, lambda c: c.endswith("Norm") or c == "norm_class")]
    if spec["norm.final_norm"] and not final:
        raise PorterError(
            "cannot find the final norm of ParallelTransformer", file=TRANSFORMER,
            construct="ParallelTransformer.__init__: self.<final norm> = <Norm>(...)", found="none",
            fix="report the variant",
        )
    lm = tree.file(LANGUAGE_MODEL).module
    keys: dict[str, str] = {}
    for cls_name in ("Embedding", "TransformerLanguageModel"):
        keys.update(_string_keys(_class(lm, cls_name, LANGUAGE_MODEL)))
    embedding_cls = _class(lm, "Embedding", LANGUAGE_MODEL)
    word = _first(_attrs_calling(embedding_cls, lambda c: c == "VocabParallelEmbedding"), LANGUAGE_MODEL,
                  "Embedding.__init__: self.<name> = VocabParallelEmbedding(...)", "the word embeddings")
    lm_cls = _class(lm, "TransformerLanguageModel", LANGUAGE_MODEL)
    embedding = _first(_attrs_calling(lm_cls, lambda c: c == "Embedding"), LANGUAGE_MODEL,
                       "TransformerLanguageModel.__init__: self.<name> = Embedding(...)", "the embedding")
    encoder = _first(_attrs_calling(lm_cls, lambda c: c == "ParallelTransformer"), LANGUAGE_MODEL,
                     "TransformerLanguageModel.__init__: self.<name> = ParallelTransformer(...)", "the encoder")
    lm_key = "language_model"
    for assign in findall(lm, m.Assign(targets=[m.AssignTarget(target=m.Name("language_model_key"))])):
        if isinstance(assign.value, cst.SimpleString):
            lm_key = assign.value.evaluated_value
    head = {}
    if "output_layer" in _attrs_calling(lm_cls, lambda c: c == "ColumnParallelLinear") and not spec["embeddings.tied"]:
        key = keys.get("_output_layer_key", "output_layer")
        head = {"head_module": f"{lm_key}.output_layer", "head_keys": (lm_key, key, "weight")}

    divisible = profile.arguments.by_dest("make_vocab_size_divisible_by")
    try:
        divisible_by = int(divisible.default) if divisible and divisible.default else 128
    except ValueError:
        divisible_by = 128

    return WeightLayout(
        input_norm=norms[0], attention=attention, post_attention_norm=norms[1], mlp=mlp,
        qkv=qkv, dense=dense, fc1=fc1, up=up, fc2=fc2, rotary=rotary,
        layers=layers, final_norm=final[0] if final else "",
        embedding=embedding, encoder=encoder, word_embeddings=word,
        language_model_key=lm_key,
        embedding_key=keys.get("_embedding_key", embedding),
        encoder_key=keys.get("_encoder_key", encoder),
        word_embeddings_key=keys.get("_word_embeddings_key", word),
        make_vocab_size_divisible_by=divisible_by,
        **head,
        rotary_buffers=rotary_buffers(tree, transformer, layer, attention_cls, attention),
        **pipe_layout(profile, spec),
        **difference_layout(profile, spec),
    )


def _saves_inv_freq(cls: cst.ClassDef) -> bool:
    """The class registers `inv_freq` as a saved buffer (no persistent=False)."""
    for call in findall(cls, m.Call(func=m.Attribute(value=m.Name("self"), attr=m.Name("register_buffer")))):
        first = call.args[0].value if call.args else None
        if isinstance(first, cst.SimpleString) and first.evaluated_value == "inv_freq":
            persistent = next((a.value for a in call.args if a.keyword and a.keyword.value == "persistent"), None)
            return persistent is None or code(persistent) != "False"
    return False


def _imported_from(tree, module: cst.Module, name: str, here: str) -> cst.ClassDef | None:
    """The class `name` as `module` (the file at `here`) imports it, from the tree's files."""
    for node in findall(module, m.ImportFrom()):
        if isinstance(node.names, cst.ImportStar) or not any(
                (a.asname.name.value if a.asname else dotted(a.name)) == name for a in node.names):
            continue
        dots = len(node.relative)
        parts = (dotted(node.module) or "").split(".") if node.module else []
        base = here.split("/")[:-dots] if dots else []
        path = "/".join([*base, *parts]) + ".py"
        if tree.exists(path):
            return next((s for s in tree.file(path).module.body
                         if isinstance(s, cst.ClassDef) and s.name.value == name), None)
    return None


def rotary_buffers(tree, transformer: cst.Module, layer: cst.ClassDef, attention_cls: cst.ClassDef,
                   attention: str) -> tuple[str, ...]:
    """Layer keys of the saved `inv_freq` buffers of the rotary class the tree's layer builds
    (Habana 7086aadb: CoreAttention's rotary_emb), where that class saves them."""
    core = class_named(transformer, "CoreAttention")
    holders = [(layer, ""), (attention_cls, f"{attention}.")]
    core_attr = next(iter(_attrs_calling(attention_cls, lambda c: c == "CoreAttention")), None)
    if core is not None and core_attr:
        holders.append((core, f"{attention}.{core_attr}."))
    found = []
    for cls, prefix in holders:
        for attr, value in _self_assignments(cls):
            name = _called(value)
            if "Rotary" not in name:
                continue
            rotary = class_named(transformer, name) or _imported_from(tree, transformer, name, TRANSFORMER)
            if rotary is not None and _saves_inv_freq(rotary):
                found.append(f"{prefix}{attr}.inv_freq")
    return tuple(dict.fromkeys(found))


def pipe_layout(profile: TreeProfile, spec: Spec) -> dict:
    """The generated <Prefix>ModelPipe's spec indices, read from its __init__ (or, when it only
    checks switches, its base class's in gpt_model.py); porter's template order when neither reads."""
    tree = profile.tree
    source = tree.get(f"megatron/model/{spec.module_name}.py")
    if source is None:
        return {}
    module = source.module
    cls = class_named(module, f"{spec.model_class}Pipe")
    if cls is None:
        return {}
    init = function_named(cls, "__init__")
    order = read_order(init) if init is not None else None
    if order is None:
        gpt = tree.get(GPT_MODEL)
        bases = {(dotted(b.value) or "").rsplit(".", 1)[-1] for b in cls.bases}
        base = next((s for s in gpt.module.body if isinstance(s, cst.ClassDef) and s.name.value in bases),
                    None) if gpt is not None else None
        base_init = function_named(base, "__init__") if base is not None else None
        order = read_order(base_init) if base_init is not None else None
        module = gpt.module if order is not None else module
    if order is None:
        return {}
    out: dict = {"pipe_embedding": order.embedding, "pipe_first_layer": order.first_layer}
    if order.norm_after is not None:
        out["pipe_norm_after"] = order.norm_after
    if order.head_after is not None:
        out["pipe_head_after"] = order.head_after
    # the head's class: defined next to the pipe, or imported from the model files
    for where in (module, tree.file(TRANSFORMER).module, tree.file(LANGUAGE_MODEL).module):
        key = head_key(where, order.head_class)
        if key is not None:
            out["head_pipe_key"] = key
            break
    return out


def difference_layout(profile: TreeProfile, spec: Spec) -> dict:
    """The layout facts each difference decides (gate half, tied head, bias per site...)."""
    out: dict = {}
    for difference in spec.differences:
        out.update(difference.layout(profile, spec))
    return out
