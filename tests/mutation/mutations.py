"""Variants of the sample tree: the shapes porter meets in other people's trees.

`all_mutations()` derives, deterministically, a few hundred variants from a handful of
operators, each applied at every point where it makes sense: renamed anchors (classes,
methods, attributes, names the templates import, the `args` variable), reordered members
and classes, extra decorators and comments, other quoting and formatting (re-indented with
two spaces or tabs, calls collapsed onto one line, whole files re-printed by `ast.unparse`
with and without their type comments), removed norm sites, duplicated classes and methods,
moved and merged imports, `super()` styles, and pairs of these. A Mutation changes a copy
of the tree in place and returns the attribute renames the model checks must follow.

The variants are ours: code transformations of our own sample tree, written here.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

TRANSFORMER = "megatron/model/transformer.py"
LANGUAGE_MODEL = "megatron/model/language_model.py"
GPT_MODEL = "megatron/model/gpt_model.py"
MODEL_INIT = "megatron/model/__init__.py"
ARGUMENTS = "megatron/arguments.py"
OPTIMIZER = "megatron/optimizer/__init__.py"
TOKENIZER = "megatron/tokenizer/tokenizer.py"
GLOBAL_VARS = "megatron/global_vars.py"
PRETRAIN_GPT = "pretrain_gpt.py"

EDITED_FILES = (TRANSFORMER, LANGUAGE_MODEL, GPT_MODEL, MODEL_INIT, ARGUMENTS, OPTIMIZER, TOKENIZER, GLOBAL_VARS)


@dataclass(frozen=True)
class Mutation:
    id: str
    kind: str
    description: str
    steps: tuple[Callable[[Path], dict | None], ...] = field(compare=False)

    def apply(self, tree: Path) -> dict[str, str]:
        """Change the tree in place; the attribute renames the model checks must follow."""
        renames: dict[str, str] = {}
        for step in self.steps:
            renames.update(step(tree) or {})
        return renames


# -- tools ---------------------------------------------------------------------------------------


def _py_files(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*.py") if "__pycache__" not in p.parts)


def transform(rel: str, change: Callable[[cst.Module], cst.Module]) -> Callable[[Path], None]:
    def step(tree: Path) -> None:
        path = tree / rel
        module = cst.parse_module(path.read_text())
        path.write_text(change(module).code)
    return step


def text(rel: str, change: Callable[[str], str]) -> Callable[[Path], None]:
    def step(tree: Path) -> None:
        path = tree / rel
        old = path.read_text()
        new = change(old)
        assert new != old, f"mutation changed nothing in {rel}"
        path.write_text(new)
    return step


class _RenameName(cst.CSTTransformer):
    def __init__(self, old: str, new: str) -> None:
        super().__init__()
        self.old, self.new = old, new

    def leave_Name(self, original, updated):
        return updated.with_changes(value=self.new) if updated.value == self.old else updated


def rename_everywhere(old: str, new: str, attribute: bool = False) -> Callable[[Path], dict]:
    """Rename an identifier in every file of the tree (so the tree still works)."""
    def step(tree: Path) -> dict:
        hits = 0
        for path in _py_files(tree):
            source = path.read_text()
            if not re.search(rf"\b{re.escape(old)}\b", source):
                continue
            module = cst.parse_module(source).visit(_RenameName(old, new))
            path.write_text(module.code)
            hits += 1
        assert hits, f"{old} is nowhere in the tree"
        return {old: new} if attribute else {}
    return step


class _InFunction(cst.CSTTransformer):
    """Apply `change(function) -> function` to cls.func (cls None: a top-level function)."""

    def __init__(self, cls: str | None, func: str, change) -> None:
        super().__init__()
        self.cls, self.func, self.change = cls, func, change
        self.stack: list[str] = []
        self.hits = 0

    def visit_ClassDef(self, node):
        self.stack.append(node.name.value)

    def leave_ClassDef(self, original, updated):
        self.stack.pop()
        return updated

    def leave_FunctionDef(self, original, updated):
        where = self.stack[-1] if self.stack else None
        if where == self.cls and updated.name.value == self.func and len(self.stack) <= 1:
            self.hits += 1
            return self.change(updated)
        return updated


def in_function(rel: str, cls: str | None, func: str, change) -> Callable[[Path], None]:
    def apply(module: cst.Module) -> cst.Module:
        visitor = _InFunction(cls, func, change)
        out = module.visit(visitor)
        assert visitor.hits == 1, f"{cls}.{func} found {visitor.hits} times in {rel}"
        return out
    return transform(rel, apply)


def in_class(rel: str, cls: str, change: Callable[[cst.ClassDef], cst.ClassDef]) -> Callable[[Path], None]:
    def apply(module: cst.Module) -> cst.Module:
        body = list(module.body)
        found = [i for i, s in enumerate(body) if isinstance(s, cst.ClassDef) and s.name.value == cls]
        assert len(found) == 1, f"class {cls} in {rel}: {len(found)}"
        body[found[0]] = change(body[found[0]])
        return module.with_changes(body=body)
    return transform(rel, apply)


def _top_level(module: cst.Module, name: str) -> int:
    return next(i for i, s in enumerate(module.body) if getattr(getattr(s, "name", None), "value", None) == name)


# -- operators ----------------------------------------------------------------------------------

# (file, class, methods porter's rewrites are anchored on)
ANCHORED_CLASSES = {
    "ParallelMLP": (TRANSFORMER, ("__init__", "forward")),
    "ParallelAttention": (TRANSFORMER, ("__init__", "forward")),
    "ParallelTransformerLayer": (TRANSFORMER, ("__init__", "forward")),
    "ParallelTransformer": (TRANSFORMER, ("__init__",)),
    "Embedding": (LANGUAGE_MODEL, ("__init__", "forward", "state_dict_for_save_checkpoint", "load_state_dict")),
    "GPTModelPipe": (GPT_MODEL, ("__init__",)),
}
ANCHORED_FUNCTIONS = {
    "bias_dropout_add": TRANSFORMER,
    "bias_dropout_add_fused_train": TRANSFORMER,
    "bias_dropout_add_fused_inference": TRANSFORMER,
    "_get_params_for_weight_decay_optimization": OPTIMIZER,
    "build_tokenizer": TOKENIZER,
    "set_global_variables": GLOBAL_VARS,
    "parse_args": ARGUMENTS,
    "_add_network_size_args": ARGUMENTS,
    "_add_data_args": ARGUMENTS,
}


def renamed_anchors() -> list[Mutation]:
    out = []
    for name in [*ANCHORED_CLASSES, "bias_dropout_add_fused_train", "_get_params_for_weight_decay_optimization",
                 "build_tokenizer", "set_global_variables", "_add_network_size_args"]:
        out.append(Mutation(f"rename-{name}", "renamed anchor", f"{name} renamed everywhere",
                            (rename_everywhere(name, f"{name.strip('_')}_v2"),)))
    # Names porter's templates and rewrites import from the tree.
    for name in ("ParallelTransformerLayerPipe", "EmbeddingPipe", "CrossEntropy", "post_language_model_processing",
                 "parallel_lm_logits", "get_language_model", "init_method_normal", "MegatronModule",
                 "forward_step", "get_batch_pipe", "train_valid_test_datasets_provider"):
        out.append(Mutation(f"rename-imported-{name}", "renamed anchor", f"{name} (used by porter's files) renamed",
                            (rename_everywhere(name, f"{name}_v2"),)))
    # Attributes the rewrites look for, and attributes they do not.
    for attr in ("dense_h_to_4h", "dense_4h_to_h", "query_key_value", "dense", "activation_func",
                 "position_embeddings", "input_layernorm", "post_attention_layernorm", "final_layernorm",
                 "hidden_size_per_attention_head", "norm_factor", "word_embeddings", "attention", "mlp"):
        out.append(Mutation(f"rename-attr-{attr}", "renamed anchor", f"attribute {attr} renamed everywhere",
                            (rename_everywhere(attr, f"{attr}_x", attribute=True),)))
    for var in ("query_layer", "key_layer", "bias_parallel", "intermediate_parallel", "layernorm_output"):
        out.append(Mutation(f"rename-local-{var}", "renamed anchor", f"local variable {var} renamed",
                            (rename_everywhere(var, f"{var}_"),)))
    for cls, (rel, methods) in ANCHORED_CLASSES.items():
        if "__init__" in methods:
            out.append(Mutation(f"args-as-cfg-{cls}", "renamed anchor",
                                f"{cls}.__init__ calls the arguments `cfg`, not `args`",
                                (in_function(rel, cls, "__init__", lambda f: f.visit(_RenameName("args", "cfg"))),)))
    return out


def reordered() -> list[Mutation]:
    out = []

    def members(order: str):
        def change(node: cst.ClassDef) -> cst.ClassDef:
            body = list(node.body.body)
            start = 1 if body and _is_docstring(body[0]) else 0
            head, rest = body[:start], body[start:]
            rest = rest[::-1] if order == "reversed" else rest[1:] + rest[:1]
            return node.with_changes(body=node.body.with_changes(body=head + rest))
        return change

    for cls, (rel, _) in ANCHORED_CLASSES.items():
        for order in ("reversed", "rotated"):
            out.append(Mutation(f"reorder-{order}-{cls}", "reordered members", f"{cls}'s methods {order}",
                                (in_class(rel, cls, members(order)),)))

    def move_class(rel: str, cls: str, after: str):
        def change(module: cst.Module) -> cst.Module:
            body = list(module.body)
            node = body.pop(_top_level(module, cls))
            body.insert(_top_level(module.with_changes(body=body), after) + 1, node)
            return module.with_changes(body=body)
        return transform(rel, change)

    for cls, after in (("ParallelMLP", "ParallelAttention"), ("ParallelAttention", "ParallelTransformer"),
                       ("ParallelMLP", "ParallelTransformer")):
        out.append(Mutation(f"move-{cls}-after-{after}", "reordered members", f"class {cls} moved after {after}",
                            (move_class(TRANSFORMER, cls, after),)))
    out.append(Mutation("move-Embedding-last", "reordered members", "class Embedding moved to the end",
                        (move_class(LANGUAGE_MODEL, "Embedding", "TransformerLanguageModel"),
                         text(LANGUAGE_MODEL, lambda s: s.replace("class EmbeddingPipe(Embedding):",
                                                                  "class EmbeddingPipe(MegatronModule):")),
                         text(LANGUAGE_MODEL, lambda s: s + "\n\nEmbeddingPipe.__bases__ = (Embedding,)\n"))))
    return out


def _is_docstring(stmt) -> bool:
    return (isinstance(stmt, cst.SimpleStatementLine) and isinstance(stmt.body[0], cst.Expr)
            and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))


PASSTHROUGH = "\n\ndef _passthrough(obj):\n    \"\"\"A decorator that changes nothing.\"\"\"\n    return obj\n"


def _add_passthrough(module: cst.Module) -> cst.Module:
    body = list(module.body)
    last_import = max(i for i, s in enumerate(body) if isinstance(s, cst.SimpleStatementLine)
                      and isinstance(s.body[0], (cst.Import, cst.ImportFrom)))
    helper = cst.parse_module(PASSTHROUGH).body
    return module.with_changes(body=body[: last_import + 1] + list(helper) + body[last_import + 1:])


def _decorate(node):
    return node.with_changes(decorators=[cst.Decorator(decorator=cst.Name("_passthrough")), *node.decorators])


def decorated() -> list[Mutation]:
    out = []
    for cls, (rel, methods) in ANCHORED_CLASSES.items():
        out.append(Mutation(f"decorate-class-{cls}", "extra decorators", f"class {cls} gets a decorator",
                            (transform(rel, _add_passthrough), in_class(rel, cls, _decorate))))
        for method in methods:
            out.append(Mutation(f"decorate-{cls}.{method}", "extra decorators", f"{cls}.{method} gets a decorator",
                                (transform(rel, _add_passthrough), in_function(rel, cls, method, _decorate))))
    for func in ("bias_dropout_add", "_get_params_for_weight_decay_optimization", "build_tokenizer"):
        rel = ANCHORED_FUNCTIONS[func]
        out.append(Mutation(f"decorate-{func}", "extra decorators", f"{func} gets a decorator",
                            (transform(rel, _add_passthrough), in_function(rel, None, func, _decorate))))
    return out


class _Commented(cst.CSTTransformer):
    """A comment line above every statement of a body, and one at the end of each simple line."""

    def __init__(self, trailing: bool) -> None:
        super().__init__()
        self.trailing = trailing

    def leave_SimpleStatementLine(self, original, updated):
        lines = [*updated.leading_lines, cst.EmptyLine(comment=cst.Comment("# a note of ours"))]
        updated = updated.with_changes(leading_lines=lines)
        if self.trailing and updated.trailing_whitespace.comment is None:
            updated = updated.with_changes(trailing_whitespace=updated.trailing_whitespace.with_changes(
                whitespace=cst.SimpleWhitespace("  "), comment=cst.Comment("# checked")))
        return updated


def commented() -> list[Mutation]:
    out = []
    places = [(rel, cls, m) for cls, (rel, methods) in ANCHORED_CLASSES.items() for m in methods]
    places += [(rel, None, f) for f, rel in ANCHORED_FUNCTIONS.items()]
    for rel, cls, func in places:
        where = f"{cls}.{func}" if cls else func
        for trailing in (False, True):
            style = "trailing" if trailing else "leading"
            out.append(Mutation(f"comments-{style}-{where}", "extra comments", f"{style} comments in {where}",
                                (in_function(rel, cls, func, lambda f, t=trailing: f.visit(_Commented(t))),)))
    return out


class _Quotes(cst.CSTTransformer):
    def __init__(self, quote: str) -> None:
        super().__init__()
        self.quote = quote
        self.in_fstring = 0

    def visit_FormattedString(self, node):
        self.in_fstring += 1

    def leave_FormattedString(self, original, updated):
        self.in_fstring -= 1
        return updated

    def leave_SimpleString(self, original, updated):
        if self.in_fstring:
            return updated
        value = updated.value
        prefix = value[: len(value) - len(value.lstrip("rbuRBU"))]
        body = value[len(prefix):]
        if body[:3] in ('"""', "'''") or body[0] == self.quote:
            return updated
        inner = body[1:-1]
        if self.quote in inner or "\\" in inner:
            return updated
        return updated.with_changes(value=f"{prefix}{self.quote}{inner}{self.quote}")


