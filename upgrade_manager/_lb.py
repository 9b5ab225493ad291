"""The seam to the `lb` package: its errors become dans's `LBError` where dans calls it.

`lb` has its own exception (`lb.errors.LBError`, with the HTTP status the admin API answers)
and imports nothing from dans. Every place the upgrade manager runs LB code (building or
reading routing tables, the admin client, the `dans lb` command) goes through `lb_errors`,
so what reaches the executor, the facade and the CLI is a `DansError` like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lb.errors import LBError as LBFault
from upgrade_manager.errors import LBError

__all__ = ["LBFault", "lb_errors"]


@contextmanager
def lb_errors() -> Iterator[None]:
    """Run the block; an `lb.errors.LBError` from it leaves as `upgrade_manager.errors.LBError`."""
    try:
        yield
    except LBFault as exc:
        raise LBError(str(exc)) from exc
