"""Several LB replicas that switch as one (upgrade_manager.lb_replicas), on in-memory replicas.

Each fake replica answers the admin calls dans sends to every replica (GET /v1/table,
PUT /v1/routes, GET .../drained) as the real admin API does, parsing every table with the LB's
own `RoutingTable`; a replica can be down while its task runs, start between two calls, or
restart on the spec's table. The route step is over only when every running replica reports
the new version; a running replica that does not answer is an error, never skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
import yaml

from compose_translator import load_project, translate
from lb.errors import LBError
from lb.table import RoutingTable
from tests.upgrade.stacks import SETTINGS, doc
from upgrade_manager.errors import PlanError
from upgrade_manager.lb_replicas import ReplicatedAdmin, parse_replicas
from upgrade_manager.managed import manage

SPEC = {"frontends": [{"name": "web-80", "listen": 80, "active": "main",
                       "groups": {"main": {"backends": ["tasks.s_web:80"]}}}]}
NEXT = {"frontends": [{"name": "web-80", "listen": 80, "active": "next",
                       "groups": {"main": {"backends": ["tasks.s_web:80"]},
                                  "next": {"backends": ["tasks.s_web-next:80"]}}}]}


@dataclass
class Replica:
    table: RoutingTable = field(default_factory=lambda: RoutingTable.from_dict(SPEC))
    up: bool = True  # answering its admin API
    in_flight: int = 0
    puts: int = 0

    def answer(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes] | str:
        if not self.up:
            return "cannot reach the LB (connection refused)"
        if method == "PUT" and path == "/v1/routes":
            self.table = RoutingTable.from_dict(json.loads(body or b""))
            self.puts += 1
            return 200, json.dumps({"routes": self.table.to_dict()}).encode()
        if method == "GET" and path == "/v1/table":
            return 200, json.dumps({"version": self.table.version, "base": "b",
                                    "routes": self.table.to_dict()}).encode()
        if method == "GET" and "/drained" in path:
            if self.in_flight:
                self.in_flight -= 1
            return 200, json.dumps({"drained": not self.in_flight,
                                    "in_flight": self.in_flight}).encode()
        return 404, b'{"error": "no such path"}'


class FakeReplicas:
    """The fan-out: replicas by address; `running` is what the swarm's tasks say."""

    where = "fake replicas"

    def __init__(self, n: int) -> None:
        self.replicas = {f"10.0.0.{i + 1}": Replica() for i in range(n)}
        self.running = set(self.replicas)
        self.before_call: list[Callable[[str, str], None]] = []

    def addresses(self) -> list[str]:
        return sorted(self.running)

    def request_each(self, method: str, path: str, body: bytes | None, targets: list[str],
                     timeout: float) -> dict[str, tuple[int, bytes] | str]:
        for hook in list(self.before_call):
            hook(method, path)
        return {a: self.replicas[a].answer(method, path, body) for a in targets}

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                timeout: float) -> tuple[int, bytes]:
        raise AssertionError("every call of the agreement goes to each replica")

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def admin(fan: FakeReplicas, agree: float = 5.0) -> tuple[ReplicatedAdmin, Clock]:
    clock = Clock()
    return ReplicatedAdmin(fan, agree_timeout=agree, clock=clock, sleep=clock.sleep), clock


def test_every_replica_gets_the_table_under_one_new_version() -> None:
    fan = FakeReplicas(3)
    client, _ = admin(fan)
    served = client.set_routes(RoutingTable.from_dict(NEXT))
    assert served.version == 1
    assert all(r.table == served for r in fan.replicas.values())
    assert served.frontend("web-80").active == "next"
    again = client.set_routes(RoutingTable.from_dict(SPEC))
    assert again.version == 2 and {r.table.version for r in fan.replicas.values()} == {2}
    assert client.routes() == again


def test_a_running_replica_that_does_not_answer_is_retried_then_an_error() -> None:
    fan = FakeReplicas(3)
    fan.replicas["10.0.0.2"].up = False
    client, clock = admin(fan, agree=3.0)
    with pytest.raises(LBError, match=r"do not serve table version 1 .*10\.0\.0\.2: cannot reach"):
        client.set_routes(RoutingTable.from_dict(NEXT))
    assert clock.now > 3.0  # it kept trying for the whole wait
    assert fan.replicas["10.0.0.1"].table.version == 1  # the others have it already