def requoted() -> list[Mutation]:
    out = []
    for rel in EDITED_FILES + (PRETRAIN_GPT,):
        for quote, name in (('"', "double"), ("'", "single")):
            out.append(Mutation(f"quotes-{name}-{rel}", "quoting", f"{rel}: strings in {name} quotes",
                                (transform(rel, lambda m, q=quote: m.visit(_Quotes(q))),)))
    return out


class _OneLineCalls(cst.CSTTransformer):
    """Calls written on one line (where no comment sits inside them)."""

    def leave_Call(self, original, updated):
        if "#" in cst.Module(body=[]).code_for_node(updated):
            return updated
        args = [a.with_changes(
            whitespace_after_arg=cst.SimpleWhitespace(""),
            comma=a.comma if a.comma is cst.MaybeSentinel.DEFAULT else cst.Comma(
                whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace(" ")),
        ) for a in updated.args]
        if args and isinstance(args[-1].comma, cst.Comma):
            args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        return updated.with_changes(args=args, whitespace_before_args=cst.SimpleWhitespace(""))


def _unparse(source: str) -> str:
    """Re-printed by ast.unparse; type comments go back to the first line of the body, the
    one place TorchScript reads them from."""
    out = ast.unparse(ast.parse(source, type_comments=True)) + "\n"
    return re.sub(r"^( *)(def .*:) (# type: .*)$", r"\1\2\n\1    \3", out, flags=re.M)


