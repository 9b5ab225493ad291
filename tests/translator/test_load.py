"""Loading: interpolation, .env and env_file, anchors, merging, spec forms, errors, warnings."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from compose_translator import ComposeError, StackSpecs, load_project, translate


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def specs_of(tmp: Path, text: str, env: dict[str, str] | None = None,
             extra: list[str] | None = None) -> StackSpecs:
    files = [write(tmp, "docker-compose.yml", text)] + (extra or [])
    return translate(load_project(files, environ=env or {}), "st")


def env_of(specs: StackSpecs, service: str = "st_app") -> list[str]:
    return specs.services[service]["TaskTemplate"]["ContainerSpec"].get("Env", [])


@pytest.mark.parametrize(("value", "env", "expected"), [
    ("$V", {"V": "x"}, "x"),
    ("${V}", {"V": "x"}, "x"),
    ("a${V}b", {"V": "x"}, "axb"),
    ("${V:-d}", {}, "d"),
    ("${V:-d}", {"V": ""}, "d"),
    ("${V-d}", {"V": ""}, ""),
    ("${V-d}", {}, "d"),
    ("${V:?boom}", {"V": "ok"}, "ok"),
    ("${V?boom}", {"V": ""}, ""),
    ("$$V", {"V": "x"}, "$V"),
    ("$V", {}, ""),
], ids=["plain", "braced", "embedded", "colon-default-unset", "colon-default-empty",
        "dash-default-empty", "dash-default-unset", "required-set", "required-empty-ok",
        "escaped", "unset-blank"])
def test_interpolation(tmp_path: Path, value: str, env: dict[str, str], expected: str) -> None:
    specs = specs_of(tmp_path, f"""
        services:
          app:
            image: img
            environment:
              OUT: "{value}"
        """, env)
    assert env_of(specs) == [f"OUT={expected}"]


@pytest.mark.parametrize(("value", "env"), [("${V:?need V}", {"V": ""}), ("${V?need V}", {})],
                         ids=["colon", "plain"])
def test_required_variable_error(tmp_path: Path, value: str, env: dict[str, str]) -> None:
    with pytest.raises(ComposeError) as info:
        specs_of(tmp_path, f"""
            services:
              app:
                image: img
                environment:
                  OUT: "{value}"
            """, env)
    assert "docker-compose.yml:6: service 'app', key 'environment.OUT': " \
           "required variable V is missing a value: need V" in str(info.value)


def test_unset_variable_warns(tmp_path: Path) -> None:
    specs = specs_of(tmp_path, "services:\n  app:\n    image: img:${TAG}\n")
    assert specs.services["st_app"]["Labels"]["com.docker.stack.image"] == "img:"
    assert "The TAG variable is not set. Defaulting to a blank string." in specs.warnings


def test_dotenv_beside_first_file_environment_wins(tmp_path: Path) -> None:
    write(tmp_path, ".env", "A=from-dotenv\nB='quoted value'\nexport C=exported\n")
    specs = specs_of(tmp_path, """
        services:
          app:
            image: img
            environment: [A=$A, B=$B, C=$C]
        """, {"A": "from-env"})
    assert env_of(specs) == ["A=from-env", "B=quoted value", "C=exported"]


def test_env_file_and_environment(tmp_path: Path) -> None:
    write(tmp_path, "a.env", "X=file\nY=file\n# comment\n  Z=z\nPASS\nMISSING\n")
    specs = specs_of(tmp_path, """
        services:
          app:
            image: img
            env_file: a.env
            environment:
              Y: compose
              E: ""
              N:
        """, {"PASS": "through", "E": "from-env"})
    assert env_of(specs) == ["E=from-env", "N", "PASS=through", "X=file", "Y=compose", "Z=z"]


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match=r"service 'app', key 'env_file\[0\]': cannot read"):
        specs_of(tmp_path, "services:\n  app:\n    image: img\n    env_file: [nope.env]\n")


def test_anchors_merge_keys_and_extensions(tmp_path: Path) -> None:
    specs = specs_of(tmp_path, """
        x-base: &base
          image: img
          environment: {A: "1"}
        services:
          app:
            <<: *base
            x-dans: {compatible: true, calls: [other], entry: true}
          other:
            <<: *base
            x-custom: kept
        """)
    assert env_of(specs) == ["A=1"]
    assert specs.extensions == {"app": {"compatible": True, "calls": ["other"], "entry": True},
                                "other": {}}
    project = load_project([str(tmp_path / "docker-compose.yml")], environ={})
    assert project.extensions == {"x-base": {"image": "img", "environment": {"A": "1"}}}
    assert "services.app.x-dans.entry has no effect" in " ".join(project.warnings)
    assert project.services["other"]["x-custom"] == "kept"


@pytest.mark.parametrize(("ext", "message"), [
    ("{colour: red}", "unknown x-dans key 'colour'"),
    ("{compatible: 'yes'}", "x-dans.compatible must be a bool"),
    ("{calls: [ghost]}", "x-dans.calls names 'ghost'"),
    ("[1]", "x-dans must be a mapping"),
], ids=["unknown", "type", "unknown-service", "not-mapping"])
def test_x_dans_validation(tmp_path: Path, ext: str, message: str) -> None:
    with pytest.raises(ComposeError, match=message) as info:
        specs_of(tmp_path, f"services:\n  app:\n    image: img\n    x-dans: {ext}\n")
    assert "docker-compose.yml:4: service 'app'" in str(info.value)


def test_compose_spec_forms_the_cli_rejects(tmp_path: Path) -> None:
    specs = specs_of(tmp_path, """
        name: shop
        services:
          app:
            image: img
            depends_on:
              db: {condition: service_healthy}
            ports:
              - target: 80
                published: "8080"
            deploy:
              resources:
                limits: {cpus: 0.5}
          db:
            image: img
        """)
    svc = specs.services["st_app"]
    assert svc["EndpointSpec"]["Ports"] == [{"TargetPort": 80, "PublishedPort": 8080}]
    assert svc["TaskTemplate"]["Resources"] == {"Limits": {"NanoCPUs": 500_000_000}}
    project = load_project([str(tmp_path / "docker-compose.yml")], environ={})
    assert project.name == "shop"


def test_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    project = load_project(["-"], environ={}, stdin_text="services:\n  app:\n    image: i\n")
    assert translate(project, "st").short_names == {"st_app": "app"}


@pytest.mark.parametrize(("key", "message"), [
    ("volumes_from: [x]", "'volumes_from' is not allowed"),
    ("mem_limit: 1g", "'mem_limit' is not allowed: set resource limits with deploy.resources"),
    ("extends: {service: x}", "'extends' is not allowed"),
], ids=["volumes_from", "mem_limit", "extends"])
def test_forbidden_keys(tmp_path: Path, key: str, message: str) -> None:
    with pytest.raises(ComposeError, match=message) as info:
        specs_of(tmp_path, f"services:\n  app:\n    image: img\n    {key}\n")
    assert f"docker-compose.yml:4: service 'app', key '{key.split(':')[0]}'" in str(info.value)


def test_schema_errors_one_per_problem(tmp_path: Path) -> None:
    with pytest.raises(ComposeError) as info:
        specs_of(tmp_path, """
            services:
              app:
                image: img
                colour: red
              db:
                image: img
                deploy:
                  replicas: [1]
            networks:
              n:
                driverr: x
            """)
    problems = info.value.problems
    assert len(problems) == 3
    assert any("docker-compose.yml:5: service 'app', key 'colour': unsupported key 'colour'"
               in p for p in problems)
    assert any("docker-compose.yml:9: service 'db', key 'deploy.replicas'" in p
               for p in problems)
    assert any("docker-compose.yml:12: network 'n', key 'driverr'" in p for p in problems)


@pytest.mark.parametrize(("snippet", "where", "message"), [
    ("    networks: [nope]\n", "key 'networks.nope'", "undefined network 'nope'"),
    ("    volumes: ['nope:/x']\n", "key 'volumes[0].source'", "undefined volume 'nope'"),
    ("    secrets: [nope]\n", "key 'secrets[0]'", "undefined secret 'nope'"),
    ("    deploy: {replicas: lots}\n", "key 'deploy.replicas'", "expected a number"),
    ("    ports: ['80/icmp']\n", "key 'ports[0]'", "invalid protocol"),
    ("    stop_grace_period: 10\n", "key 'stop_grace_period'", "invalid duration"),
    ("    restart: sometimes\n", "key 'restart'", "unknown policy"),
], ids=["network", "volume", "secret", "replicas", "protocol", "duration", "restart"])
def test_conversion_errors_name_file_line_service_key(
        tmp_path: Path, snippet: str, where: str, message: str) -> None:
    with pytest.raises(ComposeError) as info:
        specs_of(tmp_path, "services:\n  app:\n    image: img\n" + snippet)
    text = str(info.value)
    assert "docker-compose.yml:4: service 'app', " + where in text
    assert message in text
    assert "Traceback" not in text


def test_ignored_keys_one_warning(tmp_path: Path) -> None:
    specs = specs_of(tmp_path, """
        services:
          app:
            image: img
            build: .
            container_name: x
            links: [db]
            depends_on: [db]
            networks:
              n: {ipv4_address: 10.1.1.1}
            volumes: ["/h:/c:Z"]
          db:
            image: img
            networks: [n]
        networks:
          n:
        """)
    ignored = [w for w in specs.warnings if w.startswith("Ignoring keys")]
    assert len(ignored) == 1
    for key in ("services.app.build", "services.app.container_name", "services.app.links",
                "services.app.depends_on", "services.app.networks.n.ipv4_address",
                "services.app.volumes[0] option Z"):
        assert key in ignored[0]


MERGE_BASE = """
services:
  app:
    image: img:1
    command: [a, b]
    environment: {A: base, B: base}
    labels: [x=1]
    ports: ["8080:80", "9090:90"]
    volumes: ["data:/data", "/h:/keep"]
    secrets: [s1]
    dns: [1.1.1.1]
    deploy:
      replicas: 1
      resources: {limits: {memory: 64M}}
