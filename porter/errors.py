"""The one error type porter reports to users.

Every refusal names the file, the construct porter looked for, what it found instead, and
what the user can do. The CLI prints it without a traceback (unless --debug) and exits
non-zero; nothing has been written when it is raised.
"""

from __future__ import annotations


class PorterError(Exception):
    """A clear, user-facing refusal."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        construct: str | None = None,
        found: str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.construct = construct
        self.found = found
        self.fix = fix

    def __str__(self) -> str:
        lines = [self.message]
        if self.file:
            lines.append(f"  file:       {self.file}")
        if self.construct:
            lines.append(f"  looked for: {self.construct}")
        if self.found:
            lines.append(f"  found:      {self.found}")
        if self.fix:
            lines.append(f"  fix:        {self.fix}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "message": self.message,
            "file": self.file,
            "construct": self.construct,
            "found": self.found,
            "fix": self.fix,
        }


class AnchorError(PorterError):
    """A rewrite could not find the code structure it is anchored on."""
