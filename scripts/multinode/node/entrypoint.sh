#!/bin/sh
# Start a test-cluster engine: registry forwarder, daemon.json, then dockerd (pid 1 under --init).
#
# Environment (set by scripts/multinode.sh):
#   DANS_MN_REGISTRY_PORT  the port that means "the registry" on 127.0.0.1, host and nodes alike
#   DANS_MN_REGISTRY_ADDR  where the registry really listens (address:port on the node network)
set -eu
port=${DANS_MN_REGISTRY_PORT:?}
addr=${DANS_MN_REGISTRY_ADDR:?}
# A restarted container keeps its writable layer: the last run's pid files are stale.
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
mkdir -p /etc/docker /run/dans-mn-host
cat >/etc/docker/daemon.json <<JSON
{
  "insecure-registries": ["127.0.0.1:$port", "$addr"],
  "storage-driver": "overlay2",
  "log-driver": "json-file",
  "log-opts": {"max-size": "2m", "max-file": "2"},
  "log-level": "warn",
  "hosts": ["unix:///var/run/docker.sock", "unix:///run/dans-mn-host/docker.sock"]
}
JSON
socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "TCP:$addr" &
exec dockerd
