"""Spec comparison ignores what the engine fills in and reports what the user changed."""

from __future__ import annotations

from typing import Any

import pytest

from upgrade_manager.diff import diff_specs, normalize, replaces_tasks

DIGEST = "@sha256:" + "a" * 64


def spec(**task: Any) -> dict[str, Any]:
    container = {"Image": "app:1", "Env": ["A=1"], **task.pop("container", {})}
    return {"Name": "st_app", "Labels": {"x": "1"},
            "TaskTemplate": {"ContainerSpec": container,
                             "Networks": [{"Target": "st_default", "Aliases": ["app"]}],
                             **task},
            "Mode": {"Replicated": {"Replicas": 2}}}


@pytest.mark.parametrize(
    ("running", "desired"),
    [
        (spec(container={"Image": "app:1" + DIGEST}), spec()),
        (spec(container={"Isolation": "default"}, ForceUpdate=0, Runtime="container"), spec()),
        ({**spec(), "EndpointSpec": {"Mode": "vip"}}, spec()),
        ({**spec(), "UpdateConfig": {"Parallelism": 1, "MaxFailureRatio": 0},
          "RollbackConfig": {"FailureAction": "pause"}},
         {**spec(), "UpdateConfig": {"Parallelism": 1}}),
        ({**spec(Resources={}, Placement={})}, spec()),
        (spec(Networks=[{"Target": "net-id-1", "Aliases": ["app"]}]), spec()),
        (spec(container={"Secrets": [{"SecretName": "s", "SecretID": "abc"}]}),
         spec(container={"Secrets": [{"SecretName": "s"}]})),
    ],
    ids=["image-digest", "engine-defaults", "default-endpoint-mode", "update-defaults",
         "empty-sections",
         "network-id", "secret-id"],
)
def test_engine_noise_is_not_a_difference(running: dict[str, Any],
                                          desired: dict[str, Any]) -> None:
    names = {"net-id-1": "st_default"}
    assert diff_specs(normalize(running, names), normalize(desired)) == []


@pytest.mark.parametrize(
    ("desired", "path", "replaces"),
    [
        (spec(container={"Env": ["A=2"]}), "TaskTemplate.ContainerSpec.Env", True),
        (spec(container={"Image": "app:2"}), "TaskTemplate.ContainerSpec.Image", True),
        ({**spec(), "Mode": {"Replicated": {"Replicas": 3}}}, "Mode.Replicated.Replicas", False),
        ({**spec(), "Labels": {"x": "2"}}, "Labels.x", False),
        ({**spec(), "EndpointSpec": {"Mode": "dnsrr"}}, "EndpointSpec.Mode", True),
    ],
    ids=["env", "image", "replicas", "service-label", "endpoint-mode"],
)
def test_user_changes_are_reported(desired: dict[str, Any], path: str, replaces: bool) -> None:
    diffs = diff_specs(normalize(spec()), normalize(desired))
    assert [d.path for d in diffs] == [path]
    assert replaces_tasks(diffs) is replaces
    assert path in str(diffs[0])
