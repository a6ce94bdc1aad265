"""verify and the MoE start give a tree that builds its tokenizer at start-up a tiny tokenizer of
the spec's own kind: an HF tokenizer.json for a tokenizer.json family (a tree's set_global_variables
builds TokenizerJson from --tokenizer-model, and fails without one), a SentencePiece model else."""

from typer.testing import CliRunner

from porter import convert
from porter.catalog import load_spec
from porter.cli import app
from porter.treerun.argv import tokenizer_argv
from tests.conftest import copy_sample_tree


def test_each_kind_gets_a_tokenizer_file_of_its_own_kind(tmp_path):
    from sentencepiece import SentencePieceProcessor
    from tokenizers import Tokenizer

    for name, load in (("qwen3", Tokenizer.from_file), ("llama", lambda p: SentencePieceProcessor(model_file=p))):
        tree = copy_sample_tree(tmp_path / name / "Megatron-DeepSpeed")
        done = CliRunner().invoke(app, ["apply", name, "--target", str(tree)])
        assert done.exit_code == 0, done.output
        argv = tokenizer_argv(load_spec(name), convert.Port(name, tree).profile, tmp_path / name / "work")
        assert argv[0] == "--tokenizer-model", argv
        assert argv[1].endswith("tokenizer.json" if name == "qwen3" else ".model")
        load(argv[1])  # a file the kind's own library reads
