"""Deploy a Compose fixture with `docker stack deploy` and with dans; inspect both stacks.

The inspected objects are reduced to what a stack deploy decides (engine-assigned IDs become
names, the vxlan id and auto-allocated subnets are dropped) and the stack name is replaced by
`STACK`, so two deploys of the same file compare equal exactly when the specs are the same.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from compose_translator import load_project, translate
from tests.support import free_port, port_bound, published_ports
from upgrade_manager.deploy import deploy_stack
from upgrade_manager.gateway import Gateway

FIXTURES = Path(__file__).parent / "fixtures" / "fidelity"
DOCKER = os.environ.get("DANS_DOCKER_CLI", "docker")


def fixture_files(fixture: Path) -> list[Path]:
    """The Compose files of a fixture, in merge order."""
    found = sorted(fixture.glob("*.yml"))
    if len(found) > 1:  # base.yml then override.yml
        found.sort(key=lambda p: (p.name != "base.yml", p.name))
    return found


def cli_deploy(fixture: Path, stack: str, env: dict[str, str]) -> None:
    """`docker stack deploy --resolve-image never` the fixture's files under `stack`."""
    args = [DOCKER, "stack", "deploy", "--resolve-image", "never", "--detach=true"]
    for f in fixture_files(fixture):
        args += ["-c", f.name]
    args.append(stack)
    proc = subprocess.run(args, cwd=fixture, env=env, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"docker stack deploy failed: {proc.stderr or proc.stdout}")


def moved_ports(wanted: set[int]) -> dict[int, int]:
    """A free port for each of `wanted` that a socket or a swarm service holds now.

    A stack this test did not create (the demo, a user's, one an engine restart brought
    back) may hold a port a fixture publishes.
    """
    held = published_ports()
    return {p: free_port() for p in sorted(wanted) if p in held or port_bound(p)}


def rewrite_ports(folder: Path, moved: dict[int, int]) -> None:
    """Replace each moved port number wherever it appears in the files of `folder`.

    Both deploys read the same rewritten files, so the comparison stays exact.
    """
    for path in folder.iterdir():
        if path.is_file() and moved:
            text = path.read_text()
            for old, new in moved.items():
                text = re.sub(rf"(?<![\d.]){old}(?!\d)", str(new), text)
            path.write_text(text)


def with_free_ports(fixture: Path, dest: Path, env: dict[str, str]) -> Path:
    """The fixture, or a copy of it in `dest` with its held published ports moved."""
    project = load_project([str(f) for f in fixture_files(fixture)], environ=env)
    wanted = {int(p["PublishedPort"])
              for spec in translate(project, "probe").services.values()
              for p in (spec.get("EndpointSpec") or {}).get("Ports") or []
              if p.get("PublishedPort")}
    moved = moved_ports(wanted)
    if not moved:
        return fixture
    copy = dest / fixture.name
    shutil.copytree(fixture, copy)
    rewrite_ports(copy, moved)
    return copy


def dans_deploy(gw: Gateway, fixture: Path, stack: str, env: dict[str, str]) -> None:
    """`dans deploy` the fixture's files under `stack` (through the library)."""
    project = load_project([str(f) for f in fixture_files(fixture)], environ=env)
    deploy_stack(gw, translate(project, stack))


def _default_pools(gw: Gateway) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    cluster = gw.info().get("Swarm", {}).get("Cluster") or {}
    return [ipaddress.ip_network(p) for p in cluster.get("DefaultAddrPool") or ["10.0.0.0/8"]]


def _auto_subnet(subnet: str, pools: list[Any]) -> bool:
    # Subnets the engine picked from the swarm's default pool differ between any two networks.
    net = ipaddress.ip_network(subnet)
    return any(net.version == pool.version and net.subnet_of(pool) for pool in pools)


