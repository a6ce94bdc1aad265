"""The model checks can fail: each hand-broken port below is caught, the true port passes.

A check that cannot fail proves nothing; these are the silent breakages the mutation and
combination sweeps look for, made on purpose in a correctly ported sample tree.
"""

import shutil

from porter.catalog import load_spec
from tests.helpers.port_check import check_trees, job
from tests.helpers.trees import edited_copy

# name -> (file, old text, new text, a word the problem report must contain)
BREAKAGES = {
    "rotary built but not applied": (
        "megatron/model/transformer.py",
        "query_layer, key_layer = self.rotary_emb(query_layer, key_layer, offset=offset)", "pass",
        "never called",
    ),
    "swiglu halves swapped": (
        "megatron/model/swiglu.py", "gate, up = torch.chunk(x, 2, dim=-1)", "up, gate = torch.chunk(x, 2, dim=-1)",
        "reference",
    ),
    "a norm site left LayerNorm": (
        "megatron/model/transformer.py", "self.post_attention_layernorm = norm_class(",
        "self.post_attention_layernorm = LayerNorm(", "not RMSNorm",
    ),
    "GPT's default changed": (
        "megatron/arguments.py", "default='layernorm',", "default='rmsnorm',", "GPT",
    ),
    "checkpoint misses the output layer": (
        "megatron/model/llama_model.py",
        "state_dict_[self._output_layer_key] = self.output_layer.state_dict(prefix=prefix, keep_vars=keep_vars)",
        "pass", "exception",
    ),
    "MLP width rule wrong": (
        "megatron/arguments.py", "multiple = args.ffn_multiple_of", "multiple = 1", "MLP width",
    ),
    "pipe loses its final norm": (
        "megatron/model/llama_model.py",
        "self.specs.append(LayerSpec(_final_norm_class(args), args.hidden_size, eps=args.layernorm_epsilon))",
        "pass", "final norm",
    ),
    "a module that is never used": (
        "megatron/model/rmsnorm.py", "self.weight = torch.nn.Parameter(torch.full((hidden_size,), 1.0 - self.offset))",
        "self.weight = torch.nn.Parameter(torch.full((hidden_size,), 1.0 - self.offset))\n"
        "        self.unused = torch.nn.Linear(2, 2)",
        "without a gradient",
    ),
}


def test_model_checks_catch_broken_ports(ported_tree, tmp_path):
    spec = load_spec("llama")
    ported = tmp_path / "ported"
    shutil.copytree(ported_tree, ported, ignore=shutil.ignore_patterns("__pycache__"))
    jobs = [job("true port", spec, ported)]
    for name, (rel, old, new, _) in BREAKAGES.items():
        jobs.append(job(name, spec, edited_copy(ported, tmp_path / name.replace(" ", "-"), (rel, old, new))))
    results = check_trees(jobs)
    assert results["true port"]["ok"], results["true port"]["problems"]
    for name, (_, _, _, word) in BREAKAGES.items():
        result = results[name]
        assert not result["ok"], f"{name}: the checks passed a broken port"
        assert any(word in problem for problem in result["problems"]), (name, result["problems"])
