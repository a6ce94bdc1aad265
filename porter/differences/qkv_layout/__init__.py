"""The fused QKV projection's layout: porter's own check on every port, no spec field.

porter (verify, convert) reads the fused `query_key_value` output per key/value group,
[ng, np/ng + 2, hn] (per head, [np, 3, hn], with one key/value head per query head), the
layout of Megatron's checkpoints. A tree whose attention cuts the output into q | k | v thirds
instead (microsoft's FPDT rework, `shape[-1] // 3`) but still has its own per-group split
method gets that split back: an explained repair (rewrites.py here). One without such
a method is refused: porter cannot say which layout its weights have.
"""

from __future__ import annotations

from porter.differences.base import Difference
from porter.differences.qkv_layout import detect
from porter.differences.qkv_layout import rewrites as Q
from porter.errors import PorterError
from porter.planner import rw, unsupported
from porter.profile import TRANSFORMER


class FusedQKVLayout(Difference):
    name = "qkv_layout"
    changes_model = False

    def detect(self, parsed):
        return detect.detect(parsed)

    def wanted(self, spec):
        return True

    def layout(self, profile, spec):
        """Refuses to convert or verify a tree whose fused QKV output is not laid out per
        key/value head [ng, np/ng + 2, hn] (per head [np, 3, hn] when ng = np): the layout of
        Megatron's checkpoints, which porter converts; microsoft HEAD groups it per key/value head."""
        facts = profile.facts.get(self.name)
        if facts is not None and facts.layout in ("per_head", "per_group"):
            return {}
        blocked = facts.blocked if facts is not None else None
        found = "another QKV layout (fewer key/value heads than query heads, split otherwise?)"
        fix = "convert this tree's weights by hand; porter supports the per-head layout of multi-head attention"
        if blocked is not None:
            found = (f"ParallelAttention.{blocked.func} cuts it into q | k | v thirds "
                     f"({blocked.width} = {blocked.fused}.shape[-1] // 3)")
            if blocked.split_method is not None:
                fix = f"run `porter apply`: it splits with the tree's own {blocked.split_method} again"
        raise PorterError(
            "the fused QKV layout of this tree is not the per-head [np, 3, hn] layout porter converts",
            file=TRANSFORMER,
            construct="ParallelAttention: mixed_x_layer.view(..., np, 3 * hn) and a split in q, k, v",
            found=found,
            fix=fix,
        )

    def plan(self, p):
        facts = p.facts(self.name)
        blocked = facts.blocked if facts is not None else None
        if blocked is None:
            return
        if blocked.split_method is None:
            raise unsupported(
                "ParallelAttention cuts the fused QKV output into q | k | v thirds, and has no per-group split "
                "porter could use instead", TRANSFORMER,
                "ParallelAttention: a method `def m(self, x)` calling torch.split(x, [groups, 1, 1], dim=-2)",
                f"ParallelAttention.{blocked.func}: {blocked.width} = {blocked.fused}.shape[-1] // 3")
        p.edit(TRANSFORMER, self.name,
               f"repair: ParallelAttention.{blocked.func} cut the fused QKV output into q | k | v thirds "
               f"({blocked.width} = {blocked.fused}.shape[-1] // 3), which is not the per-group layout of the "
               f"tree's own {blocked.split_method} (nor of its checkpoints) and is wrong with fewer key/value heads than query "
               f"heads; it splits with self.{blocked.split_method} again",
               rw(Q.GroupedSplitForBlockedThirds, cls="ParallelAttention", func=blocked.func, fused=blocked.fused,
                  width=blocked.width, split_method=blocked.split_method, groups=blocked.groups))
