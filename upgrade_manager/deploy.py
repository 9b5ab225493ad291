"""`dans deploy`: create or update a stack's networks, secrets, configs and services exactly
as `docker stack deploy --resolve-image never` does, through the gateway.

Like the CLI: networks that exist (by the stack label) are left alone; existing secrets and
configs get their spec re-sent (the engine accepts label changes only); an existing service
is updated with the new spec at its current version, keeping its `ForceUpdate` counter and,
when the Compose image did not change, the image string the engine already has.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from compose_translator import IMAGE_LABEL, StackSpecs
from upgrade_manager.errors import Conflict, EngineError, NotFound, PlanError
from upgrade_manager.gateway import Gateway
from upgrade_manager.managed import LOGICAL_NAME_LABEL, ROLE_LABEL, TOKEN_ROLE
from upgrade_manager.model import Spec, text_data

__all__ = ["DeployResult", "Say", "deploy_stack", "refuse_plain_networks", "remove_old_content",
           "remove_old_tokens", "resolve_references", "timed"]

Say = Callable[[str], None]  # tells the user one line of what is happening


@dataclass
class DeployResult:
    """What a deploy did to a stack, by full object name (`--json` prints it as it is)."""

    stack: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _check_external_networks(gw: Gateway, names: list[str]) -> None:
    for name in names:
        if name in ("bridge", "host", "none", "default") or name.startswith("container:"):
            continue
        try:
            net = gw.inspect_network(name)
        except NotFound:
            raise EngineError(f"network {name!r} is declared as external, but could not be "
                              "found. You need to create a swarm-scoped network before the "
                              "stack is deployed") from None
        if net.get("Scope") != "swarm":
            raise EngineError(f"network {name!r} is declared as external, but it is not in the "
                              f"right scope: {net.get('Scope')!r} instead of \"swarm\"")


def resolve_references(gw: Gateway, spec: Spec) -> Spec:
    """A copy of a translated ServiceSpec with secret and config IDs filled in by name."""
    spec = copy.deepcopy(spec)
    container = spec["TaskTemplate"]["ContainerSpec"]
    for kind, key in (("secret", "Secrets"), ("config", "Configs")):
        refs = container.get(key)
        if not refs and not (kind == "config" and _cred_config(container)):
            continue
        lister = gw.secrets if kind == "secret" else gw.configs
        ids = {obj["Spec"]["Name"]: obj["ID"] for obj in lister()}
        for ref in refs or []:
            name = ref[f"{kind.title()}Name"]
            if name not in ids:
                raise NotFound(f"service {spec['Name']}: {kind} not found: {name}")
            ref[f"{kind.title()}ID"] = ids[name]
        cred = _cred_config(container)
        if kind == "config" and cred:
            if cred not in ids:
                raise NotFound(f"service {spec['Name']}: credential spec config not found: "
                               f"{cred}")
            container["Privileges"]["CredentialSpec"]["Config"] = ids[cred]
    return spec


def _cred_config(container: Spec) -> str | None:
    cred = (container.get("Privileges") or {}).get("CredentialSpec") or {}
    return cred.get("Config")


def _deploy_objects(gw: Gateway, kind: str, specs: dict[str, Spec], result: DeployResult,
                    say: Say) -> None:
    inspect = gw.inspect_secret if kind == "secret" else gw.inspect_config
    for name, spec in sorted(specs.items()):
        try:
            inspect(name)
        except NotFound:
            say(f"Creating {kind} {name}")
            (gw.create_secret if kind == "secret" else gw.create_config)(spec)
            result.created.append(f"{kind} {name}")
            continue
        update = gw.update_secret_labels if kind == "secret" else gw.update_config_labels
        try:
            update(name, text_data(spec))
        except EngineError as exc:
            raise EngineError(f"failed to update {kind} {name}: {exc}") from exc


def _update(gw: Gateway, name: str, spec: Spec, current: Spec) -> list[str]:
    # The engine bumps a service's version by itself shortly after a create (allocation of
    # its endpoint), so a stale version whose Spec is unchanged is retried with the fresh
    # one; a Spec that someone else changed is a real conflict and is raised.
    for attempt in range(5):
        try:
            return gw.update_service(name, spec, version=int(current["Version"]["Index"]))
        except Conflict:
            fresh = gw.inspect_service(name)
            if attempt == 4 or fresh["Spec"] != current["Spec"]:
                raise
            current = fresh
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def deploy_stack(
    gw: Gateway,
    specs: StackSpecs,
    *,
    prune: bool = False,
    progress: Say | None = None,
) -> DeployResult:
    """Create or update everything in `specs` like `docker stack deploy --resolve-image
    never`; with `prune`, remove the stack's services that the specs no longer name. Does not
    wait for tasks; use `Gateway.wait_converged` for that. Engine errors propagate as
    EngineError subclasses naming the object.
    """
    say = progress or (lambda _msg: None)
    result = DeployResult(specs.stack, warnings=list(specs.warnings))
    stack = specs.stack
    existing = {svc["Spec"]["Name"]: svc for svc in gw.services(stack)}
    if prune:
        for name in sorted(set(existing) - set(specs.services)):
            say(f"Removing service {name}")
            gw.remove_service(name, missing_ok=True)
            result.removed.append(name)
            del existing[name]
    _check_external_networks(gw, specs.external_networks)
    have_networks = {net["Name"] for net in gw.networks(stack)}
    for name, body in sorted(specs.networks.items()):
        if name in have_networks:
            continue
        say(f"Creating network {name}")
        gw.create_network(body)
        result.created.append(f"network {name}")
    _deploy_objects(gw, "secret", specs.secrets, result, say)
    _deploy_objects(gw, "config", specs.configs, result, say)
    for name, translated in sorted(specs.services.items()):
        spec = resolve_references(gw, translated)
        current = existing.get(name)
        if current is None:
            say(f"Creating service {name}")
            gw.create_service(spec)
            result.created.append(name)
            continue
        say(f"Updating service {name} (id: {current['ID']})")
        old = current["Spec"]
        if spec["Labels"].get(IMAGE_LABEL) == (old.get("Labels") or {}).get(IMAGE_LABEL):
            # Unchanged image: keep what the engine has (it may be pinned to a digest).
            old_image = old["TaskTemplate"]["ContainerSpec"].get("Image")
            spec["TaskTemplate"]["ContainerSpec"]["Image"] = old_image
        spec["TaskTemplate"]["ForceUpdate"] = old["TaskTemplate"].get("ForceUpdate", 0)
        result.warnings.extend(_update(gw, name, spec, current))
        result.updated.append(name)
    return result


def refuse_plain_networks(gw: Gateway, specs: StackSpecs) -> None:
    """Refuse --encrypt when one of the stack's overlay networks exists unencrypted: Swarm
    cannot change a network's options, so it would stay plaintext without a word."""
    plain = sorted(n["Name"] for n in gw.networks(specs.stack)
                   if n["Name"] in specs.networks and n.get("Driver") == "overlay"
                   and "encrypted" not in (n.get("Options") or {}))
    if plain:
        raise PlanError(
            f"--encrypt: the network(s) {', '.join(plain)} exist unencrypted, and Swarm cannot "
            f"change a network's options; remove the stack (`docker stack rm {specs.stack}`) "
            f"and deploy it again with --encrypt"
        )


