"""Multi-head latent attention (MLA; DeepSeek-V2, DeepSeek-V3): keys and values from a compressed latent.

Spec: `[attention.latent]`: `kv_lora_rank` (the latent; unset: no MLA), `q_lora_rank` (a
compressed query, DeepSeek-V3: 1536; unset: a plain query projection, DeepSeek-V2-Lite),
`qk_nope_head_dim` and `qk_rope_head_dim` (each head's query and key: a part without rotary,
and a rotary part whose key is shared by every head), `v_head_dim`, and `rope_interleave`
(HF rotates interleaved pairs; a conversion matter only, weights.py here).
Switches, spelled as Megatron-LM spells them: `--multi-latent-attention`, `--q-lora-rank`,
`--kv-lora-rank`, `--qk-head-dim` (the part without rotary), `--qk-pos-emb-head-dim`,
`--v-head-dim`. When the switch is on, the transformer layer builds porter's LatentAttention
(latent_attention.py.j2 here) in place of ParallelAttention (rewrites.py here): same
signature, same returns, on the plain and the pipeline engine alike. The rotary part is
rotated by the port's rotary embedding (with its scaling), and the softmax scale takes YaRN's
mscale_all_dim as HF's DeepSeek classes do. Tensor parallel: the compressed projections whole
on every rank, the per-head ones split by heads.
HF: `kv_lora_rank`, `q_lora_rank`, `qk_nope_head_dim`, `qk_rope_head_dim`, `v_head_dim`,
`rope_interleave` (DeepSeek-V3); `qk_head_dim` and `head_dim` are transformers' derived
fields (nope + rope, and the rotary part): read as such, never as a head size of their own.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.latent_attention import rewrites as L
from porter.differences.latent_attention.probes import latent_probes
from porter.differences.latent_attention.weights import dims, interleaved, latent_weights
from porter.errors import PorterError
from porter.hf_reading import class_defines, raw_of
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling
from porter.schema import flag, number

SWITCH = "latent_attention"
PREFIX = "attention.latent."
FILE = "megatron/model/latent_attention.py"
# spec field -> (switch, Megatron-LM's option and dest, help); every one an int
NUMBERS = {
    "kv_lora_rank": ("kv_lora_rank", "--kv-lora-rank", "kv_lora_rank",
                     "Latent attention: numbers per token in the compressed key/value latent."),
    "q_lora_rank": ("q_lora_rank", "--q-lora-rank", "q_lora_rank",
                    "Latent attention: numbers in the compressed query (default: a plain query projection)."),
    "qk_nope_head_dim": ("qk_nope_head_dim", "--qk-head-dim", "qk_head_dim",
                         "Latent attention: the part of each query and key head without rotary."),
    "qk_rope_head_dim": ("qk_rope_head_dim", "--qk-pos-emb-head-dim", "qk_pos_emb_head_dim",
                         "Latent attention: the rotary part of each query head and of the key all heads share."),
    "v_head_dim": ("v_head_dim", "--v-head-dim", "v_head_dim", "Latent attention: the size of each value head."),
}
HF_NAMES = {"kv_lora_rank": "kv_lora_rank", "q_lora_rank": "q_lora_rank", "qk_nope_head_dim": "qk_nope_head_dim",
            "qk_rope_head_dim": "qk_rope_head_dim", "v_head_dim": "v_head_dim"}
REQUIRED = ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


def _number_spelling(switch: str, option: str, dest: str, text: str) -> Spelling:
    return Spelling(switch, option, dest, None, f"args.{dest} is not None", NETWORK,
                    (("type", "int"), ("default", "None"), ("help", repr(text))))


class LatentAttention(Difference):
    name = SWITCH
    fields = {
        PREFIX + "kv_lora_rank": number(None, whole=True, help="latent attention: the key/value latent; unset: no MLA"),
        PREFIX + "q_lora_rank": number(None, whole=True, help="latent attention: a compressed query of this size"),
        PREFIX + "qk_nope_head_dim": number(None, whole=True, help="latent attention: each head's part without rotary"),
        PREFIX + "qk_rope_head_dim": number(None, whole=True, help="latent attention: the rotary part (key shared)"),
        PREFIX + "v_head_dim": number(None, whole=True, help="latent attention: each value head's size"),
        PREFIX + "rope_interleave": flag(True, help="latent attention: HF rotates interleaved pairs (conversion)"),
    }
    switchable = (PREFIX + "q_lora_rank", PREFIX + "rope_interleave")
    hf_fields = ("kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "qk_head_dim",
                 "rope_interleave")
    spellings = {
        SWITCH: (Spelling(SWITCH, "--multi-latent-attention", "multi_latent_attention", True,
                          "args.multi_latent_attention", NETWORK,
                          (("action", "'store_true'"),
                           ("help", "'Multi-head latent attention (DeepSeek): keys and values from a compressed latent.'"))),),
        **{switch: (_number_spelling(switch, option, dest, text),) for switch, option, dest, text in NUMBERS.values()},
    }
    switch_fields = {SWITCH: PREFIX + "kv_lora_rank", **{switch: PREFIX + key for key, (switch, *_) in NUMBERS.items()}}

    def wanted(self, spec):
        return spec[PREFIX + "kv_lora_rank"] is not None

    def validate(self, values, given, fail):
        if values[PREFIX + "kv_lora_rank"] is None:
            for key in given & {PREFIX + k for k in (*NUMBERS, "rope_interleave")}:
                raise fail(key, f"{key} without {PREFIX}kv_lora_rank", f"set {PREFIX}kv_lora_rank, or remove {key}",
                           message=f"inconsistent spec: {key} needs latent attention")
            return
        for key in REQUIRED:
            if values[PREFIX + key] is None:
                raise fail(PREFIX + key, "unset", f"set {PREFIX}{key} (DeepSeek-V2/V3: "
                           f"{ {'qk_nope_head_dim': 128, 'qk_rope_head_dim': 64, 'v_head_dim': 128}[key] })",
                           message=f"inconsistent spec: latent attention needs {PREFIX}{key}")
        if values[PREFIX + "qk_rope_head_dim"] % 2:
            raise fail(PREFIX + "qk_rope_head_dim", values[PREFIX + "qk_rope_head_dim"], "an even size (rotary pairs)",
                       message="inconsistent spec: the rotary part rotates pairs of dimensions")
        needs = {"position_embedding.type": ("rotary", "its rotary part is rotated"),
                 "norm.type": ("rmsnorm", "its latent norms are RMSNorms")}
        for key, (value, why) in needs.items():
            if values[key] != value:
                raise fail(key, repr(values[key]), f"set {key} = {value!r}",
                           message=f"inconsistent spec: latent attention needs {key} = {value!r} ({why})")
        bias = values["linear.bias"]
        for key in ("attention.num_query_groups", "attention.head_dim", "attention.sliding_window"):
            if values[key]:
                raise fail(key, f"{key} = {values[key]!r} with latent attention",
                           f"remove {key}: latent attention sizes its heads with {PREFIX}*",
                           message=f"inconsistent spec: {key} does not apply to latent attention")
        for key in ("linear.qkv_bias", "linear.attention_output_bias"):
            if values[key] or (values[key] is None and bias):
                raise fail(key, "a bias in attention with latent attention", f"set {key} = false",
                           message="porter's latent attention has no biases (DeepSeek's attention_bias is false)")

    def plan(self, p):
        model = p.model
        if (model.parallel_style, model.ctor_style) != ("mpu", "init_method"):
            raise unsupported("latent attention is built on the tree's mpu layers with (init_method, ...) "
                              "constructors", TRANSFORMER, "`from megatron import mpu` and ParallelAttention("
                              "init_method, output_layer_init_method, layer_number, ...)",
                              f"{model.parallel_style} style, {model.ctor_style} constructors")
        if p.implemented("rotary"):
            raise unsupported("latent attention rotates its rotary part with porter's rotary embedding; the tree "
                              "has its own", TRANSFORMER, "porter's megatron/model/rotary_embedding.py",
                              f"the tree's rotary ({p.switches['rotary'].option})")
        if model.attention_attr is None:
            raise unsupported("cannot find the layer's self-attention", TRANSFORMER,
                              "`self.<attention> = ParallelAttention(...)` in ParallelTransformerLayer.__init__",
                              "no such statement")
        spec = p.spec
        on = p.switch(SWITCH)
        dests = {}
        for key, (switch, *_rest) in NUMBERS.items():
            dests[key] = p.switch(switch, on=spec[PREFIX + key], field=PREFIX + key).dest
        p.describe_model("multi-head latent attention: keys and values from a compressed latent, a rotary part "
                         "shared by every head")
        need = " and ".join(f"args.{dests[k]}" for k in ("kv_lora_rank", *REQUIRED))
        p.checks.append(
            f"""
            if args.{on.dest}:
                assert {need}, \\
                    'latent attention: {", ".join(NUMBERS[k][1] for k in ("kv_lora_rank", *REQUIRED))} are needed'
                assert args.{dests["qk_rope_head_dim"]} % 2 == 0, \\
                    'latent attention: {NUMBERS["qk_rope_head_dim"][1]} must be even (rotary pairs)'
            """
        )
        p.import_into(TRANSFORMER, SWITCH, "from megatron.model.latent_attention import LatentAttention",
                      "imports the latent attention")
        p.edit(TRANSFORMER, SWITCH, f"the layer's self-attention is LatentAttention when {on.option} is on",
               rw(L.LatentSelfAttention, cls="ParallelTransformerLayer", attr=model.attention_attr, test=on.test))
        layernorm = [model.layernorm_imports.get(TRANSFORMER) or "from megatron.model import LayerNorm"]
        p.create(FILE, SWITCH, "the latent attention", "latent_attention.py.j2",
                 norm_imports=p.final_norm[1](layernorm) if p.final_norm else layernorm,
                 column_returns_bias=model.column_returns_bias, d=dests,
                 theta=f"args.{p.switches['rope_theta'].dest}" if "rope_theta" in p.switches else "10000.0",
                 scaling="rope_scaling" in p.switches)

    def weights(self, layer):
        latent_weights(layer)

    def probes(self, layer):
        nope, rope, kv_rank, q_rank = dims(layer.config)
        latent_probes(layer, nope, rope, kv_rank, q_rank, interleaved(layer.config))

    def from_hf(self, config):
        if config.get("kv_lora_rank") is None:
            return {}
        out = {PREFIX + key: (None if config.get(hf) is None else int(config[hf])) for key, hf in HF_NAMES.items()}
        derived = raw_of(config).get("qk_head_dim")  # the file's: transformers keeps what it is given
        if derived is not None and derived != (config.get("qk_nope_head_dim") or 0) + (config.get("qk_rope_head_dim") or 0):
            raise PorterError("config.json's qk_head_dim is not qk_nope_head_dim + qk_rope_head_dim", file=config.path,
                              construct="qk_head_dim = qk_nope_head_dim + qk_rope_head_dim (transformers derives it)",
                              found=f"qk_head_dim = {derived}, qk_nope_head_dim = {config.get('qk_nope_head_dim')}, "
                                    f"qk_rope_head_dim = {config.get('qk_rope_head_dim')}",
                              fix="remove qk_head_dim from config.json, or make it the sum")
        if "rope_interleave" in config:
            out[PREFIX + "rope_interleave"] = bool(config["rope_interleave"])
        # transformers sets head_dim to the rotary part in a latent-attention config: no head size of its own
        out["attention.head_dim"] = None
        return out

    def to_hf(self, spec, config):
        if not self.wanted(spec):
            return
        config.update({hf: spec[PREFIX + key] for key, hf in HF_NAMES.items()})
        config["head_dim"] = spec[PREFIX + "qk_rope_head_dim"]  # transformers' derived field: the rotary part
        interleave = spec[PREFIX + "rope_interleave"]
        if class_defines(config.get("model_type"), "rope_interleave", unknown=True):
            config["rope_interleave"] = interleave
        elif not interleave:
            raise PorterError(f"{spec.hf_class} always rotates interleaved pairs", file=spec.path,
                              construct=PREFIX + "rope_interleave", found="false",
                              fix="set rope_interleave = true, or name an HF class with a rope_interleave field "
                                  "(DeepseekV3ForCausalLM)")

    def shrink_hf(self, read, out, layers, seq_length):
        """The latent's sizes stay as published, and so does its head size: transformers derives
        head_dim from qk_rope_head_dim (the rotary part), which the shrink of the heads' sizes
        would set apart (DeepSeek-V3's rotary then turned 16 channels of a 64-channel part)."""
        if read.get("kv_lora_rank") is not None and "head_dim" in out:
            out["head_dim"] = read["qk_rope_head_dim"]
        return []

    def tiny(self, spec, tiny):
        """Every size its own (a query latent only where the spec has one), small enough for a CPU."""
        if not self.wanted(spec):
            return {}
        return {PREFIX + "kv_lora_rank": 16, PREFIX + "q_lora_rank": 24 if spec[PREFIX + "q_lora_rank"] else None,
                PREFIX + "qk_nope_head_dim": 12, PREFIX + "qk_rope_head_dim": 8, PREFIX + "v_head_dim": 10}
