"""`porter smoke`: a short, real training run of a ported model; does its loss fall?

One concern per module:
- config.py: what a run trains, and how (SmokeConfig: the tiny model's size, steps, processes);
- data.py: the corpus, the tokenizer trained on it, the token dataset the tree's builder writes;
- ds_config.py: the run's DeepSpeed config;
- port.py: the ported tree as a run sees it (the spec at the smoke size, profile and plan, made once);
- argv.py: the command line of the ported script;
- result.py: the losses, how the run ended, whether the loss fell (SmokeResult);
- run.py: the run itself, in a scratch copy of the tree (run_smoke).
Running the tree's code (scratch copy, processes, stand-ins, failures) is porter.treerun's.
"""

from porter.smoke.config import SmokeConfig
from porter.smoke.result import SmokeResult
from porter.smoke.run import run_smoke

__all__ = ["SmokeConfig", "SmokeResult", "run_smoke"]
