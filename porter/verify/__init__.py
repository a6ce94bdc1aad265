"""Proving a port: logits parity with HF transformers' LLaMA, and HF <-> Megatron weights.

The rooms, in the order data flows through them:

- `layout.py`: where each weight lives in a ported tree (module names, checkpoint keys, the
  fused QKV ordering, which half of the fused gate+up is the gate, vocabulary padding), read
  from the tree's own source and the spec.
- `convert.py`: HF LLaMA state dict <-> Megatron state (one full copy) <-> per-rank shards,
  and the DeepSpeed checkpoint files the tree's own loader reads (pipe and non-pipe engines).
- `reference.py`: the reference, HF `LlamaForCausalLM`, tiny and randomly initialised so
  that a wrong port cannot hide.
- `probes.py`: the points compared layer by layer, each read from HF and from the tree.
- `harness.py`: runs INSIDE the target tree (its own process, the tree first on sys.path):
  initialises megatron with the tree's argument machinery, builds the generated model,
  loads a checkpoint with the tree's own loader, runs a batch. Reusable (bench).
- `worker.py`: the process entry point around the harness (`python -m porter.verify.worker`).
- `parity.py`: the whole check, from the parent process: reference, conversion, workers,
  comparison, and the report naming the first module that diverges.
"""
