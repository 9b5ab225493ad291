"""Building the steps of a plan: one method per kind of step sequence.

Kept apart from `plan` (which decides *what* moves and why) so each stays small; the
builder only turns those decisions into executor steps with their specs and routing tables.
"""

from __future__ import annotations

import json
from typing import Any

from upgrade_manager.gateway import STACK_LABEL
from upgrade_manager.managed import LOGICAL_NAME_LABEL, ROLE_LABEL, ManagedStack
from upgrade_manager.mesh import moved_aliases
from upgrade_manager.model import (
    FAST_UPDATE,
    GENERATION_LABEL,
    Relay,
    RunningStack,
    Spec,
    Step,
    StepKind,
    data_digest,
    temp_name,
    text_data,
)

__all__ = ["StepBuilder"]


class StepBuilder:
    """Builds the steps of one plan; holds what every builder needs."""

    def __init__(self, running: RunningStack, desired: ManagedStack, generation: str) -> None:
        self.running = running
        self.desired = desired
        self.specs = desired.specs
        self.generation = generation
        self.network = f"{desired.stack}_dans-gen-{generation}"
        self.labels = {STACK_LABEL: desired.stack, GENERATION_LABEL: generation}

    def objects(self) -> list[Step]:
        """Create the networks, configs and secrets the new file adds."""
        steps = [Step(StepKind.CREATE_NETWORK, n, {"spec": s})
                 for n, s in sorted(self.specs.networks.items())
                 if n not in self.running.networks]
        steps += [Step(StepKind.CREATE_CONFIG, n, {"spec": text_data(s)})
                  for n, s in sorted(self.specs.configs.items())
                  if n not in self.running.configs]
        steps += [Step(StepKind.CREATE_SECRET, n, _secret_args(s))
                  for n, s in sorted(self.specs.secrets.items())
                  if n not in self.running.secrets]
        return steps

    def unused_objects(self) -> list[Step]:
        """Remove configs and secrets the new file no longer names (e.g. older content)."""
        old_configs = sorted(self.running.configs - set(self.specs.configs))
        old_secrets = sorted(self.running.secrets - set(self.specs.secrets))
        if not old_configs and not old_secrets:
            return []
        return [Step(StepKind.REMOVE_UNUSED, "configs-secrets",
                     {"configs": old_configs, "secrets": old_secrets},
                     note="kept if a service still uses them")]

    def prune_objects(self) -> list[Step]:
        """Remove the stack's networks that the new file no longer declares."""
        keep = set(self.specs.networks)
        return [Step(StepKind.REMOVE_NETWORK, n, note="not in the new file")
                for n in sorted(self.running.networks - keep)
                if "dans-gen-" not in n]

    def create(self, name: str) -> Step:
        """Create a service the new file adds, and wait until it is healthy."""
        return Step(StepKind.CREATE_SERVICE, name, {"spec": self.specs.services[name]},
                    note="new service")

    def update_in_place(self, name: str, note: str, *, stop_first: bool = False) -> Step:
        """Update a service in place with its own update config (or stop-first)."""
        args: dict[str, Any] = {"spec": self.specs.services[name]}
        if stop_first:
            args["via"] = {**_update_config(self.specs.services[name]), "Order": "stop-first"}
        return Step(StepKind.UPDATE_SERVICE, name, args, note=note)

    def rolling(self, changed: set[str], added: list[str]) -> list[Step]:
        """What `docker stack deploy` does: every service updates at once, each rolling."""
        steps = [self.create(n) for n in added]
        steps.append(Step(StepKind.UPDATE_SERVICES, "stack",
                          {"services": {n: self.specs.services[n] for n in sorted(changed)}},
                          note="all at once, each by its own update config"))
        return steps

    def chain_steps(self, levels: list[list[str]], relays: tuple[Relay, ...],
                    converge: set[str], scaled: set[str],
                    added: frozenset[str] = frozenset()) -> list[Step]:
        """The DANS sequence: new chain beside the old, switch, converge, switch back.

        What can run together does: all relays start in one step, then each level of the
        chain (callees first, so a service whose health needs its callees finds them), all
        of a level's services at once; the canonical services converge level by level after
        the old chain has stopped; the temporary services and relays go together. A member
        the new file `added` (it may call a changed service) has no old version to stop: its
        canonical service is created in its level once the old chain has stopped.
        """
        d = self.desired
        chain = [n for level in levels for n in level]
        temps = {n: temp_name(n, self.generation) for n in chain}
        group = f"dans-{self.generation}"
        fronts = [e.frontend for e in d.entries if e.service in temps]
        steps = [Step(StepKind.CREATE_NETWORK, self.network, {"spec": {
            "Name": self.network, "Driver": "overlay", "Attachable": False,
            "Labels": dict(self.labels)}}, note="generation network")]
        if relays:
            steps.append(Step(StepKind.CREATE_SERVICES, "relays",
                              {"services": {r.name: self.relay_spec(r) for r in relays}},
                              note="answer for " + ", ".join(r.short for r in relays)
                              + " on the generation network"))
        for i, level in enumerate(levels):
            steps.append(Step(StepKind.CREATE_SERVICES, f"level-{i}",
                              {"services": {temps[n]: self.temp_spec(n) for n in level}},
                              note="new " + ", ".join(self.specs.short_names[n] for n in level)
                              + " beside the old"))
        to_new = d.routing_table({group: temps}, {f: group for f in fronts})
        steps.append(Step(StepKind.ROUTE, "lb", {"table": to_new.to_dict()},
                          note="new requests go to the new chain"))
        steps.append(Step(StepKind.DRAIN, "lb", {"frontends": fronts, "group": "main"},
                          note="old chain finishes its requests"))
        steps.append(self._converge_step(levels, converge, scaled, added))
        back = d.routing_table({group: temps})
        back_dict = back.to_dict()
        for fe in back_dict["frontends"]:
            if group in fe["groups"]:
                fe["groups"][group]["state"] = "draining"
        steps.append(Step(StepKind.ROUTE, "lb-back", {"table": back_dict},
                          note="new requests go to the canonical services"))
        steps.append(Step(StepKind.DRAIN, "lb-back", {"frontends": fronts, "group": group},
                          note="temporary chain finishes its requests"))
        steps.append(Step(StepKind.ROUTE, "lb-final", {"table": d.routing_table().to_dict()}))
        steps.append(Step(StepKind.REMOVE_SERVICES, "temporary",
                          {"names": [*temps.values(), *(r.name for r in relays)]},
                          note="temporary services and relays, together"))
        steps.append(Step(StepKind.REMOVE_NETWORK, self.network, note="generation network"))
        return steps

    def _converge_step(self, levels: list[list[str]], converge: set[str], scaled: set[str],
                       added: frozenset[str]) -> Step:
        """Converge: the old chain stops first (a caller that works on its own, e.g. a queue
        worker, must not call a callee that already runs the new version), then each level
        takes its new spec, callees first, while the temporary chain serves every request."""
        chain = {n for level in levels for n in level}
        order = [list(level) for level in levels]
        rest = sorted(scaled - chain)
        if rest:
            order.append(rest)
        services = {n: self.specs.services[n] for level in order for n in level}
        new = added & chain
        args: dict[str, Any] = {"services": services, "via": FAST_UPDATE,
                                "stop": sorted(chain - new),
                                "levels": [lv for lv in order if lv],
                                "companions": sorted(chain - converge - new)}
        if new:
            args["create"] = sorted(new)
        return Step(StepKind.CONVERGE, "canonical", args,
                    note="old chain stops, canonical services take the new specs"
                    + ("; " + ", ".join(self.specs.short_names[n] for n in sorted(new))
                       + " created (added by the file)" if new else ""))

    def temp_spec(self, full: str) -> Spec:
        """A temporary copy of a service: on the generation network only, under its names."""
        spec: Spec = json.loads(json.dumps(self.specs.services[full]))
        short = self.specs.short_names[full]
        spec["Name"] = temp_name(full, self.generation)
        spec["Labels"] = {**(spec.get("Labels") or {}), **self.labels}
        task = spec["TaskTemplate"]
        aliases = {short}
        for net in task.get("Networks") or []:
            aliases |= set(net.get("Aliases") or [])
        for names in moved_aliases(spec).values():  # a meshed service's, on its waypoint
            aliases |= set(names)
        networks = [{"Target": self.network, "Aliases": sorted(aliases)}]
        if full in self.desired.entry_services():
            networks.append({"Target": self.desired.edge_network})
        task["Networks"] = networks
        endpoint = spec.get("EndpointSpec") or {}
        endpoint.pop("Ports", None)  # published ports belong to the canonical service
        spec["EndpointSpec"] = endpoint
        return spec

    def relay_spec(self, relay: Relay) -> Spec:
        """A transparent relay answering for `relay.short` on every TCP port of it.

        The LB program's `relay` mode, on an old network of the real service and on the
        generation network under its short name. It needs NET_ADMIN in its own container
        (one redirect rule), runs no admin API and holds no token. It is placed as the
        service it answers for is (`relay_placement`).
        """
        target = self.specs.services[relay.target]
        mode = (target.get("EndpointSpec") or {}).get("Mode", "vip")
        second = 1_000_000_000
        return {
            "Name": relay.name,
            "Labels": {**self.labels, ROLE_LABEL: "relay"},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": self.desired.settings.image,
                    "Args": ["relay", "--target", f"tasks.{relay.target}"],
                    "CapabilityAdd": ["CAP_NET_ADMIN"],
                    "Healthcheck": {"Test": ["CMD", "test", "-f", "/tmp/dans-relay-ready"],
                                    "Interval": second, "Timeout": second, "Retries": 3,
                                    "StartPeriod": 0},
                    "StopGracePeriod": 5 * second,
                },
                "Networks": [{"Target": relay.network},
                             {"Target": self.network, "Aliases": [relay.short]}],
                "RestartPolicy": {"Condition": "any", "MaxAttempts": 0},
                **relay_placement(target),
            },
            "Mode": {"Replicated": {"Replicas": 1}},
            "EndpointSpec": {"Mode": mode},
        }