def timed(progress: Say) -> Say:
    """Wrap a line printer so each step carries the seconds elapsed since the start."""
    start = time.monotonic()
    return lambda msg: progress(f"[{time.monotonic() - start:6.2f}s] {msg}")


def remove_old_tokens(gw: Gateway, stack: str, current: str,
                       say: Callable[[str], None]) -> None:
    """Remove the stack's LB token secrets other than `current` (left by a rotation)."""
    for obj in gw.secrets(stack, labels={ROLE_LABEL: TOKEN_ROLE}):
        name = obj["Spec"]["Name"]
        if name == current:
            continue
        try:
            gw.remove_secret(name, missing_ok=True)
            say(f"Removed secret {name} (an older LB token)")
        except Conflict:
            say(f"Kept secret {name}: a service still uses it")


def remove_old_content(gw: Gateway, specs: StackSpecs, say: Callable[[str], None]) -> None:
    """Remove the stack's content-addressed configs and secrets that no spec names now."""
    for kind, listed, wanted, remove in (
        ("config", gw.configs(specs.stack), specs.configs, gw.remove_config),
        ("secret", gw.secrets(specs.stack), specs.secrets, gw.remove_secret),
    ):
        for obj in listed:
            name = obj["Spec"]["Name"]
            if LOGICAL_NAME_LABEL in (obj["Spec"].get("Labels") or {}) and name not in wanted:
                try:
                    remove(name, missing_ok=True)
                    say(f"Removed {kind} {name} (older content)")
                except Conflict:
                    say(f"Kept {kind} {name}: a service still uses it")