def test_a_replica_that_comes_back_in_time_gets_the_table() -> None:
    fan = FakeReplicas(2)
    late = fan.replicas["10.0.0.2"]
    late.up = False
    calls = [0]

    def come_back(_method: str, _path: str) -> None:
        calls[0] += 1
        if calls[0] == 4:
            late.up = True

    fan.before_call.append(come_back)
    client, _ = admin(fan)
    served = client.set_routes(RoutingTable.from_dict(NEXT))
    assert late.table == served and late.puts == 1


def test_a_replica_that_stops_running_is_no_longer_waited_for() -> None:
    fan = FakeReplicas(3)
    fan.replicas["10.0.0.3"].up = False
    fan.running.discard("10.0.0.3")  # its task is gone from the swarm
    client, _ = admin(fan)
    assert client.set_routes(RoutingTable.from_dict(NEXT)).version == 1


def test_a_replica_that_starts_or_restarts_during_the_change_is_set_right() -> None:
    fan = FakeReplicas(2)
    fan.replicas["10.0.0.9"] = Replica()  # a task that starts on the spec's table
    restarted = fan.replicas["10.0.0.1"]

    def during_put(method: str, _path: str) -> None:
        if method == "PUT" and "10.0.0.9" not in fan.running:
            fan.running.add("10.0.0.9")
            fan.replicas["10.0.0.1"] = replace(restarted, table=RoutingTable.from_dict(SPEC))

    fan.before_call.append(during_put)
    client, _ = admin(fan)
    served = client.set_routes(RoutingTable.from_dict(NEXT))
    assert {a: r.table.version for a, r in fan.replicas.items()} == {
        "10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.9": 1}
    assert fan.replicas["10.0.0.9"].table == served


def test_the_new_version_is_above_every_replica_s() -> None:
    fan = FakeReplicas(2)
    fan.replicas["10.0.0.2"].table = replace(RoutingTable.from_dict(SPEC), version=7)
    client, _ = admin(fan)
    assert client.set_routes(RoutingTable.from_dict(NEXT)).version == 8
    assert client.routes().version == 8


def test_a_drain_waits_for_every_replica() -> None:
    fan = FakeReplicas(3)
    fan.replicas["10.0.0.2"].in_flight = 3
    client, _ = admin(fan)
    client.wait_drained("web-80", "main", timeout=10)
    assert fan.replicas["10.0.0.2"].in_flight == 0
    fan.replicas["10.0.0.3"].up = False
    with pytest.raises(LBError, match=r"not drained after 2 s: 10\.0\.0\.3: cannot reach"):
        client.wait_drained("web-80", "main", timeout=2)


def test_no_running_replica_is_an_error() -> None:
    fan = FakeReplicas(1)
    fan.running.clear()
    client, _ = admin(fan)
    with pytest.raises(LBError, match="no running replica"):
        client.set_routes(RoutingTable.from_dict(NEXT))



def test_deploy_options_give_the_lb_spec_its_replicas_and_encrypted_networks() -> None:
    assert parse_replicas("3", None) == 3 and parse_replicas("global", None) is None
    assert parse_replicas(None, {"Mode": {"Replicated": {"Replicas": 2}}}) == 2
    assert parse_replicas(None, {"Mode": {"Global": {}}}) is None
    assert parse_replicas(None, None) == 1
    for bad in ("0", "-1", "x", "65"):
        with pytest.raises(PlanError, match="--lb-replicas"):
            parse_replicas(bad, None)
    project = load_project(["-"], stdin_text=yaml.safe_dump(doc()), environ={})
    specs = translate(project, "st")
    plain = manage(specs, SETTINGS)
    ciphered = manage(specs, replace(SETTINGS, replicas=None, encrypt=True))
    lb = ciphered.specs.services[ciphered.lb_service]
    assert lb["Mode"] == {"Global": {}}
    assert "DANS_LB_PEERS=tasks.{{.Service.Name}}" in lb["TaskTemplate"]["ContainerSpec"]["Env"]
    assert ciphered.specs.networks
    assert all("encrypted" in (n.get("Options") or {}) for n in ciphered.specs.networks.values())
    assert not any("encrypted" in (n.get("Options") or {}) for n in plain.specs.networks.values())
