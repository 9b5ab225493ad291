"""Step kinds are typed, each with one rule (apply, undo), and stored plans keep their form."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from lb.errors import LBError as LBFault
from tests.fakegateway import FakeGateway
from tests.fakelb import FakeLB
from tests.upgrade.stacks import front_and_api_plan
from upgrade_manager.errors import LBError, UpgradeError
from upgrade_manager.executor import RULES, Executor, Undo, rollback_steps, rule_of
from upgrade_manager.model import Plan, Step, StepKind
from upgrade_manager.state import StateStore

# The kinds as plans recorded them before they were typed: a stored plan names them so.
RECORDED_KINDS = [
    "create_network", "create_config", "create_secret", "create_service", "create_services",
    "create_relay", "create_temp", "update_service", "update_services", "converge", "route",
    "drain", "remove_service", "remove_services", "remove_network", "remove_config",
    "remove_secret", "remove_unused", "scale_services",
]


@pytest.fixture
def plan() -> Plan:
    return front_and_api_plan()


@pytest.mark.parametrize("kind", list(StepKind), ids=str)
def test_every_kind_has_one_rule_to_apply_and_to_undo(kind: StepKind) -> None:
    rule = rule_of(kind)
    assert rule.apply.__qualname__.startswith("Executor._do_"), rule.apply
    assert isinstance(rule.undo, Undo)
    # What a step creates as an object, a step of its inverse kind removes.
    assert (rule.inverse is not None) == (rule.undo is Undo.REMOVE_OBJECT)
    if rule.inverse is not None:
        assert rule.inverse.value == kind.value.replace("create_", "remove_")
        assert rule_of(rule.inverse).undo is Undo.NOTHING


def test_the_registry_names_every_kind_and_nothing_else() -> None:
    assert set(RULES) == set(StepKind)


def test_the_kinds_keep_the_recorded_names() -> None:
    assert sorted(k.value for k in StepKind) == sorted(RECORDED_KINDS)
    assert all(StepKind(name) == name for name in RECORDED_KINDS)


def _stored(plan: Plan, **step_kinds: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(plan.to_json())
    for i, kind in step_kinds.items():
        data["steps"][int(i.removeprefix("step"))]["kind"] = kind
    return data


def test_a_plan_recorded_with_plain_strings_loads_typed_and_writes_the_same(plan: Plan) -> None:
    text = json.dumps(_stored(plan), sort_keys=True)
    assert '"kind": "create_network"' in text  # the durable form: plain strings
    loaded = Plan.from_json(text)
    assert all(type(s.kind) is StepKind for s in loaded.steps)
    assert loaded == plan
    assert loaded.to_json() == text


def test_an_unknown_kind_in_a_stored_plan_is_a_clear_error(plan: Plan) -> None:
    text = json.dumps(_stored(plan, step2="teleport_service"))
    with pytest.raises(UpgradeError, match=r"unknown kind 'teleport_service'.*another version"):
        Plan.from_json(text)


def test_the_state_store_reports_an_unknown_kind_it_reads(plan: Plan) -> None:
    gw = FakeGateway()
    store = StateStore(gw, "st")
    store.create(plan)
    config = gw.inspect_config(store.name)
    stored = _stored(Plan.from_json(base64.b64decode(config["Spec"]["Data"])),
                     step0="teleport_service")
    gw.remove_config(store.name)
    gw.create_config({**config["Spec"], "Data": json.dumps(stored).encode()})
    with pytest.raises(UpgradeError, match="unknown kind 'teleport_service'"):
        StateStore(gw, "st").load()


def test_rollback_undoes_through_the_same_rules(plan: Plan) -> None:
    # Every kind the plan holds is undone as its rule says: a rollback from the last
    # undoable step removes what was created and restores what was changed.
    last = [s.key for s in plan.steps].index("route:lb-back")
    undo = rollback_steps(plan, last)
    kinds = {rule_of(s.kind).undo for s in plan.steps[: last + 1]}
    assert Undo.RESTORE_SPECS in kinds and Undo.REROUTE in kinds
    assert [s.kind for s in undo][:2] == [StepKind.UPDATE_SERVICES, StepKind.ROUTE]
    assert undo[-1] == Step(StepKind.REMOVE_NETWORK, "st_dans-gen-g1")


def test_an_lb_error_leaves_the_executor_as_a_dans_error() -> None:
    gw = FakeGateway()
    events: list[str] = []
    executor = Executor(gw, lambda: FakeLB(gw, "st"),
                        lambda event, _step, _s, msg: events.append(f"{event} {msg}"))
    step = Step(StepKind.DRAIN, "lb", {"frontends": ["web"], "group": "main"})
    with pytest.raises(LBError, match="no frontend named 'web'") as caught:
        executor.run([step], 0, lambda _n: None)
    assert isinstance(caught.value.__cause__, LBFault)
    assert events[-1].startswith("failed ") and "no frontend named 'web'" in events[-1]
