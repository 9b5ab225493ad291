"""Secrets and the LB token never reach the durable state, a spec's environment or a label.

On the fake swarm: the plan of a file that adds and changes secrets holds their names and
digests only; the executor creates them from the files' content; a resume whose secret
content changed is refused with the secret's name; the LB's and the relays' specs hold no
token; `dans deploy --rotate-lb-token` gives the LB a new token secret.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fakegateway import FakeGateway
from tests.fakelb import FakeLB
from tests.upgrade.fakestack import STACK, deployed, options
from tests.upgrade.stacks import doc
from upgrade_manager import state as state_module
from upgrade_manager import upgrade
from upgrade_manager.errors import PlanError, UpgradeError
from upgrade_manager.managed import TOKEN_FILE, lb_service_name, token_secret_ref
from upgrade_manager.model import Step, StepKind
from upgrade_manager.state import StateStore

OLD, NEW, ADDED = b"s3cret-old-content-1", b"s3cret-new-content-2", b"s3cret-added-3"


def with_secrets(tmp: Path, key: bytes, *, add: bool) -> dict[str, Any]:
    """BASE with secret `key` (and `extra` if `add`) on api, from files under `tmp`."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "key").write_bytes(key)
    secrets: dict[str, Any] = {"key": {"file": str(tmp / "key")}}
    if add:
        (tmp / "extra").write_bytes(ADDED)
        secrets["extra"] = {"file": str(tmp / "extra")}
    document = doc(api={"secrets": sorted(secrets)})
    document["secrets"] = secrets
    return document


def secret_data(gw: FakeGateway, name: str) -> bytes:
    """What the fake engine holds for a secret (the real one never shows it)."""
    return base64.b64decode(gw._secrets[name].spec["Data"])


def no_secret_in(text: str) -> None:
    for value in (OLD, NEW, ADDED):
        assert value.decode() not in text
        assert base64.b64encode(value).decode() not in text


def dead_owner() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}"


@pytest.fixture
def swarm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[FakeGateway, FakeLB]:
    monkeypatch.setattr(state_module, "HEARTBEAT_EVERY", 3600.0)
    gw = deployed(with_secrets(tmp_path / "v1", OLD, add=False), stop_delay=0)
    lb = FakeLB(gw, STACK, watch=True)
    monkeypatch.setattr(upgrade, "lb_admin", lambda _gw, _stack, _url=None: lb)
    return gw, lb


def test_the_plan_holds_digests_not_content(swarm: tuple[FakeGateway, FakeLB],
                                            tmp_path: Path) -> None:
    gw, _lb = swarm
    plan, _ = upgrade.plan_upgrade(gw, options(with_secrets(tmp_path / "v2", NEW, add=True)))
    created = [s for s in plan.steps if s.kind == "create_secret"]
    assert sorted(s.args["logical"] for s in created) == ["st_extra", "st_key"]
    for step in created:
        assert "Data" not in step.args["spec"]
        assert step.args["digest"].startswith("sha256:")
    no_secret_in(plan.to_json())


