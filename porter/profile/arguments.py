"""Detector: what options the tree's argument parser registers, and where it checks them."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from porter.cst import match as m
from porter.cst.find import findall
from porter.cst.nodes import code

# Options DeepSpeed's `deepspeed.add_config_arguments(parser)` adds to every tree.
DEEPSPEED_OPTIONS = {
    "--deepspeed": "deepspeed",
    "--deepspeed_config": "deepspeed_config",
    "--deepscale": "deepscale",
    "--deepscale_config": "deepscale_config",
}


@dataclass(frozen=True)
class Argument:
    options: tuple[str, ...]
    dest: str
    function: str  # the group function that registers it
    action: str | None
    default: str | None  # source text
    choices: tuple[str, ...] | None  # string choices, when a literal list
    keywords: dict[str, str] = field(default_factory=dict, hash=False, compare=False)  # name -> source

    @property
    def type(self) -> str | None:
        """Source of the `type=` keyword (e.g. 'int', 'lambda x: PositionEmbeddingType[x]')."""
        return self.keywords.get("type")


@dataclass(frozen=True)
class ArgumentsProfile:
    path: str
    arguments: tuple[Argument, ...]
    group_functions: tuple[str, ...]
    checks_function: str | None  # where the tree validates its args: the `for key in defaults:` loop's function,
    # else (defaults applied in initialize_megatron) the one deriving `if args.ffn_hidden_size is None:`
    parse_function: str | None  # the function that builds the parser
    required: tuple[str, ...] = ()  # the `required_args = [...]` list of the checks
    forbids_max_positions: bool = False  # asserts `args.max_position_embeddings is None` somewhere
    width_overrides: tuple[str, ...] = ()  # tests of `if`s that set args.ffn_hidden_size whatever was given
    imports: dict[str, str] = field(default_factory=dict, hash=False, compare=False)  # name -> import source

    def by_option(self, option: str) -> Argument | None:
        return next((a for a in self.arguments if option in a.options), None)

    def by_dest(self, dest: str) -> Argument | None:
        return next((a for a in self.arguments if a.dest == dest), None)

    @property
    def dests(self) -> set[str]:
        return {a.dest for a in self.arguments} | set(DEEPSPEED_OPTIONS.values())

    @property
    def options(self) -> set[str]:
        return {o for a in self.arguments for o in a.options} | set(DEEPSPEED_OPTIONS)


def _dest_of(options: list[str], keywords: dict[str, cst.BaseExpression]) -> str:
    if "dest" in keywords and isinstance(keywords["dest"], cst.SimpleString):
        return keywords["dest"].evaluated_value
    longs = [o for o in options if o.startswith("--")]
    name = (longs or options)[0].lstrip("-")
    return name.replace("-", "_")


def top_level_imports(module: cst.Module) -> dict[str, str]:
    """name -> an import statement that binds just that name, as the module imports it.

    `from megatron.utils import a, b` gives 'b' -> 'from megatron.utils import b'.
    """
    found: dict[str, str] = {}
    for stmt in module.body:
        if not m.matches(stmt, m.SimpleStatementLine(body=[m.Import() | m.ImportFrom()])):
            continue
        node = stmt.body[0]
        if isinstance(node.names, cst.ImportStar):
            continue
        for alias in node.names:
            imported = code(alias.name)
            bound = code(alias.asname.name) if alias.asname is not None else imported
            as_part = f" as {bound}" if alias.asname is not None else ""
            if isinstance(node, cst.Import):
                name = bound.split(".")[0]
                source = f"import {imported}{as_part}"
            else:
                name = bound
                where = "." * len(node.relative) + (code(node.module) if node.module is not None else "")
                source = f"from {where} import {imported}{as_part}"
            found.setdefault(name, source)
    return found


def _required_args(module: cst.Module) -> tuple[str, ...]:
    for assign in findall(module, m.Assign(targets=[m.AssignTarget(target=m.Name("required_args"))], value=m.List())):
        return tuple(
            e.value.evaluated_value for e in assign.value.elements if isinstance(e.value, cst.SimpleString)
        )
    return ()


def _forbids_max_positions(module: cst.Module) -> bool:
    none_test = m.Comparison(
        left=m.Attribute(value=m.Name("args"), attr=m.Name("max_position_embeddings")),
        comparisons=[m.ComparisonTarget(operator=m.Is(), comparator=m.Name("None"))],
    )
    return bool(findall(module, m.Assert(test=none_test)))


# `if args.ffn_hidden_size is None:`: where every Megatron tree derives its default widths
FFN_DEFAULT = m.If(test=m.Comparison(
    left=m.Attribute(value=m.Name("args"), attr=m.Name("ffn_hidden_size")),
    comparisons=[m.ComparisonTarget(operator=m.Is(), comparator=m.Name("None"))],
))
SETS_WIDTH = m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(
    target=m.Attribute(value=m.Name("args"), attr=m.Name("ffn_hidden_size")))])])


def width_overrides(function: cst.FunctionDef | None) -> tuple[str, ...]:
    """The tests of `if` blocks that set args.ffn_hidden_size outside the `is None` default
    (microsoft July 2023: `if args.swiglu: args.ffn_hidden_size = int(2/3 * 4h / 64) * 64`):
    they replace any width, given or derived."""
    if function is None:
        return ()
    inside_default = {id(node) for default in findall(function, FFN_DEFAULT) for node in findall(default, m.If())}
    return tuple(
        code(node.test) for node in findall(function, m.If())
        if id(node) not in inside_default and "ffn_hidden_size" not in code(node.test)
        and any(m.matches(s, SETS_WIDTH) for s in node.body.body)
    )


def read_arguments(path: str, module: cst.Module) -> ArgumentsProfile:
    # The whole module is searched first: porter.cst.find then indexes it once, and the searches
    # of each function below are lookups in that index.
    required = _required_args(module)
    forbids_max_positions = _forbids_max_positions(module)
    arguments: list[Argument] = []
    groups: list[str] = []
    checks = None
    derives = None
    overrides: tuple[str, ...] = ()
    parse = None
    for stmt in module.body:
        if not isinstance(stmt, cst.FunctionDef):
            continue
        name = stmt.name.value
        if findall(stmt, m.For(iter=m.Name("defaults"))) and checks is None:
            checks = name
        if derives is None and findall(stmt, FFN_DEFAULT):
            derives = name
            overrides = width_overrides(stmt)
        if findall(stmt, m.Call(func=m.Attribute(attr=m.Name("ArgumentParser")))):
            parse = name
        calls = findall(stmt, m.Call(func=m.Attribute(attr=m.Name("add_argument"))))
        if calls and name.startswith("_add_"):
            groups.append(name)
        for call in calls:
            options = [
                a.value.evaluated_value
                for a in call.args
                if a.keyword is None and isinstance(a.value, cst.SimpleString)
            ]
            options = [o for o in options if isinstance(o, str) and o.startswith("-")]
            if not options:
                continue
            keywords = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
            choices = None
            if isinstance(keywords.get("choices"), (cst.List, cst.Tuple)):
                values = [e.value for e in keywords["choices"].elements]
                if all(isinstance(v, cst.SimpleString) for v in values):
                    choices = tuple(v.evaluated_value for v in values)
            action = keywords.get("action")
            arguments.append(
                Argument(
                    options=tuple(options),
                    dest=_dest_of(options, keywords),
                    function=name,
                    action=action.evaluated_value if isinstance(action, cst.SimpleString) else None,
                    default=code(keywords["default"]) if "default" in keywords else None,
                    choices=choices,
                    keywords={key: code(value) for key, value in keywords.items()},
                )
            )
    return ArgumentsProfile(
        path=path,
        arguments=tuple(arguments),
        group_functions=tuple(groups),
        checks_function=checks or derives,
        parse_function=parse,
        required=required,
        forbids_max_positions=forbids_max_positions,
        width_overrides=overrides,
        imports=top_level_imports(module),
    )