volumes: {data: {}, other: {}}
secrets:
  s1: {file: ./s.txt}
  s2: {file: ./s.txt}
"""
MERGE_OVERRIDE = """
services:
  app:
    image: img:2
    command: [c]
    environment: {B: over, C: over}
    labels: [y=2]
    ports: [{target: 81, published: 8080}]
    volumes: ["other:/data"]
    secrets: [{source: s1, target: renamed}, s2]
    dns: [8.8.8.8]
    deploy:
      resources: {limits: {cpus: "1"}}
"""


def test_merge_rules(tmp_path: Path) -> None:
    write(tmp_path, "s.txt", "x")
    over = write(tmp_path, "override.yml", MERGE_OVERRIDE)
    specs = specs_of(tmp_path, MERGE_BASE, extra=[over])
    svc = specs.services["st_app"]
    c: dict[str, Any] = svc["TaskTemplate"]["ContainerSpec"]
    assert c["Image"] == "img:2"
    assert c["Args"] == ["c"]
    assert c["Env"] == ["A=base", "B=over", "C=over"]
    assert c["Labels"] == {"x": "1", "y": "2", "com.docker.stack.namespace": "st"}
    assert [(p["TargetPort"], p["PublishedPort"]) for p in svc["EndpointSpec"]["Ports"]] == \
        [(81, 8080), (90, 9090)]
    assert [(m["Source"], m["Target"]) for m in c["Mounts"]] == \
        [("st_other", "/data"), ("/h", "/keep")]
    assert [(s["SecretName"], s["File"]["Name"]) for s in c["Secrets"]] == \
        [("st_s1", "renamed"), ("st_s2", "s2")]
    assert c["DNSConfig"] == {"Nameservers": ["1.1.1.1", "8.8.8.8"]}
    assert svc["Mode"] == {"Replicated": {"Replicas": 1}}
    assert svc["TaskTemplate"]["Resources"] == {
        "Limits": {"NanoCPUs": 10**9, "MemoryBytes": 64 * 2**20}}


def test_relative_bind_paths_resolve_against_first_file(tmp_path: Path) -> None:
    specs = specs_of(tmp_path, "services:\n  app:\n    image: i\n    volumes: ['./src:/app']\n")
    mount = specs.services["st_app"]["TaskTemplate"]["ContainerSpec"]["Mounts"][0]
    assert mount["Source"] == str(tmp_path / "src")


def test_invalid_stack_name(tmp_path: Path) -> None:
    project = load_project([write(tmp_path, "c.yml", "services: {a: {image: i}}\n")],
                           environ={})
    with pytest.raises(ComposeError, match="invalid stack name"):
        translate(project, "bad name")


@pytest.mark.parametrize("version", ["2", "2.4", "1"], ids=str)
def test_old_file_formats_are_refused(tmp_path: Path, version: str) -> None:
    with pytest.raises(ComposeError, match=f"format {version} is not supported") as info:
        specs_of(tmp_path, f"version: '{version}'\nservices:\n  app:\n    image: i\n")
    assert "docker-compose.yml:1: key 'version'" in str(info.value)


def test_config_content_and_environment_sources(tmp_path: Path) -> None:
    specs = specs_of(tmp_path, """
        services:
          app: {image: i, configs: [inline, fromenv]}
        configs:
          inline: {content: "hello $$USER"}
          fromenv: {environment: TOKEN}
        """, {"TOKEN": "t0k"})
    assert specs.configs["st_inline"]["Data"] == b"hello $USER"
    assert specs.configs["st_fromenv"]["Data"] == b"t0k"
