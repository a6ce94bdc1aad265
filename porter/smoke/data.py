"""A smoke run's data: a corpus, a tokenizer trained on it, and the token dataset the tree's
own builder writes, all in the run's work folder (kept there for the next run)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from porter.corpus import train_sentencepiece, train_tokenizer_json, write_corpus
from porter.errors import PorterError
from porter.profile.features import SENTENCEPIECE_CHOICE
from porter.treerun.failure import classify
from porter.treerun.process import die_with_parent, environment

_BUILD_DATASET = textwrap.dedent(
    """
    from porter.treerun.standins.runtime import install_from_environment
    install_from_environment()
    import argparse, json, sys
    import numpy as np
    import torch
    from megatron.data import indexed_dataset

    from megatron.tokenizer.tokenizer import build_tokenizer

    class Args(argparse.Namespace):
        # what build_tokenizer reads of the training arguments; any other one is unset
        def __getattr__(self, name):
            return None

    jsonl, model, prefix, tokenizer_type, add_bos = sys.argv[1:6]
    # the port's own tokenizer, as the tree's preprocessing builds it (BOS as the spec says)
    tokenizer = build_tokenizer(Args(tokenizer_type=tokenizer_type, tokenizer_model=model, add_bos_token=add_bos == "1",
                                     rank=0, make_vocab_size_divisible_by=128, tensor_model_parallel_size=1,
                                     vocab_extra_ids=0))
    builder = indexed_dataset.MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    with open(jsonl) as handle:
        for line in handle:
            ids = list(tokenizer.tokenize(json.loads(line)["text"])) + [tokenizer.eod]
            builder.add_item(torch.tensor(ids, dtype=torch.int32))
            builder.end_document()
    builder.finalize(prefix + ".idx")
    """
)


def prepare_data(tree: Path, workdir: Path, vocab_size: int, env: dict[str, str] | None = None,
                 user_tree: Path | None = None, kind: str = "sentencepiece",
                 tokenizer_type: str = SENTENCEPIECE_CHOICE, add_bos: bool = False) -> tuple[Path, Path]:
    """Corpus, tokenizer and token dataset in workdir; returns (tokenizer file, data prefix).

    The tokenizer is trained here for the spec's kind (a SentencePiece model, or an HF
    tokenizer.json); the dataset is tokenized by the port's own tokenizer (`tokenizer_type`,
    built by the tree's build_tokenizer, with a BOS as the spec says), as the tree's
    preprocessing would. `tree` is where the tree's code runs (its scratch copy); `user_tree`
    the tree it copies, for messages; `env` adds to the run's environment (the stand-ins').
    """
    text, jsonl = write_corpus(workdir / "corpus")
    if kind == "hf":
        model = workdir / "tokenizer.json"
        if not model.exists():
            train_tokenizer_json(text, model, vocab_size)
    else:
        model = workdir / "tokenizer.model"
        if not model.exists():
            train_sentencepiece(text, workdir / "tokenizer", vocab_size)
    prefix = workdir / "data" / f"{kind}_{tokenizer_type}_{'bos' if add_bos else 'plain'}_text_document"
    if not prefix.with_suffix(".idx").exists():
        prefix.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-c", _BUILD_DATASET, str(jsonl), str(model), str(prefix), tokenizer_type,
             "1" if add_bos else "0"],
            cwd=tree, env={**environment(tree), **(env or {})}, capture_output=True, text=True,
            preexec_fn=die_with_parent,
        )
        if done.returncode != 0:
            failure = classify(done.stderr, [Path(tree), Path(user_tree or tree)])
            if failure is not None and failure.is_environment:
                raise failure.error("building the token dataset with the tree's megatron.data.indexed_dataset")
            raise PorterError(
                "cannot build the token dataset with the tree's megatron.data.indexed_dataset",
                file="megatron/data/indexed_dataset.py",
                construct="MMapIndexedDatasetBuilder(out_file, dtype=...) with add_item / end_document / finalize",
                found=failure.summary if failure else (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1],
                fix="check that the tree imports on this machine (python -c 'import megatron' in the tree)",
            )
    return model, prefix
