"""One file's validated data in canonical form: every short syntax expanded, every scalar typed.

Canonical forms are what merging and conversion work on: environment and labels as ordered
dicts, ports and volumes as long-form dicts, durations in nanoseconds, sizes in bytes. Files
named by `env_file`, `configs` and `secrets` are read here, so conversion stays pure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from compose_translator import _values as v
from compose_translator._files import read_bytes, read_text
from compose_translator._report import Problems
from compose_translator._values import shown

__all__ = ["normalize_file"]

Path = tuple[str | int, ...]

# The Engine refuses secret data over 500 KiB and config data over 500 or 1000 KiB (by
# version); a `file:` larger than the highest of these limits is refused before it is read.
MAX_OBJECT_BYTES = 1000 * 1024


def _duration(value: Any) -> int:
    # The Engine refuses negative delays, windows, monitors and health intervals.
    nanos = v.parse_duration(value)
    if nanos < 0:
        raise ValueError(f"invalid duration {v.shown(value)}: must not be negative")
    return nanos


def _uint32(value: Any) -> int:
    return v.to_uint(value, 32)


def _ratio(value: Any) -> float:
    ratio = v.to_float(value)
    if not 0 <= ratio <= 1:
        raise ValueError(f"{ratio} is out of range: must be between 0 and 1")
    return ratio


_UPDATE_FIELDS = {"delay": _duration, "monitor": _duration, "parallelism": v.to_uint,
                  "max_failure_ratio": _ratio}
_RESTART_FIELDS = {"delay": _duration, "window": _duration, "max_attempts": v.to_uint}
_PLACEMENT_FIELDS = {"max_replicas_per_node": v.to_uint}
_RESOURCE_FIELDS = {"cpus": v.parse_cpus, "memory": v.parse_size, "pids": v.to_int}


class _Norm:
    def __init__(self, rep: Problems, workdir: str, environ: Mapping[str, str]) -> None:
        self.rep = rep
        self.workdir = workdir
        self.environ = environ
        self.service_keys = self._service_keys()

    def conv(self, path: Path, fn: Callable[[Any], Any], value: Any) -> Any:
        try:
            return fn(value)
        except ValueError as exc:
            self.rep.error(path, str(exc))
            return None

    def abspath(self, path: str) -> str:
        path = os.path.expanduser(path)
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(self.workdir, path))

    # -- shared shapes ------------------------------------------------------------------

    def mapping(self, value: Any, nil: bool) -> dict[str, str | None]:
        """Mapping-or-list (`K=V` items) as an ordered dict; `nil` keeps valueless keys as None."""
        result: dict[str, str | None] = {}
        if isinstance(value, dict):
            for key, item in value.items():
                result[str(key)] = (None if nil else "") if item is None else v.go_str(item)
        elif isinstance(value, list):
            for item in value:
                key, sep, val = str(item).partition("=")
                result[key] = val if sep else (None if nil else "")
        return result

    def strings(self, value: Any) -> list[str]:
        if value is None:
            return []
        return [v.go_str(x) for x in (value if isinstance(value, list) else [value])]

    def durations(self, path: Path, data: dict[str, Any], keys: tuple[str, ...]) -> None:
        for key in keys:
            if data.get(key) is not None:
                data[key] = self.conv((*path, key), _duration, data[key])

    # -- services -----------------------------------------------------------------------

    def service(self, name: str, raw: dict[str, Any] | None) -> dict[str, Any]:
        path: Path = ("services", name)
        svc: dict[str, Any] = dict(raw or {})
        for key in ("command", "entrypoint"):
            if key in svc and svc[key] is not None:
                svc[key] = self.conv((*path, key), v.shell_split, svc[key])
        svc["environment"] = self.environment(path, svc)
        svc.pop("env_file", None)
        for key, convert in self.service_keys.items():
            if key in svc:
                svc[key] = convert((*path, key), svc[key])
        if isinstance(svc.get("depends_on"), list):
            svc["depends_on"] = {str(d): {"condition": "service_started"}
                                 for d in svc["depends_on"]}
        if svc.get("logging") is not None and svc["logging"].get("options") is not None:
            svc["logging"] = dict(svc["logging"])
            svc["logging"]["options"] = self.mapping(svc["logging"]["options"], nil=False)
        return svc

    def _service_keys(self) -> dict[str, Callable[[Path, Any], Any]]:
        """Service key -> its canonical form from (path of the key, value), in file order."""
        def strings(_: Path, value: Any) -> list[str]:
            return self.strings(value)

        def items(convert: Callable[[Path, Any], Any]) -> Callable[[Path, Any], Any]:
            return lambda path, value: [convert((*path, i), x) for i, x in enumerate(value)]

        def conv(fn: Callable[[Any], Any]) -> Callable[[Path, Any], Any]:
            return lambda path, value: self.conv(path, fn, value)

        return {
            "labels": lambda _, value: self.mapping(value, nil=False),
            "sysctls": lambda _, value: self.mapping(value, nil=False),
            **dict.fromkeys(("dns", "dns_search", "cap_add", "cap_drop", "links"), strings),
            "extra_hosts": lambda _, hosts: ([f"{h}:{ip}" for h, ip in hosts.items()]
                                             if isinstance(hosts, dict) else self.strings(hosts)),
            "ports": lambda path, ports: self.ports(path[:-1], ports),
            "volumes": items(self.volume),
            "configs": items(self.file_ref),
            "secrets": items(self.file_ref),
            "healthcheck": lambda path, hc: None if hc is None else self.healthcheck(path, hc),
            "deploy": lambda path, dep: self.deploy(path, dep or {}),
            "stop_grace_period": conv(_duration),
            **dict.fromkeys(("tty", "stdin_open", "read_only", "init"), conv(v.to_bool)),
            "oom_score_adj": conv(v.to_int),
            "user": lambda _, user: v.go_str(user),
            "ulimits": self.ulimits,
            "networks": lambda _, nets: ({n: None for n in nets} if isinstance(nets, list)
                                         else {n: dict(c) if c else None
                                               for n, c in nets.items()}),
        }

    def environment(self, path: Path, svc: dict[str, Any]) -> dict[str, str | None] | None:
        if "environment" not in svc and "env_file" not in svc:
            return None
        env: dict[str, str | None] = {}
        files = svc.get("env_file")
        for i, name in enumerate([files] if isinstance(files, str) else files or []):
            where = (*path, "env_file") if isinstance(files, str) else (*path, "env_file", i)
            self._update_env(env, self.env_file(where, self.abspath(str(name))))
        self._update_env(env, self.mapping(svc.get("environment"), nil=True))
        return env

    def _update_env(self, env: dict[str, str | None], new: dict[str, str | None]) -> None:
        # Like the CLI: an empty or valueless entry takes the value of the environment.
        for key, value in new.items():
            if not value and key in self.environ:
                env[key] = self.environ[key]
            else:
                env[key] = value

    def env_file(self, path: Path, filename: str) -> dict[str, str | None]:
        try:
            text = read_text(filename)
        except ValueError as exc:
            self.rep.error(path, f"cannot read env_file {filename}: {exc}")
            return {}
        result: dict[str, str | None] = {}
        for raw in text.splitlines():
            line = raw.lstrip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            key = key.lstrip()
            if not key or any(c.isspace() for c in key):
                self.rep.error(path, f"{filename}: bad variable name in line {shown(raw)}")
                continue
            if sep:
                result[key] = value
            elif key in self.environ:
                result[key] = self.environ[key]
        return result

    def ports(self, path: Path, ports: list[Any]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        for i, item in enumerate(ports):
            where = (*path, "ports", i)
            if isinstance(item, dict):
                port = {"target": self.conv((*where, "target"), v.to_port, item.get("target")),
                        "published": None, "protocol": item.get("protocol"),
                        "mode": item.get("mode")}
                if item.get("published") not in (None, ""):
                    port["published"] = self.conv((*where, "published"), v.to_port,
                                                  item["published"])
                if item.get("host_ip"):
                    port["_host_ip"] = item["host_ip"]
                result.append(port)
            else:
                result.extend(self.conv(where, v.parse_ports, item) or [])
        return result

    def volume(self, path: Path, item: Any) -> dict[str, Any]:
        vol = self.conv(path, v.parse_volume, item) or {} if isinstance(item, str) else dict(item)
        if "read_only" in vol:
            vol["read_only"] = self.conv((*path, "read_only"), v.to_bool, vol["read_only"])
        if isinstance(vol.get("volume"), dict) and "nocopy" in vol["volume"]:
            vol["volume"] = dict(vol["volume"])
            vol["volume"]["nocopy"] = self.conv((*path, "volume", "nocopy"), v.to_bool,
                                                vol["volume"]["nocopy"])
        if isinstance(vol.get("tmpfs"), dict) and vol["tmpfs"].get("size") is not None:
            vol["tmpfs"] = dict(vol["tmpfs"])
            vol["tmpfs"]["size"] = self.conv((*path, "tmpfs", "size"), v.parse_size,
                                             vol["tmpfs"]["size"])
        if vol.get("type") == "bind":
            if not vol.get("source"):
                self.rep.error(path, "invalid bind source, source cannot be empty")
            else:
                vol["source"] = self.abspath(vol["source"])
        vol["_path"] = path
        return vol

    def file_ref(self, path: Path, item: Any) -> dict[str, Any]:
        ref = {"source": item} if isinstance(item, str) else dict(item)
        if ref.get("mode") is not None:
            ref["mode"] = self.conv((*path, "mode"), _uint32, ref["mode"])
        for key in ("uid", "gid"):
            if ref.get(key) is not None:
                ref[key] = v.go_str(ref[key])
        ref["_path"] = path
        return ref

    def healthcheck(self, path: Path, raw: dict[str, Any]) -> dict[str, Any]:
        hc = dict(raw)
        if isinstance(hc.get("test"), str):
            hc["test"] = ["CMD-SHELL", hc["test"]]
        elif hc.get("test") is not None:
            hc["test"] = self.strings(hc["test"])
        self.durations(path, hc, ("interval", "timeout", "start_period", "start_interval"))
        if hc.get("retries") is not None:
            hc["retries"] = self.conv((*path, "retries"), v.to_uint, hc["retries"])
        if "disable" in hc:
            hc["disable"] = self.conv((*path, "disable"), v.to_bool, hc["disable"])
        return hc

    def fields(self, path: Path, data: dict[str, Any],
               converters: Mapping[str, Callable[[Any], Any]]) -> None:
        """Convert each key of `data` that `converters` names and that is set, in place."""
        for key, fn in converters.items():
            if data.get(key) is not None:
                data[key] = self.conv((*path, key), fn, data[key])

    def deploy(self, path: Path, raw: dict[str, Any]) -> dict[str, Any]:
        dep = dict(raw)
        self.fields(path, dep, {"replicas": v.to_uint})
        if "labels" in dep:
            dep["labels"] = self.mapping(dep["labels"], nil=False)
        for key, converters in (("update_config", _UPDATE_FIELDS),
                                ("rollback_config", _UPDATE_FIELDS),
                                ("restart_policy", _RESTART_FIELDS),
                                ("placement", _PLACEMENT_FIELDS)):
            if dep.get(key) is not None:
                dep[key] = dict(dep[key])
                self.fields((*path, key), dep[key], converters)
        if dep.get("resources"):
            dep["resources"] = self.resources((*path, "resources"), dep["resources"])
        return dep

    def resources(self, path: Path, raw: dict[str, Any]) -> dict[str, Any]:
        res = {k: dict(x) if x is not None else None for k, x in raw.items()}
        for kind in ("limits", "reservations"):
            section = res.get(kind)
            if not section:
                continue
            self.fields((*path, kind), section, _RESOURCE_FIELDS)
            for i, item in enumerate(section.get("generic_resources") or []):
                spec = (item or {}).get("discrete_resource_spec")
                if spec:
                    self.fields((*path, kind, "generic_resources", i, "discrete_resource_spec"),
                                spec, {"value": v.to_int})
        return res

    def ulimits(self, path: Path, raw: dict[str, Any]) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for name, item in raw.items():
            if isinstance(item, dict):
                result[name] = {"soft": self.conv((*path, name, "soft"), v.to_int, item["soft"]),
                                "hard": self.conv((*path, name, "hard"), v.to_int, item["hard"])}
            else:
                single = self.conv((*path, name), v.to_int, item)
                result[name] = {"soft": single, "hard": single}
        return result

    # -- top-level objects --------------------------------------------------------------

    def objects(self, kind: str, raw: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for key, item in (raw or {}).items():
            obj = dict(item or {})
            path: Path = (kind, key)
            ext = obj.get("external")
            if isinstance(ext, dict):
                obj["external"] = True
                if ext.get("name"):
                    obj["name"] = ext["name"]
            elif ext is not None:
                obj["external"] = self.conv((*path, "external"), v.to_bool, ext)
            if obj.get("external") and not obj.get("name"):
                obj["name"] = key
            for flag in ("internal", "attachable"):
                if flag in obj:
                    obj[flag] = self.conv((*path, flag), v.to_bool, obj[flag])
            if "labels" in obj:
                obj["labels"] = self.mapping(obj["labels"], nil=False)
            if "driver_opts" in obj:
                obj["driver_opts"] = {str(k): v.go_str(x) for k, x in obj["driver_opts"].items()}
            if kind in ("configs", "secrets") and not obj.get("external"):
                obj["data"] = self.file_data(path, obj)
            obj["_path"] = path
            result[key] = obj
        return result

    def file_data(self, path: Path, obj: dict[str, Any]) -> bytes | None:
        if "content" in obj:
            return str(obj["content"]).encode()
        if "environment" in obj:
            name = obj["environment"]
            if name not in self.environ:
                self.rep.error((*path, "environment"), f"environment variable {name} is not set")
                return None
            return self.environ[name].encode()
        if obj.get("driver"):
            return None
        if not obj.get("file"):
            self.rep.error(path, "needs 'file', 'external' or 'driver'")
            return None
        filename = self.abspath(str(obj["file"]))
        try:
            return read_bytes(filename, MAX_OBJECT_BYTES)
        except ValueError as exc:
            self.rep.error((*path, "file"), f"cannot read {filename}: {exc}")
            return None


def normalize_file(data: dict[str, Any], rep: Problems, workdir: str,
                   environ: Mapping[str, str]) -> dict[str, Any]:
    """Canonical form of one interpolated, schema-valid file (see the module docstring)."""
    norm = _Norm(rep, workdir, environ)
    out: dict[str, Any] = {k: x for k, x in data.items() if k.startswith("x-")}
    if data.get("name"):
        out["name"] = str(data["name"])
    out["services"] = {name: norm.service(name, svc)
                       for name, svc in (data.get("services") or {}).items()}
    for kind in ("networks", "volumes", "configs", "secrets"):
        out[kind] = norm.objects(kind, data.get(kind))
    return out
