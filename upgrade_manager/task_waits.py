"""The executor's bounded waits for things to be gone: tasks stopped, a network removed.

On several nodes both need care. A node whose engine stopped (or that lost its managers) is
*down*: its tasks keep the state they last reported, "running", until it is back, and the
orchestrator has already replaced those meant to run. Waiting for them to stop would wait for
the node; so the tasks of down nodes are left out (they run nothing the swarm routes to: the
managers take a down node's tasks out of service discovery). A removed network may still be
listed for a moment while the managers free its resources; a step that removes it is over
when the engine no longer knows it, so a resumed or following step never meets it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from upgrade_manager.errors import DansError, NotFound, UpgradeError
from upgrade_manager.gateway import Gateway

__all__ = ["POLL_INTERVAL", "remove_network", "wait_stopped"]

POLL_INTERVAL = 0.3  # seconds between two looks


class Clock(Protocol):
    """The executor's clock (`executor.Clock`)."""

    def monotonic(self) -> float: ...
    def sleep(self, seconds: float, /) -> None: ...


def wait_stopped(gw: Gateway, service_ids: Iterable[str], clock: Clock, timeout: float,
                 what: str) -> None:
    """Wait until no task of the services (by ID, removed ones too) may still run, on any
    node that is up; UpgradeError naming `what` after `timeout` seconds."""
    ids = list(service_ids)
    if not ids:
        return
    deadline = clock.monotonic() + timeout
    while any(gw.live_tasks_of(ids, skip_nodes=gw.down_nodes()).values()):
        if clock.monotonic() > deadline:
            raise UpgradeError(f"{what} after {timeout:.0f} s")
        clock.sleep(POLL_INTERVAL)


def remove_network(gw: Gateway, name: str, clock: Clock, timeout: float) -> None:
    """Remove a network and wait until the engine no longer knows it.

    The engine refuses while a task that used it has not stopped (it frees a network a moment
    after its last task): the removal is tried again until `timeout`, as is a network that is
    still listed after its removal was taken; then the engine's refusal, or UpgradeError.
    """
    deadline = clock.monotonic() + timeout
    while True:
        try:
            gw.remove_network(name, missing_ok=True)
            gw.inspect_network(name)
        except NotFound:
            return
        except DansError:
            if clock.monotonic() > deadline:
                raise
        else:
            if clock.monotonic() > deadline:
                raise UpgradeError(f"network {name} is still there {timeout:.0f} s after "
                                   "its removal")
        clock.sleep(POLL_INTERVAL)
