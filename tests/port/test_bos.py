"""BOS: LLaMA's documents start with <s>, as HF's LLaMA tokenizer encodes them, when the tree's
own preprocessing tokenizes them with the port's tokenizer (`--add-bos-token`)."""

import json
import subprocess
import sys

from porter.treerun.process import environment

DOCS = ["Return the value of the named attribute of an object.",
        "An object's hash never changes during its lifetime.",
        "Hello world, this is a small test document."]

READ_BACK = '''
import json, sys
from megatron.data.indexed_dataset import make_dataset
data = make_dataset(sys.argv[1], "mmap")
print("RESULT " + json.dumps([data[i].tolist() for i in range(len(data))]))
'''


def test_preprocessing_adds_bos_like_hf(ported_tree, sentencepiece_model, tmp_path):
    from transformers import LlamaTokenizer

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    env = environment(ported_tree)
    common = [sys.executable, "tools/preprocess_data.py", "--input", str(corpus), "--tokenizer-type",
              "SentencePieceTokenizer", "--tokenizer-model", str(sentencepiece_model), "--workers", "1"]
    encoded = {}
    for name, flags in (("bos", ["--add-bos-token"]), ("plain", [])):
        prefix = tmp_path / name
        done = subprocess.run([*common, *flags, "--output-prefix", str(prefix)], cwd=ported_tree, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        read = subprocess.run([sys.executable, "-c", READ_BACK, f"{prefix}_text_document"], cwd=ported_tree,
                              env=env, capture_output=True, text=True, timeout=300)
        assert read.returncode == 0, read.stderr[-2000:]
        encoded[name] = json.loads(read.stdout.split("RESULT ")[-1])

    folder = tmp_path / "hf-tokenizer"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(sentencepiece_model.read_bytes())
    hf = LlamaTokenizer.from_pretrained(str(folder), add_bos_token=True, legacy=False)
    assert encoded["bos"] == [hf.encode(d) for d in DOCS]  # what HF's LLaMA tokenizer gives, <s> first
    assert all(doc[0] == hf.bos_token_id for doc in encoded["bos"])
    assert [doc[1:] for doc in encoded["bos"]] == encoded["plain"]  # without the switch: no BOS
