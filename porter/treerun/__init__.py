"""Running a tree's own code: the room `porter smoke`, `porter verify` and `porter convert` share.

The tree's `megatron` keeps global state and must come first on sys.path, so its code runs
in processes of its own, in a scratch copy of the tree (the user's tree is never written):

- `scratch.py`: the scratch copy, and logs written back in the tree's own paths;
- `process.py`: a run's environment, and stopping a run with every process it started;
- `script.py`: one of the tree's scripts (pretrain_*.py) run to the end, its losses read as they come;
- `in_tree.py`: a porter module run inside the tree on a job file (verify's workers, the args parser);
- `shape.py`: the size of the tiny models smoke trains and verify compares;
- `argv.py`: what such a run passes to the tree: its entry point and a command line its parser takes;
- `device.py`: CPU (with the stand-ins) or the machine's CUDA device;
- `failure.py`: why a run failed, as a user needs to hear it;
- `standins/`: what the tree's fork- and CUDA-only pieces lack on a CPU, supplied in the run only.

Nothing here imports convert, verify or smoke: they import this. Child processes import
`porter.treerun.standins.launch` first, so this package's __init__ imports nothing.
"""
