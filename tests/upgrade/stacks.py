"""Small Compose documents for planner tests: front -> api -> store, as in DESIGN.md §1."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from compose_translator import load_project, translate
from upgrade_manager.managed import LBSettings, ManagedStack, manage
from upgrade_manager.model import Plan, RunningStack
from upgrade_manager.plan import make_plan

SETTINGS = LBSettings(image="dans-lb:test", token_secret="st_dans-lb-token-0")

BASE: dict[str, Any] = {
    "version": "3.8",
    "services": {
        "front": {
            "image": "app/front:1",
            "environment": {"API_URL": "http://api:8000/v1"},
            "ports": ["8080:80"],
            "deploy": {"replicas": 2, "endpoint_mode": "dnsrr"},
        },
        "api": {
            "image": "app/api:1",
            "environment": {"DB": "postgresql://u:p@store:5432/x"},
            "deploy": {"replicas": 2, "endpoint_mode": "dnsrr"},
        },
        "store": {
            "image": "app/store:1",
            "volumes": ["data:/data"],
            "deploy": {"endpoint_mode": "dnsrr"},
            "x-dans": {"calls": []},  # a database calls no service of the stack
        },
    },
    "volumes": {"data": {}},
}


def doc(**changes: dict[str, Any] | None) -> dict[str, Any]:
    """BASE with per-service changes merged in (a value of None removes the service)."""
    out = copy.deepcopy(BASE)
    for name, change in changes.items():
        if change is None:
            out["services"].pop(name)
        else:
            out["services"].setdefault(name, {}).update(change)
    return out


def managed(document: dict[str, Any], stack: str = "st") -> ManagedStack:
    """Translate a document as `dans deploy` would."""
    project = load_project(["-"], stdin_text=yaml.safe_dump(document), environ={})
    return manage(translate(project, stack), SETTINGS)


def running(stack: ManagedStack) -> RunningStack:
    """The running state right after a `dans deploy` of `stack`."""
    return RunningStack(stack.stack, copy.deepcopy(stack.specs.services), {},
                        frozenset(stack.specs.networks))


def front_and_api_plan() -> Plan:
    """The plan that moves front (a new API URL) and api (a new image) of BASE, as `g1`."""
    before = managed(BASE)
    new = doc(front={"environment": {"API_URL": "http://api:8000/v2"}},
              api={"image": "app/api:2"})
    return make_plan(running(before), managed(new), generation="g1",
                     old_table=before.routing_table().to_dict())
