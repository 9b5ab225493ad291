"""Table-driven tests of the pure conversion functions, one table per spec section."""

from __future__ import annotations

from typing import Any

import pytest

from compose_translator import _convert_attach as att
from compose_translator import _convert_service as cs
from compose_translator._convert_stack import convert_networks, convert_objects

S = 1_000_000_000


@pytest.mark.parametrize(("mode", "replicas", "expected"), [
    (None, None, {"Replicated": {}}),
    ("replicated", 3, {"Replicated": {"Replicas": 3}}),
    ("replicated", 0, {"Replicated": {"Replicas": 0}}),
    ("global", None, {"Global": {}}),
    ("replicated-job", 2, {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 2}}),
    ("replicated-job", None, {"ReplicatedJob": {}}),
    ("global-job", None, {"GlobalJob": {}}),
], ids=["default", "replicated", "zero", "global", "job", "job-unbounded", "global-job"])
def test_deploy_mode(mode: str | None, replicas: int | None, expected: dict[str, Any]) -> None:
    assert cs.convert_deploy_mode(mode, replicas) == expected


@pytest.mark.parametrize(("mode", "replicas", "message"), [
    ("global", 2, "replicas can only be used"),
    ("global-job", 1, "replicas can only be used"),
    ("daemon", None, "unknown mode: daemon"),
], ids=["global-replicas", "global-job-replicas", "unknown"])
def test_deploy_mode_errors(mode: str, replicas: int | None, message: str) -> None:
    with pytest.raises(cs.ConvertError, match=message):
        cs.convert_deploy_mode(mode, replicas)


@pytest.mark.parametrize(("restart", "policy", "expected"), [
    (None, None, None),
    ("no", None, None),
    ("always", None, {"Condition": "any"}),
    ("unless-stopped", None, {"Condition": "any"}),
    ("on-failure", None, {"Condition": "on-failure"}),
    ("on-failure:3", None, {"Condition": "on-failure", "MaxAttempts": 3}),
    ("always", {"condition": "none"}, {"Condition": "none"}),
    (None, {}, {}),
    (None, {"condition": "on-failure", "delay": 5 * S, "max_attempts": 0, "window": 60 * S},
     {"Condition": "on-failure", "Delay": 5 * S, "MaxAttempts": 0, "Window": 60 * S}),
], ids=["none", "no", "always", "unless-stopped", "on-failure", "on-failure-3",
        "policy-wins", "empty-policy", "full-policy"])
def test_restart_policy(restart: str | None, policy: dict[str, Any] | None,
                        expected: dict[str, Any] | None) -> None:
    assert cs.convert_restart_policy(restart, policy) == expected


def test_restart_policy_unknown() -> None:
    with pytest.raises(cs.ConvertError, match="unknown policy"):
        cs.convert_restart_policy("sometimes", None)


