"""A spec may state only its delta from another (`extends = "llama"`), as HF's modular files do."""

import pytest

from porter.catalog import load_spec
from porter.errors import PorterError


def write(tmp_path, name, text):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_a_spec_extending_llama_is_llama_with_its_delta(tmp_path):
    path = write(tmp_path, "long_llama", '''
extends = "llama"

[model]
name = "long_llama"
class_prefix = "LongLLaMA"
description = "LLaMA with 8 key/value heads and a 4096-position context"

[attention]
num_query_groups = 8

[sizes]
max_position_embeddings = 4096

[training_defaults]
clip_grad = 0.5
''')
    spec, llama = load_spec(str(path)), load_spec("llama")
    assert spec.extends == "llama" and spec.name == "long_llama" and spec.script == "pretrain_long_llama.py"
    assert spec.hf_class == llama.hf_class  # inherited; the rest of [model] is the spec's own
    differ = {k for k in spec.values if spec[k] != llama[k]}
    assert differ == {"attention.num_query_groups", "sizes.max_position_embeddings"}
    assert spec.training_defaults == {**llama.training_defaults, "clip_grad": 0.5}


def test_extends_chains_and_a_loop_is_refused(tmp_path):
    write(tmp_path, "a", 'extends = "llama"\n[model]\nname = "a"\nclass_prefix = "A"\n[norm]\neps = 1e-5\n')
    b = write(tmp_path, "b", f'extends = "{tmp_path / "a.toml"}"\n[model]\nname = "b"\nclass_prefix = "B"\n')
    assert load_spec(str(b))["norm.eps"] == 1e-5 and load_spec(str(b))["activation.type"] == "swiglu"
    write(tmp_path, "c", f'extends = "{tmp_path / "d.toml"}"\n[model]\nname = "c"\nclass_prefix = "C"\n')
    d = write(tmp_path, "d", f'extends = "{tmp_path / "c.toml"}"\n[model]\nname = "d"\nclass_prefix = "D"\n')
    with pytest.raises(PorterError) as info:
        load_spec(str(d))
    assert "loop" in info.value.message and "c.toml" in info.value.found


def test_an_unknown_base_is_refused_by_name(tmp_path):
    path = write(tmp_path, "x", 'extends = "lama"\n[model]\nname = "x"\nclass_prefix = "X"\n')
    with pytest.raises(PorterError) as info:
        load_spec(str(path))
    assert info.value.message == "unknown model 'lama'" and "llama" in info.value.found


def test_a_difference_module_that_does_not_import_is_refused_by_name(tmp_path):
    path = write(tmp_path, "x", 'differences_from = ["no_such_porter_plugin"]\n[model]\nname = "x"\nclass_prefix = "X"\n')
    with pytest.raises(PorterError) as info:
        load_spec(str(path))
    assert "no_such_porter_plugin" in info.value.message and "PYTHONPATH" in info.value.fix
