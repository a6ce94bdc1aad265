"""Runs inside a ported tree (cwd = tree, on sys.path): builds the LLaMA port with the
tree's own argument parsing and pretrain_llama's defaults, checks one thing, prints JSON.

usage: python llama_worker.py CHECK -- <megatron arguments>
"""

import json
import os
import sys

check = sys.argv[1]
sys.argv = [sys.argv[0]] + sys.argv[sys.argv.index("--") + 1:]
sys.path.insert(0, os.getcwd())

import pretrain_llama  # noqa: E402
import torch  # noqa: E402
from megatron import get_args  # noqa: E402
from megatron.initialize import initialize_megatron  # noqa: E402

initialize_megatron(extra_args_provider=pretrain_llama.llama_defaults)
args = get_args()
out = {}

if check == "args":
    out = {k: getattr(args, k) for k in ("ffn_hidden_size", "activation_func_type", "position_embedding_type",
                                          "layernorm_type", "no_bias", "layernorm_epsilon", "tokenizer_type",
                                          "bias_gelu_fusion", "max_position_embeddings", "rope_theta")}

elif check == "biases":
    from megatron import mpu

    model = pretrain_llama.model_provider()
    linears = {name: m for name, m in model.named_modules()
               if isinstance(m, (mpu.ColumnParallelLinear, mpu.RowParallelLinear))}
    out["linears"] = sorted(linears)
    out["with_bias"] = sorted(name for name, m in linears.items() if getattr(m, "bias", None) is not None)
    out["bias_parameters"] = sorted(n for n, _ in model.named_parameters() if n.endswith("bias"))
    mlp = model.language_model.encoder.layers[0].mlp
    out["gate_up_shape"] = list(mlp.dense_h_to_4h.weight.shape)

elif check == "weight_decay":
    from megatron.model import RMSNorm
    from megatron.optimizer import _get_params_for_weight_decay_optimization

    model = pretrain_llama.model_provider()
    decay, no_decay = _get_params_for_weight_decay_optimization([model])
    norms = [p for m in model.modules() if isinstance(m, RMSNorm) for p in m.parameters()]
    ids = {id(p) for p in no_decay["params"]}
    out["norm_weights"] = len(norms)
    out["norm_weights_without_decay"] = sum(id(p) in ids for p in norms)
    out["norm_weights_with_decay"] = sum(id(p) in {id(q) for q in decay["params"]} for p in norms)

elif check == "checkpoint":
    torch.manual_seed(0)
    model = pretrain_llama.model_provider()
    state = model.state_dict_for_save_checkpoint()
    out["keys"] = sorted(state)
    fresh = pretrain_llama.model_provider()
    with torch.no_grad():
        for p in fresh.parameters():
            p.normal_()
    fresh.load_state_dict(state)
    tokens = torch.randint(0, args.padded_vocab_size, (2, 16))
    position_ids = torch.arange(16).unsqueeze(0).expand(2, 16)
    mask = torch.triu(torch.ones(1, 1, 16, 16, dtype=torch.bool), diagonal=1)
    model.eval()
    fresh.eval()
    with torch.no_grad():
        a = model(tokens, position_ids, mask)[0]
        b = fresh(tokens, position_ids, mask)[0]
    out["max_abs_diff_after_reload"] = (a - b).abs().max().item()
    out["output_layer_saved"] = torch.equal(state["output_layer"]["output_layer.weight"],
                                            model.output_layer.output_layer.weight)

elif check == "tokenizer":
    from megatron import get_tokenizer

    tokenizer = get_tokenizer()
    text = "Return the sum of two numbers."
    ids = tokenizer.tokenize(text)
    out = {"type": type(tokenizer).__name__, "roundtrip": tokenizer.detokenize(ids), "eod": tokenizer.eod,
           "vocab_size": tokenizer.vocab_size, "padded_vocab_size": args.padded_vocab_size}

elif check == "zero3":
    # Built under the tree's deepspeed.zero.Init as pretrain_llama's model_provider does: with
    # ZeRO stage 3 every parameter is partitioned as it is made (this rank holds its shard only).
    model = pretrain_llama.model_provider()
    params = list(model.parameters())
    out["parameters"] = len(params)
    out["partitioned"] = sum(hasattr(p, "ds_id") for p in params)
    out["full_elements"] = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    out["local_elements"] = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)

elif check == "fused_attention":
    # The fused core attention against the tree's own unfused code, on the same weights and batch:
    # logits and every gradient; then with attention dropout on (falls back), and the cache path.
    import megatron.model.transformer as transformer
    from megatron.model.fused_attention import attention_kernel

    torch.manual_seed(0)
    model = pretrain_llama.model_provider()
    tokens = torch.randint(0, args.padded_vocab_size, (2, args.seq_length))
    position_ids = torch.arange(args.seq_length).unsqueeze(0).expand(2, -1)
    mask = torch.triu(torch.ones(1, 1, args.seq_length, args.seq_length, dtype=torch.bool), diagonal=1)
    calls = []
    fused = transformer.fused_attention

    def counted(*a, **k):
        calls.append(1)
        return fused(*a, **k)

    def run():
        model.zero_grad()
        logits = model(tokens, position_ids, mask)[0]
        logits.float().square().mean().backward()
        return logits.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters()}

    transformer.fused_attention = counted
    logits_fused, grads_fused = run()
    out["fused_calls"] = len(calls)
    applies = transformer.fused_attention_applies
    transformer.fused_attention_applies = lambda *a: False
    logits_unfused, grads_unfused = run()
    transformer.fused_attention_applies = applies
    out["max_abs_logits"] = (logits_fused - logits_unfused).abs().max().item()
    out["logits_scale"] = logits_unfused.abs().max().item()
    out["max_rel_grad"] = max(((grads_fused[n] - g).abs().max() / g.abs().max().clamp_min(1e-12)).item()
                              for n, g in grads_unfused.items())
    # Two documents packed in a row (reset_attention_mask): not causal, so the mask itself is passed.
    half = args.seq_length // 2
    packed = mask.clone()
    packed[..., half:, :half] = True
    model.zero_grad()
    with torch.no_grad():
        fused_packed = model(tokens, position_ids, packed)[0]
        transformer.fused_attention_applies = lambda *a: False
        unfused_packed = model(tokens, position_ids, packed)[0]
        transformer.fused_attention_applies = applies
    out["max_abs_logits_packed"] = (fused_packed - unfused_packed).abs().max().item()
    out["packed_differs_from_causal"] = (fused_packed - logits_fused).abs().max().item()
    calls.clear()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    run()
    out["fused_calls_with_dropout"] = len(calls)
    model.eval()
    calls.clear()
    with torch.no_grad():
        model(tokens, position_ids, mask)
    out["fused_calls_eval_with_dropout"] = len(calls)
    calls.clear()
    with torch.no_grad():
        model(tokens[:, :4], position_ids[:, :4], mask, get_key_value=True)
    out["fused_calls_with_cache"] = len(calls)
    out["kernel_cpu"] = attention_kernel("cpu")

if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:  # one line, not two interleaved
    print("RESULT " + json.dumps(out), flush=True)
if torch.distributed.is_initialized():  # a clean end: a rank that exits with gloo's threads still running aborts
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
