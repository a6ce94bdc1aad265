"""Local fixes that let the real trees run on a CPU machine, applied to scratch copies only.

None of them concerns LLaMA and none is porter's business: they are the fixes listed in
shared/research/real-trees-on-cpu.md (labels H*, B*, C*, N* below), made in a copy of a
tree in a temporary folder after porter has ported it, never in what porter emits. Each fix
is a regular expression that must match, and what replaces it; a fix whose anchor is
missing fails loudly (the tree is not the commit the fix was written for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fix:
    label: str
    path: str
    pattern: str  # regular expression (re.M)
    replacement: str
    why: str
    count: int = 0  # 0: every match


_CPU_RNG_TRACKER = '''
class _CPURNGStatesTracker(RNGStatesTracker):
    """CPU stand-in of the device RNG tracker (scratch fix B4)."""

    @staticmethod
    def get_state_fnc(device='cpu'):
        return torch.get_rng_state()

    @staticmethod
    def set_state_fnc(new_state, device='cpu'):
        return torch.set_rng_state(new_state)

    @staticmethod
    def manual_seed(seed):
        return torch.manual_seed(seed)

    @staticmethod
    def set_rng_state(new_state, device=-1):
        return torch.set_rng_state(new_state)


class RNGStatesTrackerSingleton:'''

HABANA = [
    Fix("B1", "megatron/arguments.py",
        r"^(def _add_distributed_args\(parser\):\n    group = parser\.add_argument_group\(title='distributed'\)\n)",
        r"\1    group.add_argument('--use_hpu', action='store_true')  # scratch fix B1\n",
        "--use_hpu comes from Habana's DeepSpeed fork; upstream DeepSpeed does not add it"),
    Fix("B2", "megatron/global_vars.py",
        r'^    else:\n        return "cuda:"\+str\(torch\.cuda\.current_device\(\)\)',
        '    elif get_args().device.type == "cpu":  # scratch fix B2\n        return "cpu"\n'
        '    else:\n        return "cuda:"+str(torch.cuda.current_device())',
        "get_current_device() has no cpu case"),
    Fix("B2", "megatron/global_vars.py",
        r"^(def get_current_device_index\(\):\n)",
        r"\1    if get_args().device.type == 'cpu':  # scratch fix B2\n        return 0\n",
        "get_current_device_index() has no cpu case"),
    Fix("B3", "megatron/model/gpt_model.py", r",\s*use_hpu=args\.device\.type\s*==\s*'hpu'", "",
        "PipelineModule(use_hpu=) exists only in Habana's DeepSpeed fork"),
    Fix("B3", "megatron/model/llama_model.py", r",\s*use_hpu=args\.device\.type\s*==\s*'hpu'", "",
        "the generated pipe passes the tree's use_hpu keyword too"),
    Fix("B4", "megatron/mpu/random.py", r"^\nclass RNGStatesTrackerSingleton:", _CPU_RNG_TRACKER,
        "no RNG tracker for CPU"),
    Fix("B4", "megatron/mpu/random.py", r"^(            )if get_args\(\)\.use_hpu:",
        r"\1if get_args().device.type == 'cpu':  # scratch fix B4\n\1    self.tracker = _CPURNGStatesTracker()\n"
        r"\1elif get_args().use_hpu:",
        "pick the CPU tracker on CPU"),
    Fix("B5", "megatron/initialize.py",
        r"^(\s+)if \(\(get_args\(\)\.device\.type == \"cuda\" and torch\.cuda\.device_count\(\) > 0\) or",
        r'\1if (get_args().device.type == "cpu" or  # scratch fix B5\n\1    (get_args().device.type == "cuda" and torch.cuda.device_count() > 0) or',
        "seed the model-parallel RNG tracker on CPU too"),
    Fix("B6", "megatron/training.py",
        r"^(\s+)model, optimizer, _, lr_scheduler = deepspeed\.initialize\(\n(\s+)model=model\[0\],\n(\s+)optimizer=optimizer,\n(\s+)args=args,\n(\s+)config=args\.deepspeed_configuration,",
        r"\1_config_path, args.deepspeed_config = args.deepspeed_config, None  # scratch fix B6\n"
        r"\1model, optimizer, _, lr_scheduler = deepspeed.initialize(\n\2model=model[0],\n\3optimizer=optimizer,\n"
        r"\4args=args,\n\5config=args.deepspeed_configuration,",
        "upstream deepspeed.initialize refuses a config path and a config dict together"),
    Fix("B6", "megatron/training.py",
        r"^(\s+)(if isinstance\(model, deepspeed\.PipelineEngine\):\n\s+# hack to get batch_fn)",
        r"\1args.deepspeed_config = _config_path  # scratch fix B6\n\1\2",
        "restore the config path after deepspeed.initialize", count=1),
    Fix("B7", "megatron/schedules.py", r"args\.micro_batch_size == args\.eval_micro_batch_size",
        "args.micro_batch_size == getattr(args, 'eval_micro_batch_size', args.micro_batch_size)",
        "eval_micro_batch_size is never defined at this commit (non-pipe schedules)"),
]

MICROSOFT_HEAD = [
    Fix("H1", "megatron/model/transformer.py",
        r"^(\s+)each_hidden_size = mixed_x_layer\.shape\[-1\] // 3\n(?:\s+\w+_layer = mixed_x_layer\[.*\n){3}",
        r"\1# scratch fix H1: view + split, as before FPDT (the slices are not views)\n"
        r"\1mixed_x_layer = mixed_x_layer.view(*mixed_x_layer.size()[:-1], -1, self.num_key_value_groups + 2, self.hidden_size_per_attention_head)\n"
        r"\1query_layer, key_layer, value_layer = self.split_tensor(mixed_x_layer)\n",
        "FPDT's non-contiguous q/k/v slices break CoreAttention's .view()"),
    Fix("H2a", "megatron/model/rotary_pos_embedding.py", r"^(\s+)rope = \[base\.cos\(\), base\.sin\(\)\]\n(\s+)return rope",
        r"\1return base  # scratch fix H2a: the angles, as callers expect",
        "RotaryEmbedding returns [cos, sin] since FPDT; update_rotary_pos_emb calls .to() on it"),
    Fix("H2b", "megatron/model/language_model.py",
        r"^(\s+)rotary_pos_emb_cos, rotary_pos_emb_sin = self\.rotary_pos_emb\(self\.seq_length\)\n.*\n.*\n.*\n",
        r"\1rotary_pos_emb = self.rotary_pos_emb(self.seq_length)  # scratch fix H2b\n",
        "the non-pipe path took cos/sin of cos/sin"),
    Fix("H3", "megatron/model/gpt_model.py", r"sequence_parallel=args\.sequence_parallel",
        "**({} if LayerNorm is torch.nn.LayerNorm else {'sequence_parallel': args.sequence_parallel})",
        "torch.nn.LayerNorm (off CUDA) takes no sequence_parallel", count=1),
    Fix("H4", "pretrain_gpt.py", r"config_dict_or_path=args\.deepspeed_config_dict",
        "config_dict_or_path=getattr(args, 'deepspeed_config_dict', None)",
        "deepspeed_config_dict exists only with --deepspeed"),
]

BIGSCIENCE = [
    Fix("N1", "megatron/data/indexed_dataset.py", r"\bnp\.float\b(?!\d)", "np.float32", "numpy 2 removed np.float"),
]

FIXES = {"ms-pre": [], "ms-head": MICROSOFT_HEAD, "hab-pre": HABANA, "bs-head": BIGSCIENCE}


def apply_fixes(root: Path, label: str) -> list[str]:
    """Apply the fixes of a tree label in place (a scratch copy); returns what was done."""
    done = []
    for fix in FIXES.get(label, []):
        path = root / fix.path
        if not path.exists():
            continue  # e.g. llama_model.py in a tree not ported (yet)
        text = path.read_text()
        new, count = re.subn(fix.pattern, fix.replacement, text, count=fix.count, flags=re.M)
        if count == 0:
            raise AssertionError(f"scratch fix {fix.label} ({fix.why}): no match in {fix.path}")
        path.write_text(new)
        done.append(f"{fix.label} {fix.path} x{count}: {fix.why}")
    return done
