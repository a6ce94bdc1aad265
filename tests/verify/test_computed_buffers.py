"""Verify names the tensors a tree's code computes itself (buffers: a rotary embedding's saved
inv_freq) whose values differ from the converted checkpoint's: loading it would overwrite them
and hide the code that computes them wrongly (Gemma-3's local layers built with the global
base on Habana 7086aadb passed verify that way)."""

from __future__ import annotations

import torch

from porter.verify.harness import computed_differently

MADE = ("inv_freq",)  # the layer keys the conversion makes from the config


class Layer(torch.nn.Module):
    def __init__(self, base: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(4))
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, 8, 2).float() / 8)))
        self.register_buffer("correction", torch.zeros(4))  # data the load fills (read from HF), not computed


class Model(torch.nn.Module):
    def __init__(self, bases) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(Layer(b) for b in bases)

    def state_dict_for_save_checkpoint(self):
        return self.state_dict()


def saved(tmp_path, model: Model) -> None:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["layers.0.weight"] += 1  # a parameter: the load sets it, nothing the tree computes
    state["layers.0.correction"] += 1  # a buffer the conversion reads from HF: the load sets it too
    torch.save({"module": state}, tmp_path / "mp_rank_00_model_states.pt")
    for index, layer in enumerate(model.layers):
        torch.save(layer.state_dict(), tmp_path / f"layer_{index:02d}-model_00-model_states.pt")


def test_buffers_computed_as_the_weights_hold_them_pass(tmp_path):
    saved(tmp_path, Model([1e4, 1e6]))
    assert computed_differently(Model([1e4, 1e6]), "model", tmp_path, 0, MADE) == []


def test_broken_on_purpose_a_buffer_computed_otherwise_is_named_in_both_kinds(tmp_path):
    saved(tmp_path, Model([1e4, 1e6]))
    wrong = Model([1e6, 1e6])  # the local layer built with the global base
    (found,) = computed_differently(wrong, "model", tmp_path, 0, MADE)
    assert found["tensor"] == "layers.0.inv_freq" and "computes it otherwise" in found["problem"]
    pipe = torch.nn.Sequential(*wrong.layers)  # numbered children, one checkpoint file each
    assert [p["tensor"] for p in computed_differently(pipe, "pipe", tmp_path, 0, MADE)] == ["0.inv_freq"]
