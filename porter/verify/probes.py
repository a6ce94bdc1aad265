"""verify's side of the probes (porter.probe): each tree value oriented as HF's, the
tensor-parallel ranks' values joined, and HF's own values captured."""

from __future__ import annotations

import torch

from porter.layout import WeightLayout
from porter.probe import LOGITS, Probe


def pipe_module(probe: Probe, num_layers: int, layout=None) -> str:
    """The probe's module path in the generated <Prefix>ModelPipe (named by layer spec index)."""
    order = layout if layout is not None else WeightLayout()
    index = {"embedding": order.pipe_embedding, "layer": order.pipe_layer(probe.layer),
             "final_norm": order.pipe_final_norm(num_layers), "output": order.pipe_output_layer(num_layers)}[probe.site]
    return f"{index}.{probe.path}" if probe.path else str(index)


def orient(probe: Probe, value: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A tree value to [b, s, ...]: inside the layer stack the tree works in [s, b, ...].

    Embedding, final norm and logits are [b, s, ...] in porter's port, [s, b, ...] in trees
    that keep that order outside the stack too (microsoft HEAD): the batch dimension says which.
    """
    if probe.reshape is not None:
        value = probe.reshape(value, batch_size)
    if probe.site == "layer" or (value.shape[0] != batch_size and value.shape[1] == batch_size):
        return value.transpose(0, 1)
    return value


def combine(probe: Probe, ranks: list[torch.Tensor]) -> torch.Tensor:
    """The tensor-parallel ranks' values (in rank order, already oriented) as one tensor."""
    if probe.combine == "same" or len(ranks) == 1:
        return ranks[0]
    if probe.combine == "cat":
        return torch.cat(ranks, dim=-1)
    if probe.combine == "query_key":  # [b, s, np/p + ng/p, hn] per rank: its queries, then its keys
        queries = probe.heads // len(ranks)
        return torch.cat([r[:, :, :queries] for r in ranks] + [r[:, :, queries:] for r in ranks], dim=2)
    if probe.combine == "gate_up":  # rank r holds [gate_r | up_r]
        halves = [r.chunk(2, dim=-1) for r in ranks]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=-1)
    raise ValueError(probe.combine)


def _kept(value):
    """A module's output as captures keep it: tensors detached and copied, anything else as is."""
    if isinstance(value, tuple):
        return tuple(_kept(v) for v in value)
    return value.detach().clone() if torch.is_tensor(value) else value


def capture_hf(model, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Run HF's model on tokens [b, s] (at position ids [b, s], default 0..s-1); return
    (logits [b, s, V], captures by module name)."""
    captures: dict[str, object] = {}
    handles = []

    def keep(name):
        def hook(module, args, kwargs, output):
            captures[name] = _kept(output)
            hidden = args[0] if args else kwargs.get("hidden_states")
            if torch.is_tensor(hidden):
                captures[f"{name}:input"] = hidden.detach().clone()
            if kwargs.get("position_embeddings") is not None:  # the rotary angles this module was given
                captures[f"{name}:position_embeddings"] = _kept(kwargs["position_embeddings"])
        return hook

    # every module's output and its hidden-states input: what a probe reads is there, whatever
    # its family's modules are; and the rotary angles each was handed (a model with a rotary per
    # layer type gives each layer its own)
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(keep(name), with_kwargs=True))
    try:
        with torch.no_grad():
            # An explicit all-ones mask: HF attends causally over the whole row, as the tree does with
            # --reset-position-ids alone (without one, HF would read reset ids as packed documents).
            keep = torch.ones_like(tokens)
            if positions is None:
                positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens)
            logits = model(input_ids=tokens, position_ids=positions, attention_mask=keep, use_cache=False).logits
        captures[LOGITS] = logits.detach().clone()
    finally:
        for handle in handles:
            handle.remove()
    return logits.detach(), captures
