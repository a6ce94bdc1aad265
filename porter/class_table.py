"""porter's table of transformers' config classes (hf_classes.json, written by `python -m
porter.hf_table`): their fields, defaults and causal-LM classes, read where transformers is not
installed (porter.hf_reading, porter.multimodal)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

TABLE = Path(__file__).with_name("hf_classes.json")


@functools.cache
def class_table() -> dict:
    if not TABLE.is_file():
        return {"classes": {}, "base": [], "transformers": "none"}
    return json.loads(TABLE.read_text(encoding="utf-8"))
