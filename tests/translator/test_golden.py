"""The full example (every supported key) against its golden output.

Regenerate after an intended change with `DANS_UPDATE_GOLDEN=1 pytest tests/translator`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from compose_translator import load_project, translate
from upgrade_manager._cli_compose import specs_to_dict

HERE = Path(__file__).parent
FULL = HERE / "fixtures" / "fidelity" / "19-full-example"
GOLDEN = HERE / "golden" / "full-example.json"


def render() -> str:
    project = load_project([str(FULL / "docker-compose.yml")], environ={})
    text = json.dumps(specs_to_dict(translate(project, "demo")), indent=2, sort_keys=False)
    return text.replace(str(FULL), "<FIXTURE_DIR>") + "\n"


def test_full_example_matches_golden() -> None:
    text = render()
    if os.environ.get("DANS_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "translation changed; see DANS_UPDATE_GOLDEN above"


def test_full_example_uses_every_converted_section() -> None:
    data = json.loads(render())
    container_keys = set()
    task_keys = set()
    for spec in data["services"].values():
        container_keys |= set(spec["TaskTemplate"]["ContainerSpec"])
        task_keys |= set(spec["TaskTemplate"])
    assert container_keys >= {
        "Image", "Labels", "Command", "Args", "Hostname", "Env", "Dir", "User", "Privileges",
        "Init", "StopSignal", "TTY", "OpenStdin", "ReadOnly", "Mounts", "StopGracePeriod",
        "Healthcheck", "Hosts", "DNSConfig", "Secrets", "Configs", "Isolation", "Sysctls",
        "CapabilityAdd", "CapabilityDrop", "Ulimits", "OomScoreAdj"}
    assert task_keys >= {"ContainerSpec", "LogDriver", "Resources", "RestartPolicy",
                         "Placement", "Networks"}
    modes = {next(iter(s["Mode"])) for s in data["services"].values()}
    assert modes == {"Replicated", "Global", "ReplicatedJob"}
    kinds = {d["kind"] for d in data["dependencies"]}
    assert kinds == {"depends_on", "x-dans", "environment"}
