"""Word embeddings scaled by sqrt(hidden) before the first layer, the factor in the model's dtype (Gemma).

Spec: `embeddings.scale` (GPT: false; Gemma: true). HF's Gemma multiplies the token
embeddings by torch.tensor(hidden ** 0.5, dtype=embeds.dtype); the tied output projection
uses the embedding weight itself, unscaled. porter adds the switch `--scale-embeddings`
and rewrites the tree's Embedding: the constructor records the switch, the forward pass
scales the lookup's result right after it (before positions, token types and dropout). The
plain and the pipe model share the Embedding (EmbeddingPipe calls its forward), so both
scale; the weights are unchanged, so conversion has nothing to do.
HF: none (implicit in Gemma's modeling code; the family's spec says it).
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.embedding_scale import rewrites as R
from porter.planner import rw
from porter.profile import LANGUAGE_MODEL
from porter.profile.features import NETWORK, Spelling
from porter.schema import flag

SWITCH = "embedding_scale"


class EmbeddingScale(Difference):
    name = SWITCH
    model_switches = ('embedding_scale',)
    fields = {"embeddings.scale": flag(False, help="multiply the word embeddings by sqrt(hidden) (Gemma)")}
    spellings = {
        SWITCH: (
            Spelling(
                SWITCH, "--scale-embeddings", "scale_embeddings", True, "args.scale_embeddings", NETWORK,
                (("action", "'store_true'"),
                 ("help", "'Multiply the word embeddings by sqrt(hidden size), the factor in their dtype (Gemma).'")),
            ),
        ),
    }

    def wanted(self, spec):
        return spec["embeddings.scale"]

    def plan(self, p):
        p.describe_model("word embeddings times sqrt(hidden), the factor in their dtype (--scale-embeddings)")
        spelling = p.switch(SWITCH)
        p.import_into(LANGUAGE_MODEL, SWITCH, "import torch", "the scale is a tensor in the embeddings' dtype")
        p.edit(LANGUAGE_MODEL, SWITCH, "the Embedding records whether its word embeddings are scaled",
               rw(R.EmbeddingScaleInit, cls="Embedding", test=spelling.test))
        p.edit(LANGUAGE_MODEL, SWITCH, "the Embedding scales the word embeddings by sqrt(hidden) in their dtype",
               rw(R.EmbeddingScaleForward, cls="Embedding"))
