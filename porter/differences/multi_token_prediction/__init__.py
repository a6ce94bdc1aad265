"""Multi-token prediction layers (DeepSeek-V3's `num_nextn_predict_layers`): left out, as transformers does.

DeepSeek-V3's checkpoint holds, after its num_hidden_layers decoder layers, one more
(`model.layers.61.` in the 61-layer model: a decoder layer with its own embedding norms and
projection) that predicts a further token in training and drafts tokens at inference.
transformers' DeepseekV3 model builds only the decoder layers and ignores that one by name;
the port does too: `porter convert` reads none of its tensors and says it dropped them, and
an HF folder written from a checkpoint says it holds none (num_nextn_predict_layers = 0).
No spec field: the port trains the model without its extra prediction.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.hf_reading import class_defines

FIELD = "num_nextn_predict_layers"


class MultiTokenPrediction(Difference):
    name = "multi_token_prediction"
    changes_model = False
    hf_fields = (FIELD,)

    def dropped(self, config):
        count, layers = config.get(FIELD) or 0, config.get("num_hidden_layers")
        if not count or not isinstance(layers, int):
            return {}
        why = f"a multi-token prediction layer ({FIELD} = {count}), not part of transformers' model"
        return {f"model.layers.{layers + i}.": why for i in range(count)}

    def without_dropped(self, config):
        return {FIELD: 0} if config.get(FIELD) else {}

    def to_hf(self, spec, config):
        if class_defines(config.get("model_type"), FIELD, unknown=False):
            config[FIELD] = 0  # the port's weights hold no such layer
