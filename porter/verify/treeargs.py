"""A converted checkpoint's `args`, parsed by the tree itself (runs inside the tree).

A Megatron checkpoint carries the `args` of the run that wrote it, and the tree's
load_checkpoint compares some of them with the new run's: num_layers, hidden_size,
max_position_embeddings, the parallel sizes... and, in Habana's tree, the position-embedding
type as the tree's own enum. Only the tree's parser makes args of the right types, so porter
asks it: `python -m porter.verify.treeargs JOB.json` parses a command line with the
script's extra-args provider (the spec's defaults) and writes the result into every
mp_rank_*_model_states.pt of the checkpoint folder. The verify worker does the same with
the args it started with (`stamp`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path

import torch


def plain(args: argparse.Namespace) -> argparse.Namespace:
    """The args without tensors (as the trees' own save does)."""
    return argparse.Namespace(**{k: v for k, v in vars(args).items() if not torch.is_tensor(v)})


def parse(script_module: str, provider: str | None, argv: list[str], vocab_size: int) -> argparse.Namespace:
    """The tree's parse_args on argv, with the script's extra-args provider; the vocabulary padded."""
    sys.argv = [f"{script_module}.py", *argv]
    script = importlib.import_module(script_module)
    from megatron.arguments import parse_args

    from porter.verify.harness import padded_vocab

    args = parse_args(extra_args_provider=getattr(script, provider) if provider else None)
    args.padded_vocab_size = padded_vocab(vocab_size, args)
    return args


def stamp(folder: Path, args: argparse.Namespace, skeleton: bool = False) -> list[Path]:
    """Put args into every mp_rank_*_model_states.pt of a checkpoint's tag folder.

    `skeleton`: the files are a conversion's, written before their tensors' bytes
    (porter.convert.torch_files): their structure is rewritten and the space left for the
    tensors again, nothing read."""
    from porter.convert.torch_files import write_skeleton

    done = []
    for path in sorted(Path(folder).glob("mp_rank_*_model_states.pt")):
        state = torch.load(path, map_location="meta" if skeleton else "cpu", weights_only=False)
        state["args"] = plain(args)
        if skeleton:
            write_skeleton(path, state)
        else:
            torch.save(state, path)
        done.append(path)
    return done


def main(path: str) -> int:
    job = json.loads(Path(path).read_text())
    try:
        args = parse(job["script_module"], job["extra_args_provider"], job["argv"], job["vocab_size"])
        stamp(Path(job["folder"]), args, skeleton=job.get("skeleton", False))
    except BaseException:
        out = Path(path).parent / "out"
        out.mkdir(exist_ok=True)
        (out / "treeargs.error").write_text(traceback.format_exc())
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
