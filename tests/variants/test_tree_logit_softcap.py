"""Gemma-2's soft-capped logits where the tree's own GPT classes carry the port (the "flags" port of
microsoft HEAD: no generated model module, so no template `logits` slot): the cap goes into the tree's
megatron/model/gpt_model.py, where its post-processing computes the logits and as a layer after its
pipeline model's head (issue 20, a gap met on microsoft HEAD).

Cheap: final_logit_softcap's own edits (Difference.tree_logits) planned on the variant and written,
then the tree's post_language_model_processing and GPTModelPipe run in one subprocess (a few seconds)."""

from __future__ import annotations

import json

import pytest

from porter.catalog import load_spec, profile_of
from porter.differences.softcap.final import FinalLogitSoftcap
from porter.planner import Planner
from porter.source import SourceTree
from porter.workspace import Workspace
from tests.variants.conftest import python_in_tree
from tests.variants.variants import make_variant

GEMMA2 = load_spec("gemma2")
GPT_MODEL = "megatron/model/gpt_model.py"

# The ported tree's logits against cap * tanh(logits / cap) computed here, with the cap on (2.0) and
# off: the plain model's post-processing (logits, and per-token losses), its chunked-loss branch, and
# the pipe's layer right after its tied head.
CHECK = """
    import json, sys
    sys.argv = ["pretrain_gpt.py", "--num-layers", "1", "--hidden-size", "64", "--num-attention-heads", "4",
                "--seq-length", "8", "--max-position-embeddings", "8", "--micro-batch-size", "1",
                "--distributed-backend", "gloo", "--final-logit-softcap", "2.0"]
    import torch
    import torch.nn.functional as F
    from megatron import get_args
    from megatron.initialize import initialize_megatron
    from megatron.model.gpt_model import GPTModelPipe, post_language_model_processing
    from megatron.model.logit_softcap import softcap_logits

    initialize_megatron()
    args = get_args()
    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 8, 64), torch.randn(96, 64)
    labels = torch.randint(0, 96, (2, 8))
    raw = hidden @ weight.t()
    capped = 2.0 * torch.tanh(raw / 2.0)
    losses = F.cross_entropy(capped.reshape(-1, 96), labels.reshape(-1), reduction="none").view(2, 8)

    def plain():
        logits = post_language_model_processing(hidden, None, weight, False, True, None, False)
        loss = post_language_model_processing(hidden, labels, weight, False, True, None, False)
        return {"logits": (logits - capped).abs().max().item(), "loss": (loss - losses).abs().max().item()}

    found = {"cap": args.final_logit_softcap, "plain": plain()}
    args.padded_vocab_size = 96  # no tokenizer here
    pipe = GPTModelPipe(num_tokentypes=0, parallel_output=True)
    at = pipe.forward_funcs.index(softcap_logits)
    head = pipe.forward_funcs[at - 1]
    found["pipe"] = {"after_head": getattr(head, "func", head).__name__, "layers": len(pipe.forward_funcs), "at": at,
                     "logits": (pipe.forward_funcs[at](raw) - capped).abs().max().item()}
    args.chunked_logits_loss = True
    try:
        post_language_model_processing(hidden, labels, weight, False, True, None, False)
        found["chunked"] = "ran"
    except AssertionError as refused:
        found["chunked"] = str(refused)
    args.chunked_logits_loss = False
    # broken on purpose: the cap off, the same checks see the logits uncapped
    args.final_logit_softcap = None
    found["off"] = {**plain(), "pipe_layers": len(GPTModelPipe(num_tokentypes=0, parallel_output=True).forward_funcs)}
    print("FOUND", json.dumps(found))
"""


@pytest.fixture(scope="module")
def capped_tree(tmp_path_factory):
    """The variant with final_logit_softcap's edits for a port that has no model template."""
    root = make_variant("chunked_logits_loss", tmp_path_factory.mktemp("tree_logits") / "Megatron-DeepSpeed")
    profile = profile_of(SourceTree.open(root))
    p = Planner(GEMMA2, profile)
    difference = FinalLogitSoftcap()
    difference.plan(p)
    assert difference.tree_logits(p)
    for change in Workspace(SourceTree.open(root)).render(p.plan("flags")):
        (root / change.path).write_bytes(change.after)
    return root, p


def test_the_cap_is_planned_in_the_trees_gpt_model(capped_tree):
    root, p = capped_tree
    names = [(e.file, e.name) for e in p.edits if e.rewrite is not None]
    assert (GPT_MODEL, "CapPlainLogits") in names and (GPT_MODEL, "CapPipeLogits") in names
    text = (root / GPT_MODEL).read_text()
    assert text.count("output = softcap_logits(output)") == 1 and text.count("self.specs.append(softcap_logits)") == 1
    # after the head, before the fp32 conversion; the chunked branch refuses a set cap
    assert text.index("forward_fn=_logits_helper") < text.index("self.specs.append(softcap_logits)") < \
        text.index("self.specs.append(float16_to_fp32)")
    assert "assert get_args().final_logit_softcap is None" in text
    assert (root / "megatron/model/logit_softcap.py").is_file()


def test_a_second_run_of_the_rewrites_changes_nothing(capped_tree):
    root, _ = capped_tree
    profile = profile_of(SourceTree.open(root))
    p = Planner(GEMMA2, profile)
    FinalLogitSoftcap().plan(p)
    FinalLogitSoftcap().tree_logits(p)
    changed = [c.path for c in Workspace(SourceTree.open(root)).render(p.plan("flags"))
               if c.before is not None and c.after != c.before.data]
    assert changed == []


def test_the_plain_and_pipe_logits_are_capped(capped_tree):
    root, _ = capped_tree
    found = json.loads(python_in_tree(root, CHECK).split("FOUND ", 1)[1].splitlines()[0])
    print(f"found: {found}")
    assert found["cap"] == 2.0
    assert found["plain"]["logits"] <= 1e-5 and found["plain"]["loss"] <= 1e-5, found
    assert found["pipe"]["after_head"] == "_logits_helper", found  # the tied head's forward_fn
    assert found["pipe"]["logits"] <= 1e-6, found
    assert "--final-logit-softcap" in found["chunked"], found
    # broken on purpose: without the cap the same checks fail, and the pipe has one layer less
    assert found["off"]["logits"] > 0.5 and found["off"]["loss"] > 1e-2, found
    assert found["off"]["pipe_layers"] == found["pipe"]["layers"] - 1, found