def _annotated(source: str) -> str:
    """The bias-dropout-add helpers typed by annotations instead of type comments."""
    source = re.sub(r"\n( *)# type: \(Tensor, Tensor, Tensor, float(, bool)?\) -> Tensor", "", source)
    source = source.replace("def bias_dropout_add(x, bias, residual, prob, training):",
                            "def bias_dropout_add(x: Tensor, bias: Tensor, residual: Tensor, prob: float,\n"
                            "                     training: bool) -> Tensor:")
    for kind in ("train", "inference"):
        source = source.replace(f"def bias_dropout_add_fused_{kind}(x, bias, residual, prob):",
                                f"def bias_dropout_add_fused_{kind}(x: Tensor, bias: Tensor, residual: Tensor,\n"
                                f"                                  prob: float) -> Tensor:")
    return source.replace("import torch.nn.functional as F\n", "import torch.nn.functional as F\nfrom torch import Tensor\n")


def reformatted() -> list[Mutation]:
    out = []
    for rel in EDITED_FILES:
        out.append(Mutation(f"indent-2-{rel}", "formatting", f"{rel} indented with two spaces",
                            (transform(rel, lambda m: m.with_changes(default_indent="  ")),)))
        out.append(Mutation(f"indent-tabs-{rel}", "formatting", f"{rel} indented with tabs",
                            (transform(rel, lambda m: m.with_changes(default_indent="\t")),)))
        out.append(Mutation(f"one-line-calls-{rel}", "formatting", f"{rel}: every call on one line",
                            (transform(rel, lambda m: m.visit(_OneLineCalls())),)))
        out.append(Mutation(f"unparse-{rel}", "formatting", f"{rel} re-printed by ast.unparse",
                            (text(rel, _unparse),)))
    out.append(Mutation("annotations-not-type-comments", "formatting",
                        "the TorchScript helpers typed by annotations, not type comments",
                        (text(TRANSFORMER, _annotated),)))
    return out


