"""Bias in the linear layers, per site: the QKV projection, the attention output, the MLP.

Spec: `linear.bias` (GPT: true) for every site, with `linear.qkv_bias`,
`linear.attention_output_bias`, `linear.mlp_bias` to set one site apart (Qwen2: a bias on the
QKV projection only). Trees spell "no bias anywhere" as porter's `--no-bias` or microsoft's
`--disable-bias-linear` (stored inverted, in the training group, implemented). A site that
keeps its bias while the rest have none gets its own switch (`--add-qkv-bias`, Megatron-LM's
spelling; `--add-attention-output-bias`, `--add-mlp-bias`).
When porter adds it: every tensor-parallel linear of attention and MLP takes `bias=` from the
switches, and the tree's bias path becomes None-safe where it adds a bias by hand. When the tree
implements the switch itself: its switch stays in charge of every linear, and a kept site's
linears take `<the tree's bias> or <the site's switch>` (KeepSiteBias).
HF: `attention_bias` (q, k, v and the output) and `mlp_bias`, each read where the config class
has it (LLaMA both, Gemma attention_bias only); a site whose class has no field keeps the family
spec's bias (Qwen2's QKV bias, hard-coded in its modeling code; Gemma's bias-free MLP).
"""

from __future__ import annotations

from porter.cst.nodes import negate
from porter.differences.base import Difference
from porter.differences.bias import detect
from porter.differences.bias import rewrites as R
from porter.differences.bias.weights import bias_weights
from porter.hf_reading import class_defines
from porter.planner import rw
from porter.profile import TRANSFORMER
from porter.profile.features import NETWORK, Spelling, tree_spelling
from porter.schema import flag

# site -> (the linears of the tree's classes it covers, the switch that turns its bias back on)
SITES = {
    "qkv": ("ParallelAttention", ("query_key_value", "query", "key_value")),
    "attention_output": ("ParallelAttention", ("dense",)),
    "mlp": ("ParallelMLP", ("dense_h_to_4h", "dense_4h_to_h")),
}


# the options that turn every linear's bias off (porter's first): a site's switch says which it goes with
NO_BIAS_OPTIONS = ("--no-bias", "--disable-bias-linear")


def _site_spellings(site: str, option: str, what: str) -> tuple[Spelling, ...]:
    """porter's switch for a site, its help naming each no-bias option (porter's first)."""
    dest = option[2:].replace("-", "_")
    return tuple(Spelling(f"{site}_bias", option, dest, True, f"args.{dest}", NETWORK,
                          (("action", "'store_true'"), ("help", repr(f"With {no_bias}: a bias on {what} still."))))
                 for no_bias in NO_BIAS_OPTIONS)


def site_bias(spec, site: str) -> bool:
    """Does the spec put a bias on this site?"""
    value = spec[f"linear.{site}_bias"]
    return spec["linear.bias"] if value is None else value


