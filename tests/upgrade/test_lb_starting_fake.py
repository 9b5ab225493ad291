"""LB replicas that are starting count (issue 20): a route step waits for them and gives them
the new table, since a starting task may already take requests (a host-mode port opens with
its container, before the swarm reports the task running).

The replicas' addresses come from `AdminChannel.addresses` reading the in-memory swarm
(tests/fakegateway.py): LB tasks start, run, and move off a node that goes down. Each replica
answers its admin API (the stand-in of test_lb_replicas_fake) once its task has been starting
for a moment, as the LB's admin API opens before its health check passes.
"""

from __future__ import annotations

from lb.table import RoutingTable
from tests.fakegateway import FakeGateway
from tests.upgrade.test_lb_replicas_fake import NEXT, SPEC, Replica
from upgrade_manager.admin_channel import AdminChannel, serving
from upgrade_manager.lb_replicas import Answer, ReplicatedAdmin
from upgrade_manager.managed import edge_network_name, lb_service_name

STACK = "s"
OPENS_AFTER = 0.4  # seconds of a task's start before its admin API answers (start_delay 1)


def lb_stack(gw: FakeGateway, replicas: int) -> None:
    gw.create_network({"Name": edge_network_name(STACK), "Driver": "overlay"})
    gw.create_service({
        "Name": lb_service_name(STACK),
        "TaskTemplate": {"ContainerSpec": {"Image": "dans-lb:test"},
                         "Networks": [{"Target": edge_network_name(STACK)}]},
        "Mode": {"Replicated": {"Replicas": replicas}},
    })


class SwarmReplicas:
    """The fan-out over the fake swarm: addresses from the swarm's tasks (the real code),
    answers from one stand-in replica per address, up once its task has started enough."""

    where = "fake swarm"

    def __init__(self, gw: FakeGateway) -> None:
        self.gw = gw
        self.channel = AdminChannel(gw, STACK)
        self.replicas: dict[str, Replica] = {}
        self.started: dict[str, float] = {}

    def addresses(self) -> list[str]:
        return self.channel.addresses()

    def _refresh(self) -> None:
        now = self.gw.clock.monotonic()
        for task in self.gw.tasks(lb_service_name(STACK)):
            for att in task["NetworksAttachments"]:
                addr = att["Addresses"][0].split("/")[0]
                self.replicas.setdefault(addr, Replica(up=False))
                self.started.setdefault(addr, now)
                live = task["Status"]["State"] in ("starting", "running")
                self.replicas[addr].up = live and now - self.started[addr] >= OPENS_AFTER

    def request_each(self, method: str, path: str, body: bytes | None, targets: list[str],
                     timeout: float) -> dict[str, Answer]:
        self._refresh()
        return {a: self.replicas[a].answer(method, path, body) for a in targets}

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                timeout: float) -> tuple[int, bytes]:
        raise AssertionError("every call of the agreement goes to each replica")

    def close(self) -> None:
        pass


def client_of(gw: FakeGateway) -> tuple[ReplicatedAdmin, SwarmReplicas]:
    fan = SwarmReplicas(gw)
    return ReplicatedAdmin(fan, agree_timeout=20.0, clock=gw.clock.monotonic,
                           sleep=gw.clock.sleep), fan


def scale(gw: FakeGateway, replicas: int) -> None:
    current = gw.inspect_service(lb_service_name(STACK))
    spec = current["Spec"]
    spec["Mode"] = {"Replicated": {"Replicas": replicas}}
    gw.update_service(lb_service_name(STACK), spec, version=current["Version"]["Index"])


def states(gw: FakeGateway) -> list[str]:
    return sorted(t["Status"]["State"] for t in gw.tasks(lb_service_name(STACK),
                                                         desired_running=True))


def test_a_starting_replica_is_waited_for_and_gets_the_new_table() -> None:
    gw = FakeGateway()
    lb_stack(gw, 2)
    gw.clock.sleep(2.0)
    client, fan = client_of(gw)
    assert client.set_routes(RoutingTable.from_dict(SPEC)).version == 1
    scale(gw, 3)  # a third replica starts, on the spec's table, as the route step begins
    assert states(gw) == ["running", "running", "starting"]
    assert len(fan.addresses()) == 3
    served = client.set_routes(RoutingTable.from_dict(NEXT))
    assert served.version == 2
    assert {a: r.table.version for a, r in fan.replicas.items()} == dict.fromkeys(
        fan.addresses(), 2)
    assert gw.clock.monotonic() > 2.0  # it did wait for the starting one's admin API


def test_replicas_on_a_node_that_is_down_are_not_waited_for() -> None:
    gw = FakeGateway()
    lb_stack(gw, 2)
    gw.clock.sleep(2.0)
    before = AdminChannel(gw, STACK).addresses()
    gw.stop_node("node-1")  # both tasks were there: replaced on node-2, starting
    after = AdminChannel(gw, STACK).addresses()
    assert len(after) == 2 and not set(after) & set(before)
    client, fan = client_of(gw)
    assert client.set_routes(RoutingTable.from_dict(NEXT)).version == 1
    assert all(fan.replicas[a].table.version == 1 for a in after)
    assert all(not fan.replicas[a].puts for a in before if a in fan.replicas)


def test_which_tasks_serve() -> None:
    def task(state: str, node: str = "n1", desired: str = "running") -> dict[str, object]:
        return {"DesiredState": desired, "NodeID": node, "Status": {"State": state}}

    down = {"n2"}
    for state in ("assigned", "accepted", "preparing", "ready", "starting", "running"):
        assert serving(task(state), down), state
    assert not serving(task("pending", node=""), down)  # no node may take it (placement)
    assert not serving(task("new"), down)
    assert not serving(task("running", node="n2"), down)  # its node is down
    assert not serving(task("running", desired="shutdown"), down)
    assert not serving(task("failed"), down)
