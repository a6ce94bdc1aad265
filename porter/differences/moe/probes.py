"""What verify compares for a sparse MLP: the router's decision, then the MoE layer's output."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from porter.differences.moe.weights import sparse_layers
from porter.probe import LayerProbes

ROUTES = "porter.differences.moe.probes:routes"


def routes(module, args, output) -> torch.Tensor:
    """Each token's weight per expert [S, experts] from DeepSpeed's sparse gate output
    (l_aux, capacity, experts, indices [k, S], locations, weights [k, S], counts); an index below
    0 is a route dropped for capacity: no weight."""
    import torch
    experts, indices, weights = int(output[2]), output[3].long(), output[5].float()
    dense = torch.zeros(indices.shape[1], experts)
    kept = indices >= 0
    return dense.scatter_add(1, indices.clamp(min=0).t(), (weights * kept).t())


def _tokens_in_layer_order(value: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[s * b, experts]: the tokens of the layer's [s, b] in a row -> [s, b, experts]."""
    return value.reshape(-1, batch_size, *value.shape[1:])


def expert_probes(layer: LayerProbes) -> None:
    """DeepSpeed's MoE layer as the MLP: its router's decision (each token's weight per expert:
    the top-k of the softmax, renormalised where the model does; 0 elsewhere), then the layer's
    output (the experts' outputs summed with those weights). A layer the model keeps dense keeps
    the MLP's probes."""
    import torch
    if not sparse_layers(layer.config, layer.num_layers)[layer.i]:
        return
    m = layer.layout.mlp

    def hf_routes(c, hf=layer.hf):
        """HF's router: (logits, top-k weights, top-k experts) -> each token's weight per expert."""
        b, s = c["model.embed_tokens"].shape[:2]
        logits, weights, experts = c[f"{hf}.mlp.gate"]
        dense = torch.zeros_like(logits, dtype=torch.float32).scatter(1, experts, weights.float())
        return dense.reshape(b, s, -1)

    layer.replace("mlp_in", [layer.probe(f"{m}.deepspeed_moe.gate", "MoE router: each token's weight per expert "
                                         "(top-k of the softmax)", hf_routes, take=ROUTES,
                                         reshape=_tokens_in_layer_order)])
    layer.replace("mlp_act", [])
    layer.replace("mlp_out", [layer.probe(m, "MoE layer: top-k experts per token, weighted by the router", layer.ref("mlp"))])
