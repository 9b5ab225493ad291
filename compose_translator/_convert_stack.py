"""Stack-level conversion: whole ServiceSpecs, and the networks, configs and secrets a stack
creates, named and labelled as `docker stack deploy` names and labels them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compose_translator import _convert_attach as att
from compose_translator import _convert_service as cs
from compose_translator._convert_service import ConvertError, Spec, scope, stack_labels

__all__ = ["convert_networks", "convert_objects", "convert_service", "service_networks"]



def service_networks(services: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Names of the networks services attach to; `default` for a service that names none."""
    used: set[str] = set()
    for svc in services.values():
        used.update(svc.get("networks") or {"default": None})
    return used


def convert_networks(stack: str, networks: Mapping[str, Mapping[str, Any]],
                     used: set[str]) -> tuple[dict[str, Spec], list[str]]:
    """Networks used by services -> (`/networks/create` bodies by name, external names)."""
    created: dict[str, Spec] = {}
    external: list[str] = []
    for key in sorted(used):
        net = networks.get(key) or {}
        if net.get("external"):
            external.append(net.get("name") or key)
            continue
        name = net.get("name") or scope(stack, key)
        body: Spec = {"Name": name, "Driver": net.get("driver") or "overlay",
                      "Labels": stack_labels(stack, net.get("labels"))}
        if net.get("driver_opts"):
            body["Options"] = dict(net["driver_opts"])
        if net.get("internal"):
            body["Internal"] = True
        if net.get("attachable"):
            body["Attachable"] = True
        ipam = net.get("ipam") or {}
        if ipam.get("driver") or ipam.get("config"):
            body["IPAM"] = {}
            if ipam.get("driver"):
                body["IPAM"]["Driver"] = ipam["driver"]
            if ipam.get("config"):
                body["IPAM"]["Config"] = [{"Subnet": c["subnet"]} if c.get("subnet") else {}
                                          for c in ipam["config"]]
        created[name] = body
    return created, sorted(set(external))


def convert_objects(stack: str, objects: Mapping[str, Mapping[str, Any]]) -> dict[str, Spec]:
    """Top-level configs or secrets (not external) -> specs by name, with their data."""
    result: dict[str, Spec] = {}
    for key, obj in objects.items():
        if obj.get("external"):
            continue
        name = obj.get("name") or scope(stack, key)
        spec: Spec = {"Name": name, "Labels": stack_labels(stack, obj.get("labels"))}
        if obj.get("driver"):
            spec["Driver"] = {"Name": obj["driver"]}
            if obj.get("driver_opts"):
                spec["Driver"]["Options"] = dict(obj["driver_opts"])
        else:
            spec["Data"] = obj.get("data") or b""
        if obj.get("template_driver"):
            spec["Templating"] = {"Name": obj["template_driver"]}
        result[name] = spec
    return result


# ContainerSpec fields copied as they are when set, in the order the CLI's struct has them.
_PROCESS = (("Hostname", "hostname"), ("Env", None), ("Dir", "working_dir"), ("User", "user"))
_FLAGS = (("TTY", "tty"), ("OpenStdin", "stdin_open"), ("ReadOnly", "read_only"))


def _container_spec(stack: str, name: str, svc: Mapping[str, Any],
                    project: Mapping[str, Any]) -> Spec:
    c: Spec = {"Image": cs.tagged_image(svc.get("image") or ""),
               "Labels": stack_labels(stack, svc.get("labels"))}
    if svc.get("entrypoint"):
        c["Command"] = list(svc["entrypoint"])
    if svc.get("command"):
        c["Args"] = list(svc["command"])
    for key, src in _PROCESS:
        value = cs.convert_environment(svc.get("environment")) if src is None else svc.get(src)
        if value:
            c[key] = value
    cred, runtime_config = att.convert_credential_spec(stack, svc.get("credential_spec"),
                                                       project["configs"])
    c["Privileges"] = {"CredentialSpec": cred, "SELinuxContext": None}
    if svc.get("init") is not None:
        c["Init"] = svc["init"]
    if svc.get("stop_signal"):
        c["StopSignal"] = svc["stop_signal"]
    c.update((key, True) for key, src in _FLAGS if svc.get(src))
    _attachments(c, stack, svc, project, runtime_config)
    _limits(c, svc)
    return c


