"""The translator's one exception: the Compose input cannot be used.

It is the translator's own, so the package stands alone; `upgrade_manager` turns it into its
`ComposeError` (a `DansError`, exit status 2) where it calls the translator.
"""

from __future__ import annotations

__all__ = ["ComposeError"]


class ComposeError(Exception):
    """Bad Compose input; the message names file, line, service and key, one problem per
    line, and `problems` lists them one by one."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems) if problems else [message]
        super().__init__(message)