def _drop_statement(pattern: str):
    def change(f: cst.FunctionDef) -> cst.FunctionDef:
        body = [s for s in f.body.body if not re.search(pattern, cst.Module(body=[]).code_for_node(s))]
        assert len(body) < len(f.body.body), pattern
        return f.with_changes(body=f.body.with_changes(body=body))
    return change


def removed_norm_sites() -> list[Mutation]:
    layer = "ParallelTransformerLayer"
    return [
        Mutation("no-input-norm", "removed norm site", "the layer has no norm before attention",
                 (in_function(TRANSFORMER, layer, "__init__", _drop_statement(r"self\.input_layernorm =")),
                  text(TRANSFORMER, lambda s: s.replace("layernorm_output = self.input_layernorm(hidden_states)",
                                                        "layernorm_output = hidden_states")))),
        Mutation("no-post-attention-norm", "removed norm site", "the layer has no norm before the MLP",
                 (in_function(TRANSFORMER, layer, "__init__", _drop_statement(r"self\.post_attention_layernorm =")),
                  text(TRANSFORMER, lambda s: s.replace(
                      "layernorm_output = self.post_attention_layernorm(layernorm_input)",
                      "layernorm_output = layernorm_input")))),
        Mutation("no-final-norm", "removed norm site", "the transformer has no final norm",
                 (in_function(TRANSFORMER, "ParallelTransformer", "__init__", lambda f: f.visit(_DropIf("post_process"))),
                  text(TRANSFORMER, lambda s: s.replace("output = self.final_layernorm(hidden_states)",
                                                        "output = hidden_states")))),
        Mutation("no-pipe-final-norm", "removed norm site", "the GPT pipe has no final norm",
                 (text(GPT_MODEL, _remove_pipe_norm),)),
        Mutation("norm-site-identity", "removed norm site", "the input norm is an Identity",
                 (text(TRANSFORMER, lambda s: re.sub(r"self\.input_layernorm = LayerNorm\(\s*args\.hidden_size,\s*"
                                                      r"eps=args\.layernorm_epsilon\)",
                                                      "self.input_layernorm = torch.nn.Identity()", s)),)),
    ]


