"""A spec field as data: its types, allowed values or bounds, and GPT's value (the base).

Every difference (porter/differences/) declares the fields it owns with these; the spec loader
validates a spec's TOML against all of them, and every error names the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
               list: "a list of numbers"}


@dataclass(frozen=True)
class Field:
    """One spec field. `base` is GPT's value, also the value when the field is left out;
    a base of None means "not set" (e.g. head_dim: hidden / heads)."""

    kinds: tuple[type, ...]
    base: Any
    choices: tuple = ()  # the strings allowed, when the value is a string
    low: float | None = None  # exclusive lower bound for numbers
    high: float | None = None  # exclusive upper bound for numbers
    help: str = ""
    item: type = float  # a list's items: int (layer indices, maybe none) or float (one or more numbers)

    def describe(self) -> str:
        parts = []
        numbers = [k for k in self.kinds if k in (int, float)]
        if numbers:
            text = "a number" if float in numbers else "a whole number"
            bounds = []
            if self.low is not None:
                bounds.append(f"> {self.low:g}")
            if self.high is not None:
                bounds.append(f"< {self.high:g}")
            parts.append(text + (" " + " and ".join(bounds) if bounds else ""))
        if str in self.kinds:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices) if self.choices else "a string")
        if list in self.kinds and self.item is int:
            parts.append("a list of whole numbers" + (f" >= {self.low + 1:g}" if self.low is not None else ""))
        elif list in self.kinds:
            parts.append(_KIND_NAMES[list] + (f" each > {self.low:g}" if self.low is not None else ""))
        if bool in self.kinds:
            parts.append(_KIND_NAMES[bool])
        return ", or ".join(parts)

    def check(self, value: Any) -> Any:
        """The value, typed (an int where a float is wanted becomes a float); ValueError if not allowed.
        None (not set) is allowed where the base is None."""
        if value is None and self.base is None:
            return None
        if isinstance(value, (list, tuple)) and list in self.kinds:
            return self._whole_numbers(value) if self.item is int else self._numbers(value)
        if isinstance(value, bool):
            if bool not in self.kinds:
                raise ValueError(self.describe())
            return value
        if isinstance(value, int) and int not in self.kinds and float in self.kinds:
            value = float(value)
        if isinstance(value, str):
            if str not in self.kinds or (self.choices and value not in self.choices):
                raise ValueError(self.describe())
            return value
        if isinstance(value, (int, float)) and type(value) in self.kinds:
            if self.low is not None and not value > self.low:
                raise ValueError(self.describe())
            if self.high is not None and not value < self.high:
                raise ValueError(self.describe())
            return value
        raise ValueError(self.describe())


    def _whole_numbers(self, values) -> list[int]:
        """A list of whole numbers, each above `low` (maybe empty: layer indices)."""
        if not all(isinstance(v, int) and not isinstance(v, bool) and (self.low is None or v > self.low)
                   for v in values):
            raise ValueError(self.describe())
        return list(values)

    def _numbers(self, values) -> list[float]:
        """A list of numbers, each a float above `low` (a non-empty list)."""
        if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            raise ValueError(self.describe())
        if self.low is not None and not all(v > self.low for v in values):
            raise ValueError(self.describe())
        return [float(v) for v in values]


def number(base: Any, *, whole: bool = False, low: float | None = 0.0, high: float | None = None,
           help: str = "") -> Field:
    return Field((int,) if whole else (float,), base, low=low, high=high, help=help)


def choice(base: str, *choices: str, help: str = "") -> Field:
    return Field((str,), base, choices=tuple(choices), help=help)


def whole_numbers(base: list | None, *, low: float | None = -1, help: str = "") -> Field:
    """A list of whole numbers (layer indices: each > low)."""
    return Field((list,), base, low=low, help=help, item=int)


def flag(base: bool | None, help: str = "") -> Field:
    return Field((bool,), base, help=help)


def numbers(base: list | None = None, *, low: float | None = 0.0, help: str = "") -> Field:
    """A list of numbers (longrope's factor per rotary frequency), each a float above `low`."""
    return Field((list,), base, low=low, help=help)
