"""An earlier port's partial rotary in porter's own rotary embedding: the generated
megatron/model/rotary_embedding.py whose RotaryEmbedding takes `rotary_percent` (a family
ported before into the same tree rotates part of each head, and its attention passes the
keyword). porter rewrites that file whole on every apply, so a later spec without partial
rotary must keep the keyword and the pass-through (PartialRotary.kept)."""

from __future__ import annotations

from porter.cst.find import class_named, function_named
from porter.source import GENERATED_MARK

ROTARY_FILE = "megatron/model/rotary_embedding.py"  # porter's own rotary embedding (the rotary difference's)
KEYWORD = "rotary_percent"


def detect(parsed) -> dict[str, str] | None:
    """The facts (`porter inspect` prints them) where porter's generated RotaryEmbedding takes
    the keyword, else None."""
    module = parsed(ROTARY_FILE)
    if module is None or not any(GENERATED_MARK in line.comment.value for line in module.header if line.comment):
        return None
    init = function_named(class_named(module, "RotaryEmbedding"), "__init__")
    if init is None or not any(param.name.value == KEYWORD for param in init.params.params):
        return None
    return {"file": ROTARY_FILE, "takes": KEYWORD}
