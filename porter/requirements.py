"""What a command needs installed beyond porter's core, and the pip line when it is missing.

porter's core (diff, apply, revert, ...) needs only libcst, jinja2 and typer. Training
(`porter smoke`) needs the `train` extra, the HF comparison (`porter verify`) the `parity`
extra. A missing one is an environment error: exit status 2, with the line that installs it.
"""

from __future__ import annotations

import importlib.util

from porter.errors import PorterError

EXTRAS = {
    "train": ("torch", "deepspeed", "sentencepiece", "numpy"),
    "parity": ("torch", "deepspeed", "sentencepiece", "numpy", "transformers"),
}


def missing(extra: str) -> list[str]:
    """The import names of `extra` that cannot be found here."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require(extra: str, command: str) -> None:
    """Refuse (exit status 2) when a package of `extra` is not installed."""
    absent = missing(extra)
    if absent:
        raise PorterError(
            f"{command} needs {', '.join(absent)}, which this Python does not have "
            f"(the environment, not the port)",
            construct=f"the packages of porter's {extra!r} extra", found=f"no module {', '.join(absent)}",
            fix=f"pip install 'porter[{extra}]' (with torch: pip install torch==2.13.0 'porter[{extra}]')",
        )
