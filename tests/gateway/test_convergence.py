"""Judging convergence from one look: old tasks still running are not the new version."""

from __future__ import annotations

import copy
from typing import Any

from upgrade_manager.convergence import runs_current_spec, state_of

Spec = dict[str, Any]

TEMPLATE: Spec = {
    "ContainerSpec": {"Image": "app:2", "Env": ["GEN=2"], "Init": False, "DNSConfig": {},
                      "Isolation": "default"},
    "Resources": {"Limits": {}, "Reservations": {}}, "Placement": {}, "ForceUpdate": 0,
    "Runtime": "container",
}


def task(spec: Spec, state: str = "running", desired: str = "running", n: int = 1) -> Spec:
    return {"ID": f"t{n}", "ServiceID": "s1", "DesiredState": desired, "Slot": n,
            "Status": {"State": state}, "Spec": copy.deepcopy(spec),
            "UpdatedAt": f"2026-01-01T00:00:0{n}Z"}


def old_spec() -> Spec:
    spec = copy.deepcopy(TEMPLATE)
    spec["ContainerSpec"]["Env"] = ["GEN=1"]
    del spec["Runtime"]  # the engine shows no runtime in a task's spec
    return spec


def service(update: Spec | None = None, replicas: int = 2) -> Spec:
    svc: Spec = {"ID": "s1", "Spec": {"Name": "app", "TaskTemplate": copy.deepcopy(TEMPLATE),
                                      "Mode": {"Replicated": {"Replicas": replicas}}}}
    if update is not None:
        svc["UpdateStatus"] = update
    return svc


def test_a_task_shown_as_the_engine_shows_it_runs_the_current_spec() -> None:
    spec = copy.deepcopy(TEMPLATE)
    del spec["Runtime"]
    spec["ContainerSpec"].pop("DNSConfig")  # an empty member left out
    assert runs_current_spec(task(spec), TEMPLATE)


def test_a_task_of_the_previous_container_spec_is_stale() -> None:
    assert not runs_current_spec(task(old_spec()), TEMPLATE)
    image = copy.deepcopy(TEMPLATE)
    image["ContainerSpec"]["Image"] = "app:1"
    assert not runs_current_spec(task(image), TEMPLATE)


def test_a_forced_update_makes_every_task_stale() -> None:
    forced = copy.deepcopy(TEMPLATE)
    forced["ForceUpdate"] = 1
    assert not runs_current_spec(task(TEMPLATE), forced)


def test_placement_alone_is_left_to_the_engine() -> None:
    moved = copy.deepcopy(TEMPLATE)
    moved["Placement"] = {"Constraints": ["node.role==manager"]}
    assert runs_current_spec(task(TEMPLATE), moved)


def test_a_task_without_a_spec_cannot_be_judged_and_counts_as_current() -> None:
    bare = task(TEMPLATE)
    del bare["Spec"]
    assert runs_current_spec(bare, TEMPLATE)


def test_just_after_an_update_the_old_tasks_are_not_converged() -> None:
    # The engine resets the update status on an update; until its updater begins, the old
    # tasks run as if nothing happened.
    state = state_of(service(), [task(old_spec(), n=1), task(old_spec(), n=2)])
    assert (state.running, state.stale, state.converged) == (0, 2, False)
    assert "2 more on the previous spec" in state.describe()


def test_half_way_and_done() -> None:
    half = state_of(service({"State": "updating"}),
                    [task(TEMPLATE, n=1), task(old_spec(), n=2)])
    assert (half.running, half.stale, half.converged) == (1, 1, False)
    done = state_of(service({"State": "completed"}),
                    [task(TEMPLATE, n=1), task(TEMPLATE, n=2),
                     task(old_spec(), state="shutdown", desired="shutdown", n=3)])
    assert (done.running, done.stale, done.converged) == (2, 0, True)
