"""Writes porter/hf_classes.json, the table of transformers' config classes of the model
types porter ports (their fields and defaults), which porter reads when transformers is not
installed: `python -m porter.hf_table` after a transformers upgrade, then review the diff."""

from __future__ import annotations

import json
from pathlib import Path

from porter.catalog import available_specs, load_spec
from porter.class_table import TABLE, class_table
from porter.hf_reading import _base_fields, _installed, _transformers, causal_lm_of, table_entry


def write_table(path: Path = TABLE) -> dict:
    """The table of the installed config classes porter ports (its families' model types)."""
    transformers = _transformers()
    if transformers is None:
        raise SystemExit("transformers is not installed: the table describes its config classes")
    types = set()
    for spec_path in available_specs().values():
        spec = load_spec(str(spec_path))
        if spec.hf_class:
            types.add(getattr(transformers, spec.hf_class).config_class.model_type)
    old = class_table()
    classes = {}
    for model_type in sorted(types):
        cls = _installed(model_type)
        classes[model_type] = {**table_entry(cls), "causal_lm": causal_lm_of(transformers, model_type)}
        if model_type in old.get("classes", {}) and "legacy" in old["classes"][model_type]:
            classes[model_type]["legacy"] = old["classes"][model_type]["legacy"]
    data = {"transformers": transformers.__version__, "base": sorted(_base_fields(transformers)), "classes": classes}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return data


if __name__ == "__main__":
    write_table()
    print(f"wrote {TABLE}")