@pytest.mark.parametrize(("cfg", "expected"), [
    (None, None),
    ({}, {"Parallelism": 1, "MaxFailureRatio": 0, "Order": ""}),
    ({"parallelism": 0, "delay": 10 * S, "failure_action": "rollback", "monitor": S,
      "max_failure_ratio": 0.5, "order": "start-first"},
     {"Parallelism": 0, "Delay": 10 * S, "FailureAction": "rollback", "Monitor": S,
      "MaxFailureRatio": 0.5, "Order": "start-first"}),
], ids=["absent", "empty", "full"])
def test_update_config(cfg: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    assert cs.convert_update_config(cfg) == expected


@pytest.mark.parametrize(("res", "expected"), [
    (None, {}),
    ({"limits": {"cpus": 500_000_000, "memory": 1024, "pids": 10}},
     {"Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 1024, "Pids": 10}}),
    ({"reservations": {"memory": 2048, "generic_resources": [
        {"discrete_resource_spec": {"kind": "gpu", "value": 2}}]}},
     {"Reservations": {"MemoryBytes": 2048, "GenericResources": [
         {"DiscreteResourceSpec": {"Kind": "gpu", "Value": 2}}]}}),
    ({"limits": {}}, {"Limits": {}}),
], ids=["none", "limits", "reservations", "empty-limits"])
def test_resources(res: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert cs.convert_resources(res) == expected


@pytest.mark.parametrize(("placement", "expected"), [
    (None, {}),
    ({"constraints": ["node.role == manager"], "preferences": [{"spread": "node.id"}],
      "max_replicas_per_node": 2},
     {"Constraints": ["node.role == manager"],
      "Preferences": [{"Spread": {"SpreadDescriptor": "node.id"}}], "MaxReplicas": 2}),
], ids=["none", "full"])
def test_placement(placement: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert cs.convert_placement(placement) == expected


@pytest.mark.parametrize(("mode", "ports", "expected"), [
    (None, None, {}),
    ("DNSRR", [], {"Mode": "dnsrr"}),
    ("vip", [{"target": 80, "published": 8080, "protocol": "tcp", "mode": "ingress"},
             {"target": 53, "published": 53, "protocol": "udp", "mode": "ingress"},
             {"target": 90, "published": None, "protocol": "tcp", "mode": "ingress"},
             {"target": 81, "published": 8081, "protocol": None, "mode": "host"}],
     {"Mode": "vip", "Ports": [
         {"Protocol": "tcp", "TargetPort": 90, "PublishMode": "ingress"},
         {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "ingress"},
         {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
         {"TargetPort": 81, "PublishedPort": 8081, "PublishMode": "host"}]}),
], ids=["none", "dnsrr-lowercased", "sorted-by-published"])
def test_endpoint(mode: str | None, ports: Any,
                  expected: dict[str, Any]) -> None:
    assert cs.convert_endpoint(mode, ports) == expected


@pytest.mark.parametrize(("hc", "expected"), [
    (None, None),
    ({"test": ["CMD-SHELL", "true"], "interval": 30 * S, "retries": 3},
     {"Test": ["CMD-SHELL", "true"], "Interval": 30 * S, "Retries": 3}),
    ({"disable": True}, {"Test": ["NONE"]}),
    ({"test": ["NONE"]}, {"Test": ["NONE"]}),
    ({"timeout": S, "start_period": 2 * S, "start_interval": 3 * S},
     {"Timeout": S, "StartPeriod": 2 * S, "StartInterval": 3 * S}),
], ids=["none", "shell", "disable", "test-none", "durations-only"])
def test_healthcheck(hc: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    assert cs.convert_healthcheck(hc) == expected


def test_healthcheck_disable_with_test() -> None:
    with pytest.raises(cs.ConvertError, match="can't be set at the same time"):
        cs.convert_healthcheck({"disable": True, "test": ["CMD", "true"]})


@pytest.mark.parametrize(("env", "expected"), [
    (None, []),
    ({"B": "2", "A": "1", "C": None, "D": ""}, ["A=1", "B=2", "C", "D="]),
], ids=["none", "sorted-bare-empty"])
def test_environment(env: dict[str, str | None] | None, expected: list[str]) -> None:
    assert cs.convert_environment(env) == expected


@pytest.mark.parametrize(("hosts", "expected"), [
    (["a:1.2.3.4", "b:::1", "junk"], ["1.2.3.4 a", "::1 b"]),
    (None, []),
], ids=["mixed", "none"])
def test_extra_hosts(hosts: list[str] | None, expected: list[str]) -> None:
    assert cs.convert_extra_hosts(hosts) == expected


@pytest.mark.parametrize(("dns", "search", "expected"), [
    (None, None, None),
    (["8.8.8.8"], None, {"Nameservers": ["8.8.8.8"]}),
    (None, ["example.com"], {"Search": ["example.com"]}),
], ids=["none", "servers", "search"])
def test_dns(dns: list[str] | None, search: list[str] | None,
             expected: dict[str, Any] | None) -> None:
    assert cs.convert_dns(dns, search) == expected


def test_ulimits_sorted() -> None:
    assert cs.convert_ulimits({"nproc": {"soft": 5, "hard": 5},
                               "core": {"soft": 0, "hard": 1}}) == [
        {"Name": "core", "Hard": 1, "Soft": 0}, {"Name": "nproc", "Hard": 5, "Soft": 5}]


@pytest.mark.parametrize(("add", "drop", "expected"), [
    (["net_admin", "CAP_CHOWN"], ["mknod"], (["CAP_CHOWN", "CAP_NET_ADMIN"], ["CAP_MKNOD"])),
    (["ALL", "net_admin"], ["net_raw"], (["ALL"], ["CAP_NET_RAW"])),
    (["NET_ADMIN"], ["all"], (["CAP_NET_ADMIN"], ["ALL"])),
    (["chown"], ["chown"], (["CAP_CHOWN"], [])),
    (None, None, ([], [])),
], ids=["normalised", "add-all", "drop-all", "add-wins", "none"])
def test_capabilities(add: list[str] | None, drop: list[str] | None,
                      expected: tuple[list[str], list[str]]) -> None:
    assert cs.convert_capabilities(add, drop) == expected


@pytest.mark.parametrize(("logging", "expected"), [
    (None, None),
    ({"driver": "json-file", "options": {"max-size": "1m"}},
     {"Name": "json-file", "Options": {"max-size": "1m"}}),
    ({"options": {"tag": "x"}}, {"Options": {"tag": "x"}}),
], ids=["none", "driver", "options-only"])
def test_logging(logging: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    assert cs.convert_logging(logging) == expected


@pytest.mark.parametrize(("ref", "expected"), [
    ("nginx", "nginx:latest"),
    ("nginx:1.25", "nginx:1.25"),
    ("docker.io/library/nginx:1.25", "nginx:1.25"),
    ("docker.io/foo/bar", "foo/bar:latest"),
    ("index.docker.io/foo/bar:1", "foo/bar:1"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("registry.example.com/team/app:2", "registry.example.com/team/app:2"),
    ("nginx@sha256:" + "a" * 64, "nginx@sha256:" + "a" * 64),
    ("Bad/Name", "Bad/Name"),
], ids=["bare", "tagged", "library", "user", "index", "local-registry", "registry", "digest",
        "invalid-kept"])
def test_tagged_image(ref: str, expected: str) -> None:
    assert cs.tagged_image(ref) == expected


VOLUMES: dict[str, Any] = {"data": {}, "ext": {"external": True, "name": "ext"},
           "named": {"name": "exact", "driver": "local", "driver_opts": {"type": "tmpfs"},
                     "labels": {"a": "b"}}}


@pytest.mark.parametrize(("vol", "expected"), [
    ({"type": "volume", "source": "data", "target": "/d"},
     {"Type": "volume", "Source": "st_data", "Target": "/d",
      "VolumeOptions": {"Labels": {"com.docker.stack.namespace": "st"}}}),
    ({"type": "volume", "source": "ext", "target": "/e", "read_only": True,
      "volume": {"nocopy": True}},
     {"Type": "volume", "Source": "ext", "Target": "/e", "ReadOnly": True,
      "VolumeOptions": {"NoCopy": True}}),
    ({"type": "volume", "source": "named", "target": "/n"},
     {"Type": "volume", "Source": "exact", "Target": "/n", "VolumeOptions": {
         "Labels": {"a": "b", "com.docker.stack.namespace": "st"},
         "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}}}}),
    ({"type": "volume", "target": "/anon"}, {"Type": "volume", "Target": "/anon"}),
    ({"type": "bind", "source": "/h", "target": "/c", "bind": {"propagation": "rslave"}},
     {"Type": "bind", "Source": "/h", "Target": "/c",
      "BindOptions": {"Propagation": "rslave"}}),
    ({"type": "tmpfs", "target": "/t", "tmpfs": {"size": 1024}},
     {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024}}),
    ({"type": "npipe", "source": r"\\.\pipe\docker", "target": r"\\.\pipe\docker"},
     {"Type": "npipe", "Source": r"\\.\pipe\docker", "Target": r"\\.\pipe\docker"}),
], ids=["named", "external-nocopy", "name-driver", "anonymous", "bind", "tmpfs", "npipe"])
def test_mount(vol: dict[str, Any], expected: dict[str, Any]) -> None:
    assert att.convert_mount("st", vol, VOLUMES) == expected


@pytest.mark.parametrize(("vol", "message"), [
    ({"type": "volume", "source": "nope", "target": "/x"}, "undefined volume 'nope'"),
    ({"type": "tmpfs", "source": "x", "target": "/x"}, "source must be empty"),
    ({"type": "volume", "source": "data", "target": "/x", "bind": {}}, "bind options"),
    ({"type": "bind", "target": "/x"}, "source cannot be empty"),
], ids=["undefined", "tmpfs-source", "bind-on-volume", "bind-no-source"])
def test_mount_errors(vol: dict[str, Any], message: str) -> None:
    with pytest.raises(cs.ConvertError, match=message):
        att.convert_mount("st", vol, VOLUMES)


NETWORKS = {"front": {}, "ext": {"external": True, "name": "shared"}, "host": {
    "external": True, "name": "host"}}


@pytest.mark.parametrize(("attached", "expected"), [
    (None, [{"Target": "st_default", "Aliases": ["web"]}]),
    ({"front": {"aliases": ["a"], "driver_opts": {"k": "v"}}, "ext": None},
     [{"Target": "shared", "Aliases": ["web"]},
      {"Target": "st_front", "Aliases": ["a", "web"], "DriverOpts": {"k": "v"}}]),
    ({"host": None}, [{"Target": "host"}]),
], ids=["default", "aliases-sorted", "host-no-alias"])
def test_service_networks(attached: dict[str, Any] | None,
                          expected: list[dict[str, Any]]) -> None:
    assert att.convert_service_networks("st", "web", attached, NETWORKS) == expected


def test_service_networks_undefined() -> None:
    with pytest.raises(cs.ConvertError, match="undefined network 'back'"):
        att.convert_service_networks("st", "web", {"back": None}, NETWORKS)


OBJECTS: dict[str, Any] = {"s": {"data": b"x"}, "named": {"name": "exact", "data": b"y"},
           "ext": {"external": True, "name": "ext"}}


@pytest.mark.parametrize(("refs", "expected"), [
    ([{"source": "s"}], [{"File": {"Name": "s", "UID": "0", "GID": "0", "Mode": 0o444},
                          "SecretName": "st_s"}]),
    ([{"source": "named", "target": "/run/x", "uid": "1", "gid": "2", "mode": 0o400},
      {"source": "ext"}],
     [{"File": {"Name": "/run/x", "UID": "1", "GID": "2", "Mode": 0o400},
       "SecretName": "exact"},
      {"File": {"Name": "ext", "UID": "0", "GID": "0", "Mode": 0o444}, "SecretName": "ext"}]),
], ids=["defaults", "named-external"])
def test_file_refs(refs: Any, expected: list[dict[str, Any]]) -> None:
    assert att.convert_file_refs("st", "secrets", refs, OBJECTS) == expected


@pytest.mark.parametrize(("refs", "message"), [
    ([{"source": "nope"}], "undefined secret 'nope'"),
    ([{"source": "s"}, {"source": "named", "target": "s"}], "duplicate secret target"),
], ids=["undefined", "duplicate-target"])
def test_file_refs_errors(refs: Any, message: str) -> None:
    with pytest.raises(cs.ConvertError, match=message):
        att.convert_file_refs("st", "secrets", refs, OBJECTS)


@pytest.mark.parametrize(("cred", "expected"), [
    (None, (None, None)),
    ({"file": "spec.json"}, ({"File": "spec.json"}, None)),
    ({"registry": "r"}, ({"Registry": "r"}, None)),
    ({"config": "c"}, ({"Config": "st_c"}, {"Runtime": {}, "ConfigName": "st_c"})),
], ids=["none", "file", "registry", "config"])
def test_credential_spec(cred: dict[str, str] | None, expected: tuple[Any, Any]) -> None:
    assert att.convert_credential_spec("st", cred, {"c": {}}) == expected


def test_networks_only_used_and_external() -> None:
    nets = {"front": {"driver_opts": {"mtu": "1400"}, "internal": True, "attachable": True,
                      "labels": {"a": "b"}, "ipam": {"driver": "default",
                                                     "config": [{"subnet": "10.9.0.0/24"}]}},
            "ext": {"external": True, "name": "shared"}, "unused": {}}
    created, external = convert_networks("st", nets, {"front", "ext", "default"})
    assert external == ["shared"]
    assert created == {
        "st_default": {"Name": "st_default", "Driver": "overlay",
                       "Labels": {"com.docker.stack.namespace": "st"}},
        "st_front": {"Name": "st_front", "Driver": "overlay",
                     "Labels": {"a": "b", "com.docker.stack.namespace": "st"},
                     "Options": {"mtu": "1400"}, "Internal": True, "Attachable": True,
                     "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24"}]}},
    }


def test_objects_all_declared_not_external() -> None:
    found = convert_objects("st", {
        "a": {"data": b"1", "labels": {"x": "y"}},
        "b": {"name": "exact", "data": b"2", "template_driver": "golang"},
        "c": {"external": True, "name": "c"},
        "d": {"driver": "vault", "driver_opts": {"path": "/x"}},
    })
    assert found == {
        "st_a": {"Name": "st_a", "Labels": {"x": "y", "com.docker.stack.namespace": "st"},
                 "Data": b"1"},
        "exact": {"Name": "exact", "Labels": {"com.docker.stack.namespace": "st"}, "Data": b"2",
                  "Templating": {"Name": "golang"}},
        "st_d": {"Name": "st_d", "Labels": {"com.docker.stack.namespace": "st"},
                 "Driver": {"Name": "vault", "Options": {"path": "/x"}}},
    }