def _attachments(c: Spec, stack: str, svc: Mapping[str, Any], project: Mapping[str, Any],
                 runtime_config: Spec | None) -> None:
    # Mounts, health, hosts, DNS, secrets and configs, in the CLI's field order.
    mounts = att.convert_mounts(stack, svc.get("volumes"), project["volumes"])
    if mounts:
        c["Mounts"] = mounts
    if svc.get("stop_grace_period") is not None:
        c["StopGracePeriod"] = svc["stop_grace_period"]
    health = cs.convert_healthcheck(svc.get("healthcheck"))
    if health is not None:
        c["Healthcheck"] = health
    found = (("Hosts", cs.convert_extra_hosts(svc.get("extra_hosts"))),
             ("DNSConfig", cs.convert_dns(svc.get("dns"), svc.get("dns_search"))))
    c.update((key, value) for key, value in found if value)
    secrets = att.convert_file_refs(stack, "secrets", svc.get("secrets"), project["secrets"])
    if secrets:
        # The CLI sorts by name after walking a Go map, so two references to one secret come
        # out in random order; the target breaks the tie here, to keep output stable.
        c["Secrets"] = sorted(secrets, key=lambda r: (r["SecretName"], r["File"]["Name"]))
    configs = att.convert_file_refs(stack, "configs", svc.get("configs"), project["configs"])
    if runtime_config:
        configs.append(runtime_config)
    if configs:
        c["Configs"] = sorted(configs, key=lambda r: (r["ConfigName"],
                                                      (r.get("File") or {}).get("Name", "")))


def _limits(c: Spec, svc: Mapping[str, Any]) -> None:
    # Isolation, sysctls, capabilities, ulimits and the OOM score, in the CLI's field order.
    if svc.get("isolation"):
        c["Isolation"] = svc["isolation"]
    if svc.get("sysctls"):
        c["Sysctls"] = dict(svc["sysctls"])
    cap_add, cap_drop = cs.convert_capabilities(svc.get("cap_add"), svc.get("cap_drop"))
    found = (("CapabilityAdd", cap_add), ("CapabilityDrop", cap_drop),
             ("Ulimits", cs.convert_ulimits(svc.get("ulimits"))),
             ("OomScoreAdj", svc.get("oom_score_adj")))
    c.update((key, value) for key, value in found if value)


def convert_service(stack: str, name: str, svc: Mapping[str, Any],
                    project: Mapping[str, Any]) -> Spec:
    """One canonical service -> the ServiceSpec `docker stack deploy` sends for it."""
    deploy = svc.get("deploy") or {}
    task: Spec = {"ContainerSpec": _container_spec(stack, name, svc, project)}
    log_driver = cs.convert_logging(svc.get("logging"))
    if log_driver is not None:
        task["LogDriver"] = log_driver
    task["Resources"] = cs.convert_resources(deploy.get("resources"))
    restart = cs.convert_restart_policy(svc.get("restart"), deploy.get("restart_policy"))
    if restart is not None:
        task["RestartPolicy"] = restart
    task["Placement"] = cs.convert_placement(deploy.get("placement"))
    task["Networks"] = att.convert_service_networks(stack, name, svc.get("networks"),
                                                    project["networks"])
    labels = stack_labels(stack, deploy.get("labels"))
    labels[cs.IMAGE_LABEL] = svc.get("image") or ""
    spec: Spec = {
        "Name": scope(stack, name),
        "Labels": labels,
        "TaskTemplate": task,
        "Mode": cs.convert_deploy_mode(deploy.get("mode"), deploy.get("replicas")),
    }
    for key, src in (("UpdateConfig", "update_config"), ("RollbackConfig", "rollback_config")):
        cfg = cs.convert_update_config(deploy.get(src))
        if cfg is not None:
            spec[key] = cfg
    spec["EndpointSpec"] = cs.convert_endpoint(deploy.get("endpoint_mode"), svc.get("ports"))
    return spec


__all__ += ["ConvertError"]
