"""`porter smoke llama3` on the sample tree: LLaMA-3's tokenizer.json (a byte-level BPE smoke
trains, <|begin_of_text|> added by its post-processor), grouped-query attention and rope scaling
at the smoke size; the loss falls, on the pipeline engine and over two pipeline stages."""

import json

import pytest
from typer.testing import CliRunner

from porter.cli import app

READ_BACK = '''
import json, sys
from megatron.data.indexed_dataset import make_dataset
data = make_dataset(sys.argv[1], "mmap")
print("RESULT " + json.dumps([data[i][:2].tolist() for i in range(3)]))
'''


def smoke(tree, workdir, *more):
    done = CliRunner().invoke(app, ["smoke", "llama3", "--target", str(tree), "--steps", "10",
                                    "--workdir", str(workdir), "--json", *more])
    assert done.exit_code == 0, done.output[-3000:]
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["last5_mean"] < doc["first5_mean"]
    command = (workdir / "train.log").read_text().split("\n\n", 1)[0]
    assert "--tokenizer-type TokenizerJson" in command and "--num-key-value-heads 2" in command
    return doc


def test_llama3_trains_with_its_tokenizer_json_and_bos(families_tree, tmp_path):
    import subprocess
    import sys

    from tokenizers import Tokenizer

    from porter.treerun.process import environment

    workdir = tmp_path / "smoke"
    smoke(families_tree, workdir)
    prefix = next((workdir / "data").glob("hf_*_bos_text_document.idx")).with_suffix("")
    read = subprocess.run([sys.executable, "-c", READ_BACK, str(prefix)], cwd=families_tree,
                          env=environment(families_tree), capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr[-2000:]
    firsts = json.loads(read.stdout.split("RESULT ")[-1])
    bos = Tokenizer.from_file(str(workdir / "tokenizer.json")).token_to_id("<|begin_of_text|>")
    assert all(doc[0] == bos for doc in firsts)  # every document starts as HF encodes it


@pytest.mark.slow
def test_llama3_trains_over_two_pipeline_stages(families_tree, tmp_path):
    smoke(families_tree, tmp_path / "pp2", "--nproc", "2", "--pp", "2")
