"""The one exception tree of dans; every message is written for the user.

    DansError                      root; the CLI prints "Error: <message>" and exits non-zero
    ├── ComposeError               bad Compose input (the translator's error, mapped in _compose)
    ├── EngineError                the Docker engine refused or failed a request
    │   ├── EngineUnavailable      no engine, or not a swarm manager
    │   ├── NotFound               the object does not exist
    │   ├── Conflict               name taken, or a stale Version.Index (someone else wrote)
    │   └── ConvergeTimeout        a service did not reach its desired state in time
    ├── PlanError                  the requested upgrade cannot be planned
    ├── UpgradeError               an upgrade step failed (state is kept for resume/rollback)
    │   └── UpgradeLocked          another upgrade of the same stack is running
    └── LBError                    the load balancer's admin API refused or failed

This module is a leaf: it imports nothing from the project, so every package may use it.
"""

from __future__ import annotations

__all__ = [
    "ComposeError",
    "Conflict",
    "ConvergeTimeout",
    "DansError",
    "EngineError",
    "EngineUnavailable",
    "LBError",
    "NotFound",
    "PlanError",
    "UpgradeError",
    "UpgradeLocked",
]


class DansError(Exception):
    """Root of every error dans raises on purpose; str() is the user-facing message."""

    exit_code = 1


class ComposeError(DansError):
    """The Compose input cannot be used; the message names file, line, service and key."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems) if problems else [message]
        super().__init__(message)


class EngineError(DansError):
    """The Docker engine refused or failed a request."""


class EngineUnavailable(EngineError):
    """No engine answers, or this node is not a swarm manager."""


class NotFound(EngineError):
    """The requested engine object does not exist."""


class Conflict(EngineError):
    """A name is taken, or the object changed since it was read (stale Version.Index)."""


class ConvergeTimeout(EngineError):
    """A service did not reach its desired state in time; the message names the task."""


class PlanError(DansError):
    """The requested upgrade cannot be planned."""


class UpgradeError(DansError):
    """An upgrade step failed; durable state is kept for resume or rollback."""


class UpgradeLocked(UpgradeError):
    """Another upgrade of the same stack holds the lock."""


class LBError(DansError):
    """The load balancer's admin API refused or failed a request."""
