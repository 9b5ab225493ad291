"""The LB's one exception: every message is written for the operator.

    LBError            a bad routing table or setting, a refused or failed admin request;
                       `http_status` is what the admin API answers it with (400 bad input,
                       404 unknown frontend or group, 409 conflict)

`lb` imports nothing from the other dans packages: the upgrade manager, which drives the
LB, maps this error into its own tree where it calls LB code (`upgrade_manager._lb`).
"""

from __future__ import annotations

__all__ = ["LBError"]


class LBError(Exception):
    """The LB refused or failed something; str() is the operator-facing message."""

    exit_code = 1  # `dans lb`'s exit status for it

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status: int = http_status
