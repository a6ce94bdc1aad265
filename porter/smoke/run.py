"""A short, real training run of a ported model: does its loss fall?

It makes everything the run needs in a work folder — a corpus and a tokenizer trained on it,
the token dataset written by the tree's own `MMapIndexedDatasetBuilder` (porter.smoke.data),
a DeepSpeed config (porter.smoke.ds_config) — then runs the tree's `pretrain_<name>.py` with
a tiny config derived from the spec (porter.smoke.argv), on the local device (CPU here:
gloo, DS_ACCELERATOR=cpu), in one process or two (torchrun), and reads the losses back from
the tree's own log lines (porter.treerun.script).

The run happens in a scratch copy of the tree (porter.treerun.scratch): the user's tree is
never written. On the CPU, the stand-ins of porter.treerun.standins supply what the tree's
fork- or CUDA-only pieces lack there; a run that stops for a package the environment lacks,
or because the tree needs CUDA, is refused with that reason (porter.treerun.failure).
The tree is profiled and planned once per run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from porter.errors import PorterError
from porter.naming import spec_in_tree
from porter.smoke.argv import training_arguments
from porter.smoke.config import SmokeConfig
from porter.smoke.data import prepare_data
from porter.smoke.port import SmokePort
from porter.smoke.result import SmokeResult
from porter.source import SourceTree
from porter.spec import Spec
from porter.treerun import standins
from porter.treerun.device import runs_on_cpu
from porter.treerun.failure import classify
from porter.treerun.scratch import in_tree_terms, scratch_copy
from porter.treerun.script import launch


def run_smoke(
    spec: Spec,
    target: Path,
    workdir: Path,
    config: SmokeConfig,
    on_loss: Callable[[int, float], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    cpu: bool | None = True,
) -> SmokeResult:
    """Train the ported model in a scratch copy of the tree (workdir/tree); `on_loss(step, loss)`
    hears each step, `on_line` each log line. `cpu`: with the stand-ins (None: when no CUDA).

    Raises PorterError when the run cannot start for a reason outside the port: a package the
    environment lacks, a tree that needs CUDA (porter.treerun.failure).
    """
    config.check(judge_loss=False)
    tree = SourceTree.open(Path(target).resolve())
    spec = spec_in_tree(spec, tree)
    workdir = Path(workdir).resolve()  # the run's cwd is the tree: every path it gets is absolute
    if not tree.exists(spec.script):
        raise PorterError(
            f"{spec.script} is missing: the tree is not ported",
            file=spec.script,
            fix=f"run `porter apply {spec.name} --target {target}` first",
        )
    if spec["tokenizer.type"] not in ("sentencepiece", "hf"):
        raise PorterError(
            f"smoke trains its own tokenizer, a SentencePiece model or a tokenizer.json; spec {spec.name} "
            f"uses {spec['tokenizer.type']}",
            file=spec.path, construct="tokenizer.type = 'sentencepiece' or 'hf'",
            fix="smoke a spec with one of those tokenizers",
        )
    workdir.mkdir(parents=True, exist_ok=True)
    copy = scratch_copy(tree.root, workdir / "tree")
    report = workdir / "standins.txt"
    report.unlink(missing_ok=True)
    cpu = runs_on_cpu(cpu)
    env = standins.environment(standins.offered(copy), report) if cpu else {}
    port = SmokePort.of(spec, tree, config)
    model, prefix = prepare_data(copy, workdir, config.vocab_size, env=env, user_tree=tree.root,
                                 kind=spec["tokenizer.type"], tokenizer_type=port.tokenizer_type,
                                 add_bos=spec["tokenizer.add_bos"])
    args = training_arguments(port, workdir, config, model, prefix, cpu=cpu)
    run = launch(copy, spec.script, args, nproc=config.nproc, env=env, on_loss=on_loss, on_line=on_line, cpu=cpu)
    log = in_tree_terms(run.log, copy, tree.root)
    (workdir / "train.log").write_text(" ".join(run.command) + "\n\n" + run.log)
    exit_warning = run.ended_after_training(config.steps)
    error = classify(run.log, [copy, tree.root]) if run.returncode != 0 and exit_warning is None else None
    if error is not None and error.is_environment:
        raise error.error("the training run", workdir / "train.log")
    result = SmokeResult(losses=[run.losses[k] for k in sorted(run.losses)], command=run.command, log=log,
                         seconds=run.seconds, returncode=run.returncode, standins=standins.read_used(report),
                         error=error, exit_warning=exit_warning)
    if result.passed:
        shutil.rmtree(copy, ignore_errors=True)  # the data stays for the next run; the copy is made afresh
    return result
