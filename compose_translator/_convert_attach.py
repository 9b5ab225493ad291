"""What a service attaches to: mounts, networks, secrets and configs, named for a stack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compose_translator._convert_service import ConvertError, Spec, scope, stack_labels
from compose_translator._values import shown

__all__ = [
    "convert_credential_spec",
    "convert_file_refs",
    "convert_mounts",
    "convert_service_networks",
    "is_user_defined",
]



def is_user_defined(network: str) -> bool:
    """False for the engine's own networks, which take no aliases."""
    return network not in ("default", "bridge", "host", "none") and \
        not network.startswith("container:")


def _mount(vol: Mapping[str, Any]) -> Spec:
    out: Spec = {"Type": vol["type"]}
    if vol.get("source"):
        out["Source"] = vol["source"]
    if vol.get("target"):
        out["Target"] = vol["target"]
    if vol.get("read_only"):
        out["ReadOnly"] = True
    if vol.get("consistency"):
        out["Consistency"] = vol["consistency"]
    return out


_INCOMPATIBLE = {"volume": ("bind", "tmpfs"), "bind": ("volume", "tmpfs"),
                 "npipe": ("volume", "tmpfs"), "tmpfs": ("volume", "bind")}


def convert_mount(stack: str, vol: Mapping[str, Any],
                  volumes: Mapping[str, Mapping[str, Any]]) -> Spec:
    """One service volume -> Mount; named volumes get the stack's name and labels."""
    kind = vol["type"]
    out = _mount(vol)
    for other in _INCOMPATIBLE.get(kind, ()):
        if vol.get(other) is not None:
            raise ConvertError((), f"{other} options are incompatible with type {kind}")
    if kind == "volume":
        if vol.get("source"):
            out["Source"], out["VolumeOptions"] = _volume_options(stack, vol, volumes)
    elif kind in ("bind", "npipe"):
        if not vol.get("source"):
            raise ConvertError((), f"invalid {kind} source, source cannot be empty")
        if vol.get("bind") is not None:
            propagation = vol["bind"].get("propagation")
            out["BindOptions"] = {"Propagation": propagation} if propagation else {}
    elif kind == "tmpfs":
        if vol.get("source"):
            raise ConvertError(("source",), "invalid tmpfs source, source must be empty")
        if vol.get("tmpfs") is not None:
            size = vol["tmpfs"].get("size")
            out["TmpfsOptions"] = {"SizeBytes": size} if size else {}
    else:
        raise ConvertError(("type",), f"volume type {shown(kind)} is not supported by Swarm")
    return out


def _volume_options(stack: str, vol: Mapping[str, Any],
                    volumes: Mapping[str, Mapping[str, Any]]) -> tuple[str, Spec]:
    # A named volume: its engine name and the VolumeOptions the CLI sends with it.
    if vol["source"] not in volumes:
        raise ConvertError(("source",), f"undefined volume {shown(vol['source'])}")
    top = volumes[vol["source"]]
    options: Spec = {}
    if vol.get("volume") is not None:
        if vol["volume"].get("nocopy"):
            options["NoCopy"] = True
        if vol["volume"].get("subpath"):
            options["Subpath"] = vol["volume"]["subpath"]
    if not top.get("external"):
        options["Labels"] = stack_labels(stack, top.get("labels"))
        if top.get("driver") or top.get("driver_opts") is not None:
            driver: Spec = {}
            if top.get("driver"):
                driver["Name"] = top["driver"]
            if top.get("driver_opts"):
                driver["Options"] = dict(top["driver_opts"])
            options["DriverConfig"] = driver
    return top.get("name") or scope(stack, vol["source"]), options


def convert_mounts(stack: str, vols: list[Mapping[str, Any]] | None,
                   volumes: Mapping[str, Mapping[str, Any]]) -> list[Spec]:
    """service volumes -> ContainerSpec.Mounts, in file order."""
    result = []
    for i, vol in enumerate(vols or []):
        try:
            result.append(convert_mount(stack, vol, volumes))
        except ConvertError as exc:
            raise ConvertError(("volumes", i, *exc.key), str(exc)) from None
    return result


def convert_service_networks(stack: str, service: str,
                             attached: Mapping[str, Mapping[str, Any] | None] | None,
                             networks: Mapping[str, Mapping[str, Any]]) -> list[Spec]:
    """service networks -> TaskTemplate.Networks sorted by target, short name as alias."""
    attached = attached or {"default": None}
    result = []
    for name, cfg in attached.items():
        if name not in networks and name != "default":
            raise ConvertError(("networks", name), f"undefined network {shown(name)}")
        target = (networks.get(name) or {}).get("name") or scope(stack, name)
        aliases = [str(a) for a in (cfg or {}).get("aliases") or []]
        if is_user_defined(target):
            aliases.append(service)
        item: Spec = {"Target": target}
        if aliases:
            item["Aliases"] = aliases
        if cfg and cfg.get("driver_opts"):
            item["DriverOpts"] = {str(k): str(v) for k, v in cfg["driver_opts"].items()}
        result.append(item)
    result.sort(key=lambda n: n["Target"])
    return result


def convert_file_refs(stack: str, kind: str, refs: list[Mapping[str, Any]] | None,
                      objects: Mapping[str, Mapping[str, Any]]) -> list[Spec]:
    """service secrets/configs -> references by name (IDs are looked up at deploy time)."""
    name_key = "SecretName" if kind == "secrets" else "ConfigName"
    result: list[Spec] = []
    targets: set[str] = set()
    for i, ref in enumerate(refs or []):
        source = ref["source"]
        if source not in objects:
            raise ConvertError((kind, i), f"undefined {kind[:-1]} {shown(source)}")
        target = ref.get("target") or source
        if target in targets:
            raise ConvertError((kind, i), f"duplicate {kind[:-1]} target for {source} "
                                          "not allowed")
        targets.add(target)
        mode = ref.get("mode")
        result.append({
            "File": {"Name": target, "UID": ref.get("uid") or "0", "GID": ref.get("gid") or "0",
                     "Mode": 0o444 if mode is None else mode},
            name_key: objects[source].get("name") or scope(stack, source),
        })
    return result


def convert_credential_spec(stack: str, cred: Mapping[str, Any] | None,
                            configs: Mapping[str, Mapping[str, Any]]
                            ) -> tuple[Spec | None, Spec | None]:
    """credential_spec -> (Privileges.CredentialSpec, extra runtime config reference)."""
    if not cred:
        return None, None
    given = [k for k in ("config", "file", "registry") if cred.get(k)]
    if len(given) > 1:
        raise ConvertError(("credential_spec",), "invalid credential spec: cannot specify both "
                           + " and ".join(f'"{k.title()}"' for k in given))
    if not given:
        return None, None
    if given[0] != "config":
        return {given[0].title(): cred[given[0]]}, None
    source = cred["config"]
    if source not in configs:
        raise ConvertError(("credential_spec", "config"), f"undefined config {shown(source)}")
    name = configs[source].get("name") or scope(stack, source)
    # The engine wants the config's ID here; the deployer swaps the name for it.
    return {"Config": name}, {"Runtime": {}, "ConfigName": name}
