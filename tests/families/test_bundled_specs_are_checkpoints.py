"""Each bundled spec (model_diffs/*.toml) is one published checkpoint, named in its description,
or says plainly that it is a template: with the checkpoint's sizes, its config.json is the
published one as transformers reads it, every field the modeling code reads."""

import re

import pytest

from porter.hf_config import hf_config_of
from porter.hf_reading import OUTSIDE_FORWARD, reading
from porter.catalog import available_specs, load_spec
from tests.families.battery import DATA, published
from tests.families.test_battery_reading import transformers_reads

SIZES = {"sizes.num_layers": "num_hidden_layers", "sizes.hidden_size": "hidden_size",
         "sizes.num_attention_heads": "num_attention_heads", "sizes.vocab_size": "vocab_size",
         "sizes.max_position_embeddings": "max_position_embeddings"}
PORTED = [name for name, path in available_specs().items() if load_spec(str(path)).hf_class]


def checkpoint_of(spec) -> str | None:
    found = re.search(r"\(([\w.-]+)/([\w.-]+)\)", spec.description)
    return f"{found.group(1)}--{found.group(2)}" if found else None


@pytest.mark.parametrize("name", PORTED)
def test_the_bundled_spec_is_the_checkpoint_it_names(name):
    spec = load_spec(name)
    stem = checkpoint_of(spec)
    if stem is None:
        assert "template" in spec.description, f"{name}: name the published checkpoint, or say it is a template"
        return
    assert (DATA / f"{stem}.json").is_file(), f"{name} names {stem}: add its config.json to the battery"
    config = published(stem)
    read = reading(config)
    for field, hf in SIZES.items():  # the spec's own sizes are the checkpoint's; the rest are the command line's
        assert spec[field] in (None, read[hf]), (field, spec[field], read[hf])
    sized = spec.with_values(**{field: read[hf] for field, hf in SIZES.items()})
    mine, theirs = transformers_reads(hf_config_of(sized)), transformers_reads(config)
    meaningful = {n for n in read.cls.reads if n in theirs and n not in OUTSIDE_FORWARD}
    assert {n: mine[n] for n in meaningful} == {n: theirs[n] for n in meaningful}
