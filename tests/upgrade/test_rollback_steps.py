"""What a rollback undoes depends on how far the upgrade got."""

from __future__ import annotations

import pytest

from tests.upgrade.stacks import front_and_api_plan
from upgrade_manager.errors import UpgradeError
from upgrade_manager.executor import NO_RETURN_STEP, rollback_steps
from upgrade_manager.model import Plan


@pytest.fixture
def plan() -> Plan:
    return front_and_api_plan()


def keys(plan: Plan, done: int) -> list[str]:
    return [s.key for s in rollback_steps(plan, done)]


def test_before_any_switch_only_temporary_objects_go(plan: Plan) -> None:
    # Killed while the second temporary service was starting (3 steps done).
    assert keys(plan, 3) == ["remove_services:created", "remove_network:st_dans-gen-g1"]
    removed = rollback_steps(plan, 3)[0].args["names"]
    assert removed == ["st_dans-relay-g1-store", "st_api-dans-g1", "st_front-dans-g1"]


def test_after_the_switch_traffic_returns_to_the_old_chain_first(plan: Plan) -> None:
    got = keys(plan, 5)  # routed to the new chain, draining the old one
    assert got == ["route:lb-old", "drain:lb-old-front-8080", "route:lb-restore",
                   "remove_services:created", "remove_network:st_dans-gen-g1"]
    table = rollback_steps(plan, 5)[0].args["table"]["frontends"][0]
    assert table["active"] == "main"
    assert table["groups"]["dans-g1"]["state"] == "draining"


def test_during_converge_canonical_services_go_back_first(plan: Plan) -> None:
    steps = rollback_steps(plan, 6)  # converge in progress
    assert steps[0].key == "update_services:previous"
    assert sorted(steps[0].args["services"]) == ["st_api", "st_front"]
    assert steps[0].args["services"]["st_api"]["TaskTemplate"]["ContainerSpec"]["Image"] \
        == "app/api:1"


def test_past_the_point_of_no_return_rollback_is_refused(plan: Plan) -> None:
    done = [s.key for s in plan.steps].index(NO_RETURN_STEP) + 1
    with pytest.raises(UpgradeError, match="point of no return"):
        rollback_steps(plan, done)
