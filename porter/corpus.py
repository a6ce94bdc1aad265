"""A small English+code training corpus that porter makes itself, with no download.

The documents are the docstrings of the Python standard library on this machine, read
with `ast` (no module is imported, so nothing runs). The order is fixed, so the corpus is
the same on every machine with the same Python version.
"""

from __future__ import annotations

import ast
import json
import os
import sysconfig
from pathlib import Path


def stdlib_docstrings(max_bytes: int = 400_000, min_chars: int = 80):
    """Yield docstrings of stdlib modules, classes and functions, up to about max_bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if any(part.startswith(("test", "idlelib", "turtledemo")) for part in path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        nodes = [tree] + [
            n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
        for node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= min_chars:
                yield doc
                total += len(doc.encode("utf-8"))
                if total >= max_bytes:
                    return


def write_corpus(folder: Path, max_bytes: int = 400_000) -> tuple[Path, Path]:
    """Write the corpus as plain text (for SentencePiece) and as jsonl documents, unless an
    earlier run in the same folder did (reading the standard library again takes a second or
    two; the tokenizer and dataset made from it are kept too). Each file is written whole under
    a temporary name and renamed, so a killed run leaves none half-written.

    Returns (text_path, jsonl_path).
    """
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    jsonl = folder / "corpus.jsonl"
    if text.exists() and jsonl.exists():
        return text, jsonl
    docs = list(stdlib_docstrings(max_bytes))
    _write(text, "".join(d.replace("\n", " ") + "\n" for d in docs))
    _write(jsonl, "".join(json.dumps({"text": doc}) + "\n" for doc in docs))
    return text, jsonl


def _write(path: Path, content: str) -> None:
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(content, encoding="utf-8")
    os.replace(part, path)


def train_sentencepiece(text: Path, prefix: Path, vocab_size: int = 1000) -> Path:
    """Train a small SentencePiece BPE model on the corpus; returns the .model path."""
    import sentencepiece

    sentencepiece.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def train_tokenizer_json(text: Path, path: Path, vocab_size: int = 1000) -> Path:
    """Train a small byte-level BPE with HF `tokenizers`, saved as a tokenizer.json in LLaMA-3's
    style: <|begin_of_text|> and <|end_of_text|> special tokens, and a post-processor that puts
    the first before each text (what add_special_tokens adds). Returns the file's path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train([str(text)], trainer)
    bos = tokenizer.token_to_id(special[0])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{special[0]} $A", pair=f"{special[0]} $A {special[0]} $B", special_tokens=[(special[0], bos)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path