def _remove_pipe_norm(source: str) -> str:
    start = source.index("        self.specs.append(\n            LayerSpec(LayerNorm,")
    end = source.index(")", source.index("eps=args.layernorm_epsilon", start)) + 1
    end = source.index("\n", end) + 1
    return source[:start] + source[end:]


class _DropIf(cst.CSTTransformer):
    """Remove `if <name...>:` statements at the top of a function body."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def leave_If(self, original, updated):
        if self.name in cst.Module(body=[]).code_for_node(updated.test):
            return cst.RemoveFromParent()
        return updated


def duplicated() -> list[Mutation]:
    out = []

    def duplicate_class(rel, cls):
        def change(module):
            body = list(module.body)
            at = _top_level(module, cls)
            return module.with_changes(body=body[: at + 1] + [body[at]] + body[at + 1:])
        return transform(rel, change)

    def duplicate_method(rel, cls, method):
        def change(node: cst.ClassDef) -> cst.ClassDef:
            body = list(node.body.body)
            at = next(i for i, s in enumerate(body) if isinstance(s, cst.FunctionDef) and s.name.value == method)
            return node.with_changes(body=node.body.with_changes(body=body[: at + 1] + [body[at]] + body[at + 1:]))
        return in_class(rel, cls, change)

    for cls, (rel, methods) in ANCHORED_CLASSES.items():
        out.append(Mutation(f"duplicate-class-{cls}", "duplicated class", f"class {cls} defined twice",
                            (duplicate_class(rel, cls),)))
        out.append(Mutation(f"duplicate-method-{cls}.{methods[0]}", "duplicated class",
                            f"{cls}.{methods[0]} defined twice", (duplicate_method(rel, cls, methods[0]),)))
    for func in ("bias_dropout_add", "build_tokenizer", "_add_network_size_args"):
        out.append(Mutation(f"duplicate-function-{func}", "duplicated class", f"function {func} defined twice",
                            (duplicate_class(ANCHORED_FUNCTIONS[func], func),)))
    out.append(Mutation("duplicate-class-ParallelTransformerLayerPipe", "duplicated class",
                        "class ParallelTransformerLayerPipe (no anchor) defined twice",
                        (duplicate_class(TRANSFORMER, "ParallelTransformerLayerPipe"),)))
    return out


def _move_line(rel: str, line: str, where: str) -> Callable[[Path], None]:
    """Move an import line to the end of the imports ('last') or into the functions that use it."""
    def change(source: str) -> str:
        assert line + "\n" in source, line
        source = source.replace(line + "\n", "", 1)
        if where == "last":
            lines = source.splitlines(keepends=True)
            last = max(i for i, s in enumerate(lines) if s.startswith(("import ", "from ")))
            lines.insert(last + 1, line + "\n")
            return "".join(lines)
        return source.replace(where, where + "\n" + " " * 8 + line.strip(), )
    return text(rel, change)


def moved_imports() -> list[Mutation]:
    return [
        Mutation("import-LayerNorm-last", "moved imports", "transformer.py imports LayerNorm last",
                 (_move_line(TRANSFORMER, "from megatron.model import LayerNorm", "last"),)),
        Mutation("import-F-last", "moved imports", "transformer.py imports torch.nn.functional last",
                 (_move_line(TRANSFORMER, "import torch.nn.functional as F", "last"),)),
        Mutation("import-LayerNorm-local", "moved imports", "transformer.py imports LayerNorm inside the functions",
                 (text(TRANSFORMER, lambda s: s.replace("from megatron.model import LayerNorm\n", "").replace(
                     "        args = get_args()\n",
                     "        args = get_args()\n        from megatron.model import LayerNorm\n")),)),
        Mutation("import-merged-megatron", "moved imports", "transformer.py merges its `from megatron import` lines",
                 (text(TRANSFORMER, lambda s: s.replace("from megatron import get_args\nfrom megatron import mpu\n",
                                                        "from megatron import get_args, mpu\n")),)),
        Mutation("import-gpt-LayerNorm-grouped", "moved imports", "gpt_model.py imports LayerNorm with other names",
                 (text(GPT_MODEL, lambda s: s.replace(
                     "from megatron.model import LayerNorm\nfrom megatron.model.module import float16_to_fp32\n",
                     "from megatron.model.module import float16_to_fp32\nfrom megatron.model import (\n"
                     "    LayerNorm,\n)\n")),)),
        Mutation("import-optimizer-LayerNorm-first", "moved imports", "optimizer imports LayerNorm first",
                 (text(OPTIMIZER, lambda s: s.replace("from megatron.model import LayerNorm\n", "").replace(
                     "from torch.optim import AdamW as Adam\n",
                     "from megatron.model import LayerNorm\nfrom torch.optim import AdamW as Adam\n")),)),
        Mutation("import-LayerNorm-aliased", "moved imports", "transformer.py imports LayerNorm under another name",
                 (text(TRANSFORMER, lambda s: s.replace("from megatron.model import LayerNorm\n",
                                                        "from megatron.model import LayerNorm as Norm\n")
                       .replace("LayerNorm(", "Norm(")),)),
        Mutation("init-exports-merged", "moved imports", "model/__init__.py exports in other lines",
                 (text(MODEL_INIT, lambda s: s.replace(
                     "from .language_model import get_language_model\nfrom .module import Float16Module\n",
                     "from .module import Float16Module\nfrom .language_model import get_language_model\n")),)),
        Mutation("import-module-style", "moved imports", "transformer.py uses `import megatron.model` for LayerNorm",
                 (text(TRANSFORMER, lambda s: s.replace("from megatron.model import LayerNorm\n",
                                                        "import megatron.model\n")
                       .replace("LayerNorm(", "megatron.model.LayerNorm(")),)),
    ]


def assorted() -> list[Mutation]:
    mutations = [
        ("super-plain", "ParallelMLP calls super().__init__()",
         text(TRANSFORMER, lambda s: s.replace("super(ParallelMLP, self).__init__()", "super().__init__()"))),
        ("args-late", "ParallelTransformerLayer reads args after super().__init__()",
         in_function(TRANSFORMER, "ParallelTransformerLayer", "__init__", _args_after_super)),
        ("docstrings", "every anchored method gets a docstring",
         transform(TRANSFORMER, lambda m: m.visit(_Docstrings()))),
        ("annotations", "ParallelMLP.__init__ and forward get type annotations",
         text(TRANSFORMER, lambda s: s.replace("def __init__(self, init_method, output_layer_init_method):",
                                               "def __init__(self, init_method: object, "
                                               "output_layer_init_method: object) -> None:")
              .replace("def forward(self, hidden_states):", "def forward(self, hidden_states: torch.Tensor):"))),
        ("activation-ifexp", "the activation is chosen by one conditional expression",
         text(TRANSFORMER, lambda s: s.replace(
             "        self.activation_func = F.gelu\n        if args.openai_gelu:\n"
             "            self.activation_func = openai_gelu\n        elif args.onnx_safe:\n"
             "            self.activation_func = erf_gelu\n",
             "        self.activation_func = openai_gelu if args.openai_gelu else "
             "(erf_gelu if args.onnx_safe else F.gelu)\n"))),
        ("ffn-default-falsy", "the 4h default is written `if not args.ffn_hidden_size:`",
         text(ARGUMENTS, lambda s: s.replace("if args.ffn_hidden_size is None:", "if not args.ffn_hidden_size:"))),
        ("ffn-default-reversed", "the 4h default is written `args.hidden_size * 4`",
         text(ARGUMENTS, lambda s: s.replace("args.ffn_hidden_size = 4 * args.hidden_size",
                                             "args.ffn_hidden_size = args.hidden_size * 4"))),
        ("group-var-g", "the network-size group variable is `g`",
         in_function(ARGUMENTS, None, "_add_network_size_args", lambda f: f.visit(_RenameName("group", "g")))),
        ("vocab-is-not-none", "global_vars tests `args.vocab_file is not None`",
         text(GLOBAL_VARS, lambda s: s.replace("if args.vocab_file:", "if args.vocab_file is not None:"))),
        ("tokenizer-no-assert", "build_tokenizer asserts the vocab file in each branch",
         text(TOKENIZER, lambda s: s.replace("    assert args.vocab_file is not None\n", ""))),
        ("linear-keywords", "the QKV projection is built with keyword arguments",
         text(TRANSFORMER, lambda s: s.replace(
             "            self.query_key_value = mpu.ColumnParallelLinear(\n                args.hidden_size,\n"
             "                3 * projection_size,",
             "            self.query_key_value = mpu.ColumnParallelLinear(\n                input_size=args.hidden_size,\n"
             "                output_size=3 * projection_size,"))),
        ("mlp-keywords", "the MLP's first projection is built with keyword arguments",
         text(TRANSFORMER, lambda s: s.replace(
             "        self.dense_h_to_4h = mpu.ColumnParallelLinear(\n            args.hidden_size,\n"
             "            args.ffn_hidden_size,",
             "        self.dense_h_to_4h = mpu.ColumnParallelLinear(\n            input_size=args.hidden_size,\n"
             "            output_size=args.ffn_hidden_size,"))),
        ("linear-imported", "the parallel linears are imported by name",
         text(TRANSFORMER, lambda s: s.replace("from megatron import mpu\n",
                                               "from megatron import mpu\nfrom megatron.mpu import "
                                               "ColumnParallelLinear, RowParallelLinear\n")
              .replace("mpu.ColumnParallelLinear(", "ColumnParallelLinear(")
              .replace("mpu.RowParallelLinear(", "RowParallelLinear("))),
        ("positions-inline", "the embedding adds positions in one expression",
         text(LANGUAGE_MODEL, lambda s: s.replace(
             "        position_embeddings = self.position_embeddings(position_ids)\n"
             "        embeddings = words_embeddings + position_embeddings\n",
             "        embeddings = words_embeddings + self.position_embeddings(position_ids)\n"))),
        ("blank-lines", "extra blank lines between every statement of transformer.py's classes",
         transform(TRANSFORMER, lambda m: m.visit(_BlankLines()))),
        ("trailing-commas", "calls in arguments.py end with a trailing comma",
         text(ARGUMENTS, lambda s: re.sub(r"(help='[^'\n]*')\)", r"\1,)", s))),
        ("norm-keyword-hidden", "norm sites pass the hidden size by keyword",
         text(TRANSFORMER, lambda s: s.replace("norm_class(\n            args.hidden_size,", "norm_class(\n            normalized_shape=args.hidden_size,")
              .replace("LayerNorm(\n            args.hidden_size,", "LayerNorm(\n            normalized_shape=args.hidden_size,"))),
        ("no-onnx-option", "the tree has no --onnx-safe option",
         text(ARGUMENTS, _drop_option("--onnx-safe")),
         text(TRANSFORMER, lambda s: s.replace("        elif args.onnx_safe:\n            self.activation_func = erf_gelu\n",
                                               ""))),
    ]
    return [Mutation(f"assorted-{name}", "assorted", description, tuple(steps))
            for name, description, *steps in mutations]


def _drop_option(option: str):
    def change(source: str) -> str:
        start = source.index(f"    group.add_argument('{option}'")
        end = min(i for i in (source.find("\n    group.", start + 1), source.find("\n    return", start + 1)) if i > 0)
        return source[:start] + source[end + 1:]
    return change


def _args_after_super(f: cst.FunctionDef) -> cst.FunctionDef:
    body = list(f.body.body)
    code = [cst.Module(body=[]).code_for_node(s) for s in body]
    args_at = next(i for i, c in enumerate(code) if c.strip().startswith("args = get_args()"))
    super_at = next(i for i, c in enumerate(code) if "super(" in c)
    stmt = body.pop(args_at)
    body.insert(super_at, stmt)
    return f.with_changes(body=f.body.with_changes(body=body))


class _Docstrings(cst.CSTTransformer):
    def leave_FunctionDef(self, original, updated):
        if not isinstance(updated.body, cst.IndentedBlock) or (updated.body.body and _is_docstring(updated.body.body[0])):
            return updated
        doc = cst.parse_statement(f'"""{updated.name.value}: documented."""\n')
        return updated.with_changes(body=updated.body.with_changes(body=[doc, *updated.body.body]))


class _BlankLines(cst.CSTTransformer):
    def leave_SimpleStatementLine(self, original, updated):
        return updated.with_changes(leading_lines=[cst.EmptyLine(), *updated.leading_lines])


# -- all of them --------------------------------------------------------------------------------

SINGLES = (renamed_anchors, reordered, decorated, commented, requoted, reformatted, removed_norm_sites,
           duplicated, moved_imports, assorted)


def single_mutations() -> list[Mutation]:
    return [m for make in SINGLES for m in make()]


def all_mutations(pairs: int = 60, seed: int = 5) -> list[Mutation]:
    """Every single mutation, then `pairs` random pairs of mutations of different kinds."""
    singles = single_mutations()
    rng = random.Random(seed)
    combined = []
    seen = set()
    while len(combined) < pairs:
        a, b = rng.sample(singles, 2)
        if a.kind == b.kind or (a.id, b.id) in seen:
            continue
        seen.add((a.id, b.id))
        combined.append(Mutation(f"{a.id}+{b.id}", "pair", f"{a.description}; then {b.description}",
                                 a.steps + b.steps))
    return singles + combined


def ci_subset() -> list[Mutation]:
    """A few variants of every kind, for the fast suite."""
    picked: dict[str, list[Mutation]] = {}
    for mutation in single_mutations():
        picked.setdefault(mutation.kind, []).append(mutation)
    rng = random.Random(7)
    return [m for kind in sorted(picked) for m in rng.sample(picked[kind], min(2, len(picked[kind])))]
