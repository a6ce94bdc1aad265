"""A config.json through transformers' own config class, its refusal said as porter's: the file,
the class, the field its check names (porter.hf_reading for a text model's file,
porter.multimodal for a multimodal model's outer one)."""

from __future__ import annotations

import copy

from porter.errors import PorterError

# what transformers' config classes raise on a file they refuse (besides huggingface_hub's
# validation errors): its own checks, and a validator dividing by a field set to 0
REFUSALS = (TypeError, ValueError, KeyError, ArithmeticError)


def from_dict(cls, raw: dict, path: str):
    """`cls.from_dict(raw)` (raw left as it is: transformers fills nested dicts in place), with
    transformers' warnings silenced; refused by name where the class refuses the file."""
    import transformers

    logger = transformers.utils.logging
    level = logger.get_verbosity()
    logger.set_verbosity_error()
    try:
        return cls.from_dict(copy.deepcopy(raw))
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is one of the class's refusals
        if not isinstance(exc, REFUSALS) and not type(exc).__module__.startswith("huggingface_hub"):
            raise
        raise PorterError(f"transformers' {cls.__name__} refuses this config.json", file=path,
                          construct=f"a config {cls.__name__} reads", found=first_reason(exc),
                          fix="fix the field it names (transformers could not load this model either)") from None
    finally:
        logger.set_verbosity(level)


def first_reason(exc: Exception) -> str:
    """The line of transformers' refusal that names the field (a validation error's last line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if type(exc).__module__.startswith("huggingface_hub") and lines else lines[0] if lines else repr(exc)
