"""The 3-node cluster itself: the registry's image runs on every node, and tasks on different
nodes reach each other over an overlay network (vxlan between the engine containers)."""

from __future__ import annotations

import docker

from tests.multinode.conftest import Cluster
from tests.support import Names, wait_until
from upgrade_manager.gateway import Gateway

# The tiny image has no HTTP, but Debian's minbase has perl: a TCP server that answers with the
# name of the node its task runs on, and a client that asks every address of a DNS name.
SERVER = ('my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 16, ReuseAddr => 1) '
          'or die "listen: $!"; while (my $c = $s->accept) { print $c "$ENV{NODE}\\n"; close $c }')
CLIENT = ('my @h = gethostbyname($ARGV[0]) or die "resolve $ARGV[0]: $?"; splice @h, 0, 4; '
          'for (@h) { my $a = join ".", unpack "C4", $_; '
          'my $c = IO::Socket::INET->new(PeerAddr => $a, PeerPort => 8080, Timeout => 3) '
          'or die "connect $a: $!"; my $l = <$c>; print "$a $l" }')


def test_replicas_spread_over_three_nodes_and_answer_over_the_overlay(
        cluster: Cluster, mn_gateway: Gateway, mn_names: Names) -> None:
    net = mn_names("net")
    mn_gateway.create_network({"Name": net, "Driver": "overlay"})
    name = mn_names("echo")
    mn_gateway.create_service({
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": cluster.tiny_image,  # from the registry: no node has it yet
                "Command": ["perl", "-MIO::Socket::INET", "-e", SERVER],
                "Env": ["NODE={{.Node.Hostname}}"],
                "StopGracePeriod": 1_000_000_000,
            },
            "Networks": [{"Target": net}],
            "Placement": {"MaxReplicas": 1},  # one per node: all three must take one
        },
        "Mode": {"Replicated": {"Replicas": 3}},
        "EndpointSpec": {"Mode": "dnsrr"},
    })
    mn_gateway.wait_converged(name, timeout=180)
    tasks = mn_gateway.tasks(name, desired_running=True)
    assert len({t["NodeID"] for t in tasks}) == 3, [t["NodeID"] for t in tasks]

    # From the task on the manager, ask every task (two are on the workers) by tasks.NAME.
    manager = docker.APIClient(base_url=cluster.docker_host, timeout=30)
    try:
        local = manager.containers(filters={"label": f"com.docker.swarm.service.name={name}"})
        assert len(local) == 1, local

        def answers() -> dict[str, str] | None:
            run = manager.exec_create(local[0]["Id"], ["perl", "-MIO::Socket::INET", "-e",
                                                       CLIENT, f"tasks.{name}"])
            out = manager.exec_start(run["Id"]).decode()
            if manager.exec_inspect(run["Id"])["ExitCode"] != 0:
                raise AssertionError(out)
            found = dict(line.split() for line in out.splitlines() if line.strip())
            return found if len(found) == 3 else None

        found = wait_until(answers, timeout=60, what="all three tasks answering over the overlay")
    finally:
        manager.close()
    assert sorted(found.values()) == ["dans-mn-1", "dans-mn-2", "dans-mn-3"], found