def test_an_upgrade_stores_no_secret_and_creates_them_from_the_files(
        swarm: tuple[FakeGateway, FakeLB], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    gw, lb = swarm
    stored: list[str] = []
    real_create = gw.create_config

    def create_config(spec: dict[str, Any]) -> str:
        stored.append(spec["Data"].decode())
        return real_create(spec)

    monkeypatch.setattr(gw, "create_config", create_config)
    upgrade.run_upgrade(gw, options(with_secrets(tmp_path / "v2", NEW, add=True)),
                        lambda *_a: None)
    assert stored, "the upgrade recorded no state"
    for text in stored:
        no_secret_in(text)
    datas = {s["Spec"]["Name"].rsplit("-", 1)[0]: secret_data(gw, s["Spec"]["Name"])
             for s in gw.secrets(STACK) if "dans-lb-token" not in s["Spec"]["Name"]}
    assert datas == {f"{STACK}_key": NEW, f"{STACK}_extra": ADDED}
    assert lb.violations == []


def test_a_resume_with_changed_secret_content_is_refused(
        swarm: tuple[FakeGateway, FakeLB], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    gw, _lb = swarm

    class Killed(BaseException):
        pass

    def kill(event: str, step: Step | None, _s: float, _m: str) -> None:
        if event == "start" and step is not None and step.kind == "create_secret":
            raise Killed

    monkeypatch.setattr(state_module, "this_owner", dead_owner)
    with pytest.raises(Killed):
        upgrade.run_upgrade(gw, options(with_secrets(tmp_path / "v2", NEW, add=True)), kill)
    monkeypatch.setattr(state_module, "this_owner", lambda: "resumer:2")
    (tmp_path / "v2" / "key").write_bytes(b"edited in between")
    with pytest.raises(UpgradeError, match="content of secret st_key changed"):
        upgrade.run_upgrade(gw, options(with_secrets(tmp_path / "v2", b"edited in between",
                                                     add=True)), lambda *_a: None)
    assert StateStore(gw, STACK).load() is not None  # still there, to resume or roll back
    upgrade.run_upgrade(gw, options(with_secrets(tmp_path / "v2", NEW, add=True)),
                        lambda *_a: None)
    assert StateStore(gw, STACK).load() is None


def test_the_executor_refuses_content_that_does_not_match_the_digest() -> None:
    from upgrade_manager.executor import Executor

    gw = FakeGateway()
    step = Step(StepKind.CREATE_SECRET, "st_key-0", {"spec": {"Name": "st_key-0"}, "logical": "key",
                                               "digest": "sha256:" + "0" * 64})
    ex = Executor(gw, lambda: None, lambda *_a: None, secret_data={"st_key-0": b"other"})  # type: ignore[arg-type,return-value]
    with pytest.raises(UpgradeError, match="secret key: its content is not what"):
        ex.apply(step)


def test_lb_and_relays_hold_no_token(swarm: tuple[FakeGateway, FakeLB],
                                     tmp_path: Path) -> None:
    gw, _lb = swarm
    lb = gw.inspect_service(lb_service_name(STACK))["Spec"]
    container = lb["TaskTemplate"]["ContainerSpec"]
    assert not any(e.startswith("DANS_LB_TOKEN=") for e in container["Env"])
    assert f"DANS_LB_TOKEN_FILE=/run/secrets/{TOKEN_FILE}" in container["Env"]
    ref = token_secret_ref(lb)
    assert ref is not None and ref["SecretName"].startswith(f"{STACK}_dans-lb-token-")
    ports = [p["PublishedPort"] for p in (lb.get("EndpointSpec") or {}).get("Ports", [])]
    assert ports == [8080], "only the entry's port is published, not the admin port"
    plan, _ = upgrade.plan_upgrade(gw, options(doc(api={"image": "app/api:2"})))
    relays = [spec for s in plan.steps if s.kind == "create_services" and s.target == "relays"
              for spec in s.args["services"].values()]
    assert relays
    for spec in relays:
        text = json.dumps(spec)
        assert "TOKEN" not in text and "Secrets" not in text and "9900" not in text
        assert spec["TaskTemplate"]["ContainerSpec"]["Args"][0] == "relay"


def test_rotate_lb_token_makes_a_new_secret_and_removes_the_old(
        swarm: tuple[FakeGateway, FakeLB], tmp_path: Path) -> None:
    gw, _lb = swarm
    before = token_secret_ref(gw.inspect_service(lb_service_name(STACK))["Spec"])
    assert before is not None
    old_token = secret_data(gw, before["SecretName"])
    document = with_secrets(tmp_path / "v1", OLD, add=False)
    upgrade.deploy(gw, options(document), wait=True, rotate_token=True)
    after = token_secret_ref(gw.inspect_service(lb_service_name(STACK))["Spec"])
    assert after is not None and after["SecretName"] != before["SecretName"]
    assert secret_data(gw, after["SecretName"]) != old_token
    names = {s["Spec"]["Name"] for s in gw.secrets(STACK)}
    assert before["SecretName"] not in names and after["SecretName"] in names
    # A plain redeploy keeps the token.
    upgrade.deploy(gw, options(document), wait=True)
    again = token_secret_ref(gw.inspect_service(lb_service_name(STACK))["Spec"])
    assert again is not None and again["SecretName"] == after["SecretName"]


def test_an_lb_with_its_token_in_the_environment_must_be_redeployed_first(
        swarm: tuple[FakeGateway, FakeLB]) -> None:
    gw, _lb = swarm
    name = lb_service_name(STACK)
    current = gw.inspect_service(name)
    spec = current["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    container["Secrets"] = []
    container["Env"] = [*container["Env"], "DANS_LB_TOKEN=legacy"]
    gw.update_service(name, spec, version=int(current["Version"]["Index"]))
    with pytest.raises(PlanError, match="run `dans deploy` once"):
        upgrade.plan_upgrade(gw, options(doc(api={"image": "app/api:2"})))
