"""What a smoke run trains, and how: the tiny model's size, the steps, the processes and engines."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from porter.errors import PorterError
from porter.spec import Spec
from porter.treerun.shape import RunShape


@dataclass(frozen=True)
class SmokeConfig(RunShape):
    seq_length: int = 64
    batch_size: int = 4  # sequences per micro-batch
    vocab_size: int = 1000
    steps: int = 20
    nproc: int = 1
    pipeline_parallel: int = 1
    tensor_parallel: int = 1
    pipe: bool = True  # DeepSpeed's pipeline engine; False: --no-pipeline-parallel
    global_batch_size: int = 8
    lr: float = 1e-3
    zero_stage: int = 0  # DeepSpeed ZeRO; 2 and 3 need the plain engine (pipe=False)
    extra_args: list[str] = field(default_factory=list)

    def check(self, judge_loss: bool = True) -> None:
        """Refuse options a run cannot honour, before anything runs (PorterError, exit status 2).

        `judge_loss`: the run must also be long enough to judge the loss (porter smoke); a run
        made for its checkpoint may be shorter.
        """
        parallel = self.tensor_parallel * self.pipeline_parallel
        problems = [
            (judge_loss and self.steps < 10, f"--steps {self.steps}",
             "smoke compares the mean loss of the first 5 steps with the last 5: 10 steps at least",
             "--steps 10 (or more)"),
            (self.nproc < 1 or self.tensor_parallel < 1 or self.pipeline_parallel < 1,
             f"--nproc {self.nproc} --tp {self.tensor_parallel} --pp {self.pipeline_parallel}",
             "sizes of 1 or more", "--nproc 1 --tp 1 --pp 1"),
            (self.zero_stage not in (0, 1, 2, 3), f"--zero-stage {self.zero_stage}", "ZeRO stage 0, 1, 2 or 3",
             "--zero-stage 1"),
            (self.zero_stage >= 2 and self.pipe, f"--zero-stage {self.zero_stage} with the pipeline engine",
             "DeepSpeed's pipeline engine takes ZeRO stages 0 and 1 only", "--no-pipe (the plain engine)"),
        ]
        problems += [
            (parallel >= 1 and self.nproc % parallel != 0, f"--nproc {self.nproc} --tp {self.tensor_parallel} --pp "
             f"{self.pipeline_parallel}", "--nproc a multiple of --tp x --pp (the rest is data parallel)",
             f"--nproc {parallel}"),
            (self.pipeline_parallel >= 1 and self.num_layers % self.pipeline_parallel != 0,
             f"--pp {self.pipeline_parallel}", f"a pipeline size that divides the {self.num_layers} layers of the "
             "tiny model", "--pp 1 or --pp 2"),
            (self.tensor_parallel >= 1 and self.num_attention_heads % self.tensor_parallel != 0,
             f"--tp {self.tensor_parallel}", f"a tensor-parallel size that divides the {self.num_attention_heads} "
             "attention heads of the tiny model", "--tp 1, 2 or 4"),
        ]
        if parallel >= 1 and self.nproc >= parallel and self.nproc % parallel == 0:
            problems.append((self.global_batch_size % (self.batch_size * self.data_parallel) != 0,
                             f"--nproc {self.nproc} (data parallel {self.data_parallel})",
                             f"a data-parallel size that divides the global batch of {self.global_batch_size} "
                             f"sequences in micro-batches of {self.batch_size}", "--nproc 1 or 2"))
        for bad, found, wanted, fix in problems:
            if bad:
                raise PorterError(f"porter smoke cannot run with {found}", construct=wanted, found=found,
                                  fix=f"pass {fix}")

    @property
    def data_parallel(self) -> int:
        return self.nproc // (self.pipeline_parallel * self.tensor_parallel)

    def for_spec(self, spec: Spec) -> SmokeConfig:
        """The config for this spec's model: a model with a difference the pipeline model cannot
        carry (a mixture of experts) trains on the plain engine, as its entry point does; a
        pipeline size above 1 is refused for it, naming the difference."""
        plain_only = [d.name for d in spec.wanted() if not d.pipeline_engine]
        if not plain_only:
            return self
        if self.pipeline_parallel > 1:
            raise PorterError(f"porter smoke cannot run {spec.name} with --pp {self.pipeline_parallel}",
                              construct="a model the pipeline engine can carry",
                              found=f"{', '.join(plain_only)}: the model trains on DeepSpeed's plain engine only",
                              fix="pass --pp 1 (data or expert parallel processes with --nproc)")
        return replace(self, pipe=False)
