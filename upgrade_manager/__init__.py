"""dans upgrade manager: plans and executes zero-downtime upgrades of Swarm stacks.

Kept import-light on purpose (`dans --help` imports it): nothing heavy runs at package import.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