def relay_placement(target: Spec) -> dict[str, Any]:
    """The `Placement` a relay takes from the service it answers for: its constraints,
    preferences and max replicas per node (a node label may say where the service's network
    or data is reachable), not its platforms (the relay runs the LB image, not the service's).
    Nothing when the service has none. A temporary copy (`temp_spec`, `split._half`) keeps
    its service's whole placement, being a copy of its spec."""
    placement = (target.get("TaskTemplate") or {}).get("Placement") or {}
    kept = {k: json.loads(json.dumps(placement[k]))
            for k in ("Constraints", "Preferences", "MaxReplicas") if placement.get(k)}
    return {"Placement": kept} if kept else {}


def _update_config(spec: Spec) -> dict[str, Any]:
    return dict(spec.get("UpdateConfig") or {})


def _secret_args(spec: Spec) -> dict[str, Any]:
    """A secret's step: its spec without the data, and the data's digest.

    The plan is stored in a Docker config, which any `docker config inspect` shows and the
    swarm does not encrypt at rest: secret content never goes there. The executor gets the
    content from the Compose files (again, on resume) and checks it against the digest.
    """
    out = {k: v for k, v in spec.items() if k != "Data"}
    args: dict[str, Any] = {"spec": out,
                            "logical": (spec.get("Labels") or {}).get(LOGICAL_NAME_LABEL)}
    if isinstance(spec.get("Data"), bytes):
        args["digest"] = data_digest(spec["Data"])
    return args