class Bias(Difference):
    name = "no_bias"
    model_switches = ('no_bias',)
    hf_fields = ("attention_bias", "mlp_bias")
    fields = {
        "linear.bias": flag(True, help="bias in every linear layer"),
        "linear.qkv_bias": flag(None, help="bias on the QKV projection (default: linear.bias)"),
        "linear.attention_output_bias": flag(None, help="bias on the attention output (default: linear.bias)"),
        "linear.mlp_bias": flag(None, help="bias on the MLP's linears (default: linear.bias)"),
    }
    switch_fields = {f"{site}_bias": f"linear.{site}_bias" for site in SITES}
    spellings = {
        "no_bias": (
            Spelling(
                "no_bias", "--no-bias", "no_bias", True, "args.no_bias", NETWORK,
                (("action", "'store_true'"), ("help", "'No bias in any linear layer (attention, MLP).'")),
            ),
            # stored inverted, and registered in the training group
            tree_spelling("no_bias", "--disable-bias-linear", "add_bias_linear", False, "not args.add_bias_linear",
                          ((TRANSFORMER, "add_bias_linear"),)),
            # Habana's hand port (7086aadb): porter's own option name, registered its own way.
            tree_spelling("no_bias", "--no-bias", "no_bias", True, "args.no_bias", ((TRANSFORMER, "no_bias"),)),
        ),
        "qkv_bias": _site_spellings("qkv", "--add-qkv-bias", "the QKV projection"),
        "attention_output_bias": _site_spellings("attention_output", "--add-attention-output-bias",
                                                 "the attention output"),
        "mlp_bias": _site_spellings("mlp", "--add-mlp-bias", "the MLP linears"),
    }

    def detect(self, parsed):
        return detect.detect(parsed, tuple(dict.fromkeys(s.dest for s in self.spellings["no_bias"])))

    def wanted(self, spec):
        return not all(site_bias(spec, site) for site in SITES)

    def plan(self, p):
        kept = [site.replace("_", " ") for site in SITES if site_bias(p.spec, site)]
        p.describe_model(f"a bias on the {' and '.join(kept)} projection only" if kept else "no bias in any linear layer")
        p.switch("no_bias")
        if p.has_dest("bias_gelu_fusion"):
            p.defaults["bias_gelu_fusion"] = False
        kept = [site for site in SITES if site_bias(p.spec, site)]
        if p.implemented("no_bias"):
            self._repair(p)
            for site in kept:
                self._keep(p, site)
            return
        for site in kept:
            p.switch(f"{site}_bias")
        test = p.tests["no_bias"]
        if p.has_dest("bias_gelu_fusion"):
            p.checks.append(
                f"""
                if {test}:
                    # the bias-gelu fusion adds a bias: there is none
                    args.bias_gelu_fusion = False
                """
            )
        p.names_for(TRANSFORMER, "no_bias")
        by_class: dict[str, dict[str, str]] = {}
        for site, (cls, attrs) in SITES.items():
            expr = negate(test)
            if site in kept:
                expr = f"{expr} or {p.tests[f'{site}_bias']}"
            by_class.setdefault(cls, {}).update(dict.fromkeys(attrs, expr))
        for cls, what in (("ParallelMLP", "MLP"), ("ParallelAttention", "attention")):
            exprs = by_class[cls]
            if len(set(exprs.values())) == 1:
                p.edit(TRANSFORMER, "no_bias", f"{what} linears follow the bias switch",
                       rw(R.LinearBias, cls=cls, attrs=list(exprs), bias_expr=next(iter(exprs.values()))))
            else:
                p.edit(TRANSFORMER, "no_bias", f"{what} linears follow the bias switches, site by site",
                       rw(R.LinearBias, cls=cls, attrs=list(exprs), bias_expr=exprs))
        facts = p.facts(self.name)
        if facts.mlp_bias_unguarded:
            p.edit(TRANSFORMER, "no_bias", "the MLP adds its bias only when there is one",
                   rw(R.NoneSafeBiasAdd, cls="ParallelMLP", func="forward"))
        else:
            p.reuse("no_bias", "the MLP adds no bias by hand unchecked (its linear adds its own, or checks for None)")
        for func in facts.plain_bias_helpers:
            p.edit(TRANSFORMER, "no_bias", f"{func} takes an Optional bias", rw(R.OptionalBiasParameter, func=func))
        if facts.expand_as_unguarded:
            p.edit(TRANSFORMER, "no_bias", "the layer broadcasts biases only when they exist",
                   rw(R.NoneSafeExpandAs, cls="ParallelTransformerLayer", func="forward"))
        else:
            p.reuse("no_bias", "the layer's bias path is None-safe already")

    def _keep(self, p, site: str):
        """A site that keeps its bias on a tree whose own switch turns every linear's off: the
        tree's switch stays on the other sites, and this site's linears take `<the tree's bias>
        or <the site's switch>`. A linear that hands its bias back (skip_bias_add) is kept only
        where the tree adds whatever bias comes back (its bias path is None-safe)."""
        tree_option = p.switches["no_bias"].option
        ours = self.spellings[f"{site}_bias"]  # the one whose help names the tree's option
        named = next((s for s in ours if tree_option in dict(s.add)["help"]), ours[0])
        spelling = p.switch(f"{site}_bias", spelling=named)
        cls, attrs = SITES[site]
        facts = p.facts(self.name)
        p.edit(TRANSFORMER, "no_bias", f"the {site.replace('_', ' ')} linears keep a bias under the tree's "
               f"{tree_option} with {spelling.option}",
               rw(R.KeepSiteBias, cls=cls, attrs=list(attrs), switch=p.tests[f"{site}_bias"],
                  returned_ok=facts is not None and facts.none_safe))
        for func, dest in facts.flag_functions if facts is not None else ():
            if dest == p.switches["no_bias"].dest:
                p.edit(TRANSFORMER, "no_bias", f"{func} decides its biases by {tree_option} alone: it refuses "
                       f"{spelling.option}",
                       rw(R.RefuseSiteBias, func=func, switch=p.tests[f"{site}_bias"],
                          message=f"{spelling.option}: {func} builds its biases by {tree_option} alone"))

    def _repair(self, p):
        """A tree's own no-bias switch can miss a linear (Habana's hand port left its second SwiGLU
        projection with a bias): porter passes `bias=` to the ones without, the tree's way."""
        if not p.facts(self.name).gaps:
            return
        bias = negate(p.tests["no_bias"])
        for cls, attrs in p.facts(self.name).gaps:
            p.edit(TRANSFORMER, "no_bias", f"repairs {cls}: {', '.join(attrs)} kept a bias under the tree's "
                   f"{p.switches['no_bias'].option} (a known bug of hand ports)",
                   rw(R.LinearBias, cls=cls, attrs=list(attrs), bias_expr=bias))

    def weights(self, layer):
        bias_weights(layer)

    def from_hf(self, config):
        """Each site's bias from the field the class has for it (attention_bias: q, k, v and the
        output; mlp_bias: the MLP); a site without one keeps the family's (Qwen2's QKV bias and
        Gemma's bias-free MLP are in their modeling code)."""
        attention = config.get("attention_bias") if config.defines("attention_bias") else None
        mlp = config.get("mlp_bias") if config.defines("mlp_bias") else None
        out = {}
        if attention is not None and mlp is not None:
            out["linear.bias"] = bool(attention) and bool(mlp)
            out["linear.qkv_bias"] = out["linear.attention_output_bias"] = out["linear.mlp_bias"] = None
            if bool(attention) != out["linear.bias"]:
                out["linear.qkv_bias"] = out["linear.attention_output_bias"] = bool(attention)
            if bool(mlp) != out["linear.bias"]:
                out["linear.mlp_bias"] = bool(mlp)
        elif attention is not None:
            out["linear.qkv_bias"] = out["linear.attention_output_bias"] = bool(attention)
        return out

    def to_hf(self, spec, config):
        model_type = config.get("model_type")
        if class_defines(model_type, "attention_bias"):  # none: the HF class puts its biases where its code says
            config["attention_bias"] = site_bias(spec, "qkv")
        if class_defines(model_type, "mlp_bias"):
            config["mlp_bias"] = site_bias(spec, "mlp")

    def same_model(self, spec, values):
        """Each site's bias as the spec has it, whether said by linear.bias or site by site."""
        candidate = dict(spec.values)
        candidate.update({k: v for k, v in values.items() if k in self.fields})
        return all(site_bias(candidate, site) == site_bias(spec, site) for site in SITES)

    def layout(self, profile, spec):
        return {f"{site}_bias": site_bias(spec, site) for site in SITES}
