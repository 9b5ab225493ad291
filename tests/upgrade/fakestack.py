"""Stacks on the fake gateway: deploy a Compose document, plan, and read the end state."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from tests.fakegateway import FakeClock, FakeGateway
from tests.fakelb import FakeLB
from upgrade_manager.diff import normalize
from upgrade_manager.errors import NotFound
from upgrade_manager.executor import Timeouts
from upgrade_manager.managed import lb_service_name
from upgrade_manager.model import Plan
from upgrade_manager.plan import make_plan
from upgrade_manager.state import state_name
from upgrade_manager.upgrade import (
    Options,
    deploy,
    desired_stack,
    lb_settings,
    read_running,
)

__all__ = ["STACK", "deployed", "images", "options", "plan_of", "replicas", "snapshot"]

STACK = "st"
_TOKEN_SECRET = re.compile(r"_dans-lb-token-[0-9a-f]+$")


def options(document: dict[str, Any], **kw: Any) -> Options:
    """The command-line choices for a Compose document given on stdin."""
    return Options(files=("-",), stack=STACK, environ={}, stdin_text=yaml.safe_dump(document),
                   lb_image="dans-lb:test", timeouts=Timeouts(healthy=60, drain=30, remove=30),
                   **kw)


def deployed(document: dict[str, Any], *, stop_delay: float = 0.5) -> FakeGateway:
    """A fake swarm on which `dans deploy --wait` of `document` has run."""
    gw = FakeGateway(FakeClock(), stop_delay=stop_delay)
    deploy(gw, options(document), wait=True)
    return gw


def plan_of(gw: FakeGateway, lb: FakeLB, document: dict[str, Any], **kw: Any) -> Plan:
    """The plan `dans upgrade` would make from the running stack to `document`."""
    opts = options(document)
    running = read_running(gw, STACK)
    desired = desired_stack(opts, lb_settings(running, opts))
    return make_plan(running, desired, generation="g1", old_table=lb.routes().to_dict(), **kw)


def snapshot(gw: FakeGateway, lb: FakeLB | None = None) -> dict[str, Any]:
    """Everything that makes the stack what it is, free of IDs, versions and the name of the
    LB's token secret (random per deploy).

    Services: normalized spec (network IDs read as names) and the image and state of every
    task meant to run; networks, configs and secrets by name (the upgrade state excluded);
    and the LB's routing table.
    """
    names = gw.network_names()
    services = {}
    for svc in gw.services(STACK):
        name = svc["Spec"]["Name"]
        spec = normalize(svc["Spec"], names)
        if name == lb_service_name(STACK):
            spec = _masked(spec)
        tasks = sorted((t["Spec"]["ContainerSpec"]["Image"], t["Status"]["State"])
                       for t in gw.tasks(name, desired_running=True))
        services[name] = {"spec": spec, "tasks": tasks}
    return {
        "services": services,
        "networks": sorted(n["Name"] for n in gw.networks(STACK)),
        "configs": sorted(c["Spec"]["Name"] for c in gw.configs(STACK)
                          if c["Spec"]["Name"] != state_name(STACK)),
        "secrets": sorted(_TOKEN_SECRET.sub("_dans-lb-token-*", s["Spec"]["Name"])
                          for s in gw.secrets(STACK)),
        "routes": lb.routes().to_dict() if lb else None,
    }


def _masked(spec: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    for ref in out["TaskTemplate"]["ContainerSpec"].get("Secrets") or []:
        ref["SecretName"] = _TOKEN_SECRET.sub("_dans-lb-token-*", ref["SecretName"])
    return out


def images(gw: FakeGateway) -> dict[str, list[str]]:
    """Each service's short name with the images of its running tasks."""
    out = {}
    for svc in gw.services(STACK):
        name = svc["Spec"]["Name"]
        out[name.removeprefix(STACK + "_")] = sorted(
            t["Spec"]["ContainerSpec"]["Image"] for t in gw.tasks(name, desired_running=True)
            if t["Status"]["State"] == "running")
    return out


def replicas(gw: FakeGateway, name: str) -> int:
    """The replicas in a service's spec (0 when it does not exist)."""
    try:
        spec = gw.inspect_service(f"{STACK}_{name}")["Spec"]
    except NotFound:
        return 0
    return int(spec["Mode"]["Replicated"]["Replicas"])
