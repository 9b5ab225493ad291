"""dans upgrade manager: plans and executes zero-downtime upgrades of Swarm stacks.

Public surface, by module (the package itself exports only its version, to stay cheap to
import): `upgrade` (the facade the CLI calls: deploy, plan, run, resume, roll back, status),
`plan` and `model` (the pure planner and its frozen, JSON-able plan), `errors` (the
`DansError` tree), `gateway` (the one module that talks to Docker), `lb_image` (the LB's
image) and `cli` (the `dans` command). The modules with a leading underscore are internal.

Kept import-light on purpose (`dans --help` imports it): nothing heavy runs at package import.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
