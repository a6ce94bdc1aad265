"""Detector: what options the tree's argument parser registers, and where it checks them."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst
import libcst.matchers as m

from porter.edits.base import code

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


@dataclass(frozen=True)
class ArgumentsProfile:
    path: str
    arguments: tuple[Argument, ...]
    group_functions: tuple[str, ...]
    checks_function: str | None  # the function holding `for key in defaults:`
    parse_function: str | None  # the function that builds the parser

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


def read_arguments(path: str, module: cst.Module) -> ArgumentsProfile:
    arguments: list[Argument] = []
    groups: list[str] = []
    checks = None
    parse = None
    for stmt in module.body:
        if not isinstance(stmt, cst.FunctionDef):
            continue
        name = stmt.name.value
        if m.findall(stmt, m.For(iter=m.Name("defaults"))) and checks is None:
            checks = name
        if m.findall(stmt, m.Call(func=m.Attribute(attr=m.Name("ArgumentParser")))):
            parse = name
        calls = m.findall(stmt, m.Call(func=m.Attribute(attr=m.Name("add_argument"))))
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
                )
            )
    return ArgumentsProfile(
        path=path,
        arguments=tuple(arguments),
        group_functions=tuple(groups),
        checks_function=checks,
        parse_function=parse,
    )
