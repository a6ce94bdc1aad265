"""The work folder of a smoke or verify run: made, kept after a failure, removed after success.

`porter smoke` and `porter verify` need a folder for their corpus, checkpoints, logs and
the scratch copy of the tree. The user may name one (--workdir: kept, and reused when run
again); otherwise porter makes one in the temporary folder, named after the command and the
tree, removes it when the run passes and keeps it (and says where) when it fails.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WorkFolder:
    path: Path
    made: bool  # made by porter (removed after success); False: the user's --workdir

    @classmethod
    def open(cls, given: Path | None, command: str, tree: Path) -> WorkFolder:
        if given is not None:
            path = Path(given).resolve()
            path.mkdir(parents=True, exist_ok=True)
            return cls(path, made=False)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(tree).resolve().name) or "tree"
        return cls(Path(tempfile.mkdtemp(prefix=f"porter-{command}-{name}-")), made=True)

    def close(self, passed: bool) -> str | None:
        """Remove the folder porter made if the run passed; else say where what is left lies."""
        if passed and self.made:
            shutil.rmtree(self.path, ignore_errors=True)
            return None
        if passed:
            return None
        return f"work folder kept for the failure: {self.path}"