def _strip_network(net: dict[str, Any], pools: list[Any]) -> dict[str, Any]:
    options = {k: v for k, v in (net.get("Options") or {}).items()
               if k != "com.docker.network.driver.overlay.vxlanid_list"}
    ipam = net.get("IPAM") or {}
    configs = []
    for cfg in ipam.get("Config") or []:
        subnet = cfg.get("Subnet", "")
        if subnet and _auto_subnet(subnet, pools):
            continue
        configs.append({"Subnet": subnet})
    return {
        "Name": net["Name"], "Driver": net.get("Driver"), "Labels": net.get("Labels") or {},
        "Options": options, "Attachable": net.get("Attachable"), "Internal": net.get("Internal"),
        "Scope": net.get("Scope"),
        "IPAM": {"Driver": ipam.get("Driver"), "Options": ipam.get("Options") or {},
                 "Config": configs},
    }


def snapshot(gw: Gateway, stack: str) -> dict[str, Any]:
    """Everything a stack deploy created for `stack`, comparable across stack names."""
    net_names = gw.network_names() if hasattr(gw, "network_names") else \
        {n["Id"]: n["Name"] for n in gw.api.networks()}
    config_names = {c["ID"]: c["Spec"]["Name"] for c in gw.configs()}
    pools = _default_pools(gw)
    services = {}
    for svc in gw.services(stack):
        spec = json.loads(json.dumps(gw.inspect_service(svc["ID"])["Spec"]))
        task = spec.get("TaskTemplate", {})
        for att in task.get("Networks") or []:
            att["Target"] = net_names.get(att["Target"], att["Target"])
        container = task.get("ContainerSpec", {})
        # IDs differ per stack. The CLI orders two references to the same object randomly
        # (it walks a Go map before its stable sort by name), so order by name and target.
        for key, id_key, name_key in (("Secrets", "SecretID", "SecretName"),
                                      ("Configs", "ConfigID", "ConfigName")):
            for ref in container.get(key) or []:
                ref.pop(id_key, None)
            if container.get(key):
                container[key].sort(key=lambda r, n=name_key: (
                    r[n], (r.get("File") or {}).get("Name", "")))
        cred = (container.get("Privileges") or {}).get("CredentialSpec") or {}
        if cred.get("Config"):
            cred["Config"] = config_names.get(cred["Config"], cred["Config"])
        services[spec["Name"]] = spec
    result = {
        "services": services,
        "networks": {n["Name"]: _strip_network(n, pools) for n in gw.networks(stack)},
        "configs": {c["Spec"]["Name"]: c["Spec"] for c in gw.configs(stack)},
        "secrets": {s["Spec"]["Name"]: s["Spec"] for s in gw.secrets(stack)},
    }
    text = json.dumps(result, sort_keys=True)
    return json.loads(text.replace(f'"{stack}"', '"STACK"').replace(f"{stack}_", "STACK_"))


def remove_stack(gw: Gateway, stack: str, timeout: float = 60) -> None:
    """Remove what a deploy of `stack` created: services, then secrets, configs, networks."""
    for svc in gw.services(stack):
        gw.remove_service(svc["ID"], missing_ok=True)
    for obj in gw.secrets(stack):
        gw.remove_secret(obj["ID"], missing_ok=True)
    for obj in gw.configs(stack):
        gw.remove_config(obj["ID"], missing_ok=True)
    deadline = time.monotonic() + timeout
    for net in gw.networks(stack):
        while True:
            try:
                gw.remove_network(net["Id"], missing_ok=True)
                break
            except Exception as exc:
                if "not found" in str(exc):  # the engine answers 500, not 404, in a race
                    break
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Human-readable differences between two JSON-like values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a:
                out.append(f"{sub}: only dans has {json.dumps(b[key])[:200]}")
            elif key not in b:
                out.append(f"{sub}: only docker has {json.dumps(a[key])[:200]}")
            else:
                out += differences(a[key], b[key], sub)
        return out
    if a != b:
        return [f"{path}: docker {json.dumps(a)[:200]} != dans {json.dumps(b)[:200]}"]
    return []
