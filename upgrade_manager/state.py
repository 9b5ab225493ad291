"""Durable upgrade state, kept in the swarm itself.

Where: one Docker config per stack, `STACK_dans-upgrade`. Its data is the plan (JSON,
immutable, like every config's data); its labels hold the progress (steps done, status,
owner, heartbeat). Why a config: the swarm's Raft store replicates it to every manager, so
another manager can read, resume or roll back an upgrade that a dead process left behind;
nothing outside the cluster (a local file, a database) has to survive. Why it is also the
lock: creating a config whose name exists fails atomically in Raft, and label updates carry
the config's version index, so two writers cannot both believe they own the upgrade.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from upgrade_manager.errors import Conflict, NotFound, UpgradeError, UpgradeLocked
from upgrade_manager.gateway import STACK_LABEL, Gateway
from upgrade_manager.model import Plan, bytes_data

__all__ = ["STALE_AFTER", "StateStore", "UpgradeState", "state_name"]

PREFIX = "io.dans.upgrade."
STALE_AFTER = 20.0  # seconds without a heartbeat after which an owner is presumed dead
HEARTBEAT_EVERY = 3.0


def state_name(stack: str) -> str:
    """The name of the config that holds a stack's upgrade state."""
    return f"{stack}_dans-upgrade"


def this_owner() -> str:
    """Who we are, for lock messages: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class UpgradeState:
    """An upgrade in progress as stored in the swarm."""

    plan: Plan
    done: int  # steps finished, in plan order
    status: str  # running | failed | rolling-back | rolled-back
    owner: str
    heartbeat: float
    message: str = ""
    version: int = 0  # the config's version index at read time

    @property
    def stale(self) -> bool:
        """True when the owner is gone: no heartbeat for a while, or a dead local process."""
        if time.time() - self.heartbeat > STALE_AFTER:
            return True
        host, _, pid = self.owner.rpartition(":")
        return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


class StateStore:
    """Reads and writes one stack's upgrade state; the writer holds the lock."""

    def __init__(self, gw: Gateway, stack: str) -> None:
        self.gw = gw
        self.stack = stack
        self.name = state_name(stack)
        self._lock = threading.Lock()
        self._state: UpgradeState | None = None
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()
        self.lost: str | None = None  # set when another writer took over
        # The config's ID and spec as last read: a write then costs two engine calls (the
        # update and a read of the new version), not four.
        self._raw: dict[str, Any] | None = None

    def load(self) -> UpgradeState | None:
        """The stored state, or None when no upgrade is recorded."""
        try:
            raw = self.gw.inspect_config(self.name)
        except NotFound:
            return None
        self._raw = raw
        labels = raw["Spec"].get("Labels") or {}
        plan = Plan.from_json(bytes_data(raw["Spec"])["Data"])
        return UpgradeState(
            plan=plan,
            done=int(labels.get(PREFIX + "done", "0")),
            status=labels.get(PREFIX + "status", "running"),
            owner=labels.get(PREFIX + "owner", "?"),
            heartbeat=float(labels.get(PREFIX + "heartbeat", "0")),
            message=labels.get(PREFIX + "message", ""),
            version=int(raw["Version"]["Index"]),
        )

    def create(self, plan: Plan) -> UpgradeState:
        """Record a new upgrade and take its lock; UpgradeLocked if one exists already."""
        state = UpgradeState(plan, 0, "running", this_owner(), time.time())
        spec = {"Name": self.name, "Labels": self._labels(state),
                "Data": plan.to_json().encode()}
        try:
            self.gw.create_config(spec)
        except Conflict:
            raise UpgradeLocked(f"stack {self.stack} already has an upgrade recorded") from None
        return self._adopt()

    def take_over(self, state: UpgradeState) -> UpgradeState:
        """Become the owner of a stored upgrade whose owner is gone."""
        if not state.stale and state.owner != this_owner():
            age = time.time() - state.heartbeat
            raise UpgradeLocked(
                f"another dans ({state.owner}) is upgrading stack {self.stack} right now "
                f"(last heartbeat {age:.0f} s ago); wait for it, or if it is dead, retry in "
                f"{max(1, STALE_AFTER - age):.0f} s"
            )
        self._state = state
        self._write(replace(state, owner=this_owner(), heartbeat=time.time()))
        return self._adopt()

    def _adopt(self) -> UpgradeState:
        loaded = self.load()
        if loaded is None:
            raise UpgradeError(f"the upgrade state {self.name} vanished")
        self._state = loaded
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="dans-heartbeat",
                                      daemon=True)
        self._beat.start()
        return loaded

    def update(self, **changes: object) -> UpgradeState:
        """Write new progress (done, status, message) under the lock."""
        assert self._state is not None, "update() before create() or take_over()"
        with self._lock:
            self._check_lost()
            self._write(replace(self._state, heartbeat=time.time(), **changes))  # type: ignore[arg-type]
            return self._state

    def finish(self) -> None:
        """Stop the heartbeat and delete the state: the stack is consistent again."""
        self.release()
        self.gw.remove_config(self.name, missing_ok=True)

    def abandon(self) -> None:
        """Stop the heartbeat and mark the owner gone, so a rerun may take over at once."""
        self.release()
        if self._state is not None and not self.lost:
            self._write(replace(self._state, heartbeat=0.0))

    def release(self) -> None:
        """Stop the heartbeat and keep the state (for resume or rollback)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None

    def _check_lost(self) -> None:
        if self.lost:
            raise UpgradeLocked(self.lost)

    def _write(self, state: UpgradeState) -> None:
        assert self._state is not None
        raw = self._raw or self.gw.inspect_config(self.name)
        spec = {**raw["Spec"], "Labels": self._labels(state)}
        try:
            self.gw.update_config_labels(self.name, spec, version=self._state.version,
                                         config_id=str(raw["ID"]))
        except Conflict:
            self.lost = (f"another dans took over the upgrade of stack {self.stack}; "
                         "this process stops here")
            raise UpgradeLocked(self.lost) from None
        self._raw = self.gw.inspect_config(self.name)
        self._state = replace(state, version=int(self._raw["Version"]["Index"]))

    def _labels(self, state: UpgradeState) -> dict[str, str]:
        return {
            STACK_LABEL: self.stack,
            "io.dans.role": "upgrade-state",
            PREFIX + "done": str(state.done),
            PREFIX + "status": state.status,
            PREFIX + "owner": state.owner,
            PREFIX + "heartbeat": f"{state.heartbeat:.3f}",
            PREFIX + "message": state.message[:500],
            PREFIX + "strategy": state.plan.strategy,
            PREFIX + "generation": state.plan.generation,
        }

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            with self._lock:
                if self.lost or self._state is None:
                    return
                try:
                    self._write(replace(self._state, heartbeat=time.time()))
                except UpgradeLocked:
                    return
                except Exception:
                    continue
