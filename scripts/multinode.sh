#!/usr/bin/env bash
# A 3-node Docker Swarm on this one machine, for the multi-node tests (issue 20).
#
#   bash scripts/multinode.sh up [--examples]   create or repair the cluster, push the images
#   bash scripts/multinode.sh down [--images]   remove everything `up` made (--images: its images too)
#   bash scripts/multinode.sh status            print the lines below if the cluster is up, else exit 1
#
# `up` is idempotent like scripts/harness.sh: every step checks first, so on a running cluster it
# only checks and prints the lines again. Its last lines on stdout (progress goes to stderr):
#   LB_IMAGE=REGISTRY/dans-lb:TAG      TINY_IMAGE=REGISTRY/dans-test/tiny:1
#   BASE_IMAGE=REGISTRY/debian:bookworm-slim
#   DOCKER_HOST=unix:///run/dans-mn/dans-mn-1/docker.sock    (the manager)
#   REGISTRY=127.0.0.1:PORT
#   NODES=addr,addr,addr               (host-mode published ports answer there, from the host)
#
# What it builds, all on the host engine (shared with other runs, so every object it makes is
# named dans-mn*; it never changes the host engine's configuration):
# - a bridge network dans-mn-net with its own subnet and static addresses, so that a node that
#   restarts keeps the address the swarm knows it by;
# - three engines in containers dans-mn-1..3 (Debian's docker.io, TEST-SWARM.md's recipe:
#   --privileged is refused here), each with /var/lib/docker on a volume dans-mn-N-data and its
#   socket bind-mounted to /run/dans-mn/dans-mn-N/docker.sock on the host (a socket, not a
#   plaintext TCP API);
# - ONE manager (dans-mn-1) and TWO workers. Workers are what multi-node bugs are about: an
#   image built only on the manager, an LB task on another node than the admin client, a worker
#   that has no registry credentials; a worker's engine can be stopped in a fault test without
#   touching quorum. Three managers would triple the Raft work on a 2-core machine and test
#   nothing dans does differently (dans talks to one manager);
# - a registry dans-mn-registry (Debian's docker-registry) on dans-mn-net, published on the
#   host's 127.0.0.1:PORT only. The host engine treats 127.0.0.0/8 as insecure by default, so it
#   can push without any change to its daemon.json; on each node a socat forwarder makes
#   127.0.0.1:PORT reach the same registry (also listed as insecure in the node's daemon.json),
#   so one image name, REGISTRY/NAME:TAG, works on the host and on every node.
#
# Environment:
#   DANS_MN_REGISTRY_PORT  host port of the registry on 127.0.0.1 (default 5455)
#   DANS_MN_SUBNET         the node network's subnet (default: the first free of 192.168.213-220.0/24)
#   DANS_PYTHON            python with dans installed (default .venv/bin/python, else python3)
#   DANS_MN_HOST_ENGINE    the host engine that runs it all (default unix:///var/run/docker.sock;
#                          DOCKER_HOST is ignored: it often names the cluster's manager)
set -euo pipefail
export DOCKER_HOST=${DANS_MN_HOST_ENGINE:-unix:///var/run/docker.sock}
unset DOCKER_CONTEXT

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
P=dans-mn
NET=$P-net
NODES=("$P-1" "$P-2" "$P-3")
MANAGER=${NODES[0]}
REGISTRY_CTR=$P-registry
NODE_IMAGE=$P/node:1
REGISTRY_IMAGE=$P/registry:1
SOCKDIR=/run/$P
PORT=${DANS_MN_REGISTRY_PORT:-5455}
REGISTRY=127.0.0.1:$PORT
TINY=dans-test/tiny:1
BASE=debian:bookworm-slim
LOCK=/run/$P.lock
START=$(date +%s.%N)

say() { printf 'multinode: [%5s] %s\n' "$(elapsed)" "$*" >&2; }
die() { printf 'multinode: error: %s\n' "$*" >&2; exit 1; }
elapsed() { awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1fs", e - s }'; }
nd() { local node=$1; shift; docker -H "unix://$SOCKDIR/$node/docker.sock" "$@"; }
exists() { docker "$1" inspect "$2" >/dev/null 2>&1; }
running() { [ "$(docker container inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }

python_bin() {
    if [ -n "${DANS_PYTHON:-}" ]; then echo "$DANS_PYTHON"
    elif [ -x "$REPO/.venv/bin/python" ]; then echo "$REPO/.venv/bin/python"
    else echo python3; fi
}

# --- images built on the host ------------------------------------------------------------------

tree_hash() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16; }

build_image() {  # TAG DIR: build when the tag is missing or DIR changed since it was built
    local tag=$1 dir=$2 hash have
    hash=$(tree_hash "$dir")
    have=$(docker image inspect -f '{{ index .Config.Labels "dans-mn.source" }}' "$tag" 2>/dev/null || true)
    [ "$have" = "$hash" ] && return 0
    say "building $tag"
    docker build -q --label "dans-mn.source=$hash" -t "$tag" "$dir" >/dev/null 2>"/tmp/$P-build.log" \
        || { cat "/tmp/$P-build.log" >&2; die "building $tag failed"; }
}

# --- the node network ------------------------------------------------------------------------

pick_subnet() {  # the first candidate that overlaps no Docker network and no host route
    local used
    used=$( { docker network inspect $(docker network ls -q) \
                  -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null
              ip -4 route show 2>/dev/null | awk '{print $1}'; } | tr ' ' '\n' | grep -E '^[0-9]' || true)
    USED="$used" python3 - "${DANS_MN_SUBNET:-}" <<'PY'
import ipaddress, os, sys
used = [ipaddress.ip_network(u, strict=False) for u in os.environ["USED"].split()
        if u != "default"]
wanted = [sys.argv[1]] if sys.argv[1] else [f"192.168.{i}.0/24" for i in range(213, 221)]
for cand in wanted:
    net = ipaddress.ip_network(cand)
    if not any(net.overlaps(u) for u in used):
        print(net)
        break
else:
    sys.exit("no free subnet among " + ", ".join(wanted))
PY
}

ensure_network() {
    exists network "$NET" && return 0
    local subnet
    subnet=$(pick_subnet) || die "cannot choose a subnet for $NET (set DANS_MN_SUBNET)"
    say "creating network $NET ($subnet)"
    docker network create --driver bridge --subnet "$subnet" --label dans-mn=1 "$NET" >/dev/null
}

addr_of() {  # INDEX: .2 is the registry, .11.. the nodes
    local subnet
    subnet=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$NET")
    echo "${subnet%.*/*}.$1"
}

# --- the registry ----------------------------------------------------------------------------

registry_up() { curl -fs -o /dev/null --max-time 2 "http://$REGISTRY/v2/" 2>/dev/null; }

ensure_registry() {
    if ! exists container "$REGISTRY_CTR"; then
        say "starting registry $REGISTRY_CTR on $REGISTRY"
        docker run -d --name "$REGISTRY_CTR" --hostname "$REGISTRY_CTR" --label dans-mn=1 \
            --restart unless-stopped --network "$NET" --ip "$(addr_of 2)" \
            -p "127.0.0.1:$PORT:5000" -v "$REGISTRY_CTR-data:/var/lib/docker-registry" \
            "$REGISTRY_IMAGE" >/dev/null
    elif ! running "$REGISTRY_CTR"; then
        say "starting registry $REGISTRY_CTR"
        docker start "$REGISTRY_CTR" >/dev/null
    fi
    local i
    for i in $(seq 1 40); do registry_up && return 0; sleep 0.25; done
    docker logs --tail 3 "$REGISTRY_CTR" >&2 || true
    die "the registry did not answer on $REGISTRY within 10 s"
}

remote_config_digest() {  # IMAGE -> the config digest (= image id) the registry holds, or nothing
    python3 - "$REGISTRY" "$1" <<'PY' 2>/dev/null || true
import json, sys, urllib.request
registry, image = sys.argv[1:]
name, _, tag = image.rpartition(":")
req = urllib.request.Request(f"http://{registry}/v2/{name}/manifests/{tag}", headers={
    "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
with urllib.request.urlopen(req, timeout=5) as resp:
    print(json.load(resp)["config"]["digest"])
PY
}

push() {  # IMAGE: push to the registry unless it holds this very image already
    local image=$1 id
    id=$(docker image inspect -f '{{.Id}}' "$image") || die "no image $image on the host"
    [ "$(remote_config_digest "$image")" = "$id" ] && return 0
    say "pushing $image to $REGISTRY"
    docker tag "$image" "$REGISTRY/$image"
    docker push -q "$REGISTRY/$image" >/dev/null 2>"/tmp/$P-push.log" \
        || { cat "/tmp/$P-push.log" >&2; docker rmi "$REGISTRY/$image" >/dev/null; die "pushing $image failed"; }
    docker rmi "$REGISTRY/$image" >/dev/null  # only the tag: the host keeps no registry names
}

# --- the nodes -------------------------------------------------------------------------------

engine_up() { nd "$1" info >/dev/null 2>&1; }

ensure_node() {  # INDEX (0-based)
    local i=$1 node=${NODES[$1]}
    if ! exists container "$node"; then
        say "starting engine $node"
        mkdir -p "$SOCKDIR/$node"
        docker run -d --name "$node" --hostname "$node" --label dans-mn=1 --init \
            --restart unless-stopped --network "$NET" --ip "$(addr_of $((11 + i)))" \
            --cap-add=ALL --cap-drop=SYS_RESOURCE \
            --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
            -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v "$node-data:/var/lib/docker" \
            -v "$SOCKDIR/$node:/run/dans-mn-host" \
            -e "DANS_MN_REGISTRY_PORT=$PORT" -e "DANS_MN_REGISTRY_ADDR=$(addr_of 2):5000" \
            "$NODE_IMAGE" >/dev/null
    elif ! running "$node"; then
        say "starting engine $node"
        docker start "$node" >/dev/null
    fi
}

wait_engine() {
    local node=$1 i
    for i in $(seq 1 120); do engine_up "$node" && return 0; sleep 0.5; done
    docker logs --tail 20 "$node" >&2 || true
    die "engine $node did not answer within 60 s"
}

swarm_state() { nd "$1" info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null || true; }
node_id() { nd "$1" info -f '{{.Swarm.NodeID}}' 2>/dev/null || true; }

ensure_swarm() {
    local manager_addr state node i ids token
    manager_addr=$(addr_of 11)
    state=$(swarm_state "$MANAGER")
    if [ "$state" = inactive ]; then
        say "initialising the swarm on $MANAGER ($manager_addr)"
        nd "$MANAGER" swarm init --advertise-addr "$manager_addr" --listen-addr "$manager_addr:2377" \
            >/dev/null
    fi
    for i in $(seq 1 60); do
        [ "$(nd "$MANAGER" info -f '{{.Swarm.ControlAvailable}}' 2>/dev/null)" = true ] && break
        [ "$i" = 60 ] && die "$MANAGER did not become an active manager within 30 s"
        sleep 0.5
    done
    ids=$(nd "$MANAGER" node ls -q)
    token=""
    for i in 1 2; do
        node=${NODES[$i]}
        state=$(swarm_state "$node")
        if [ "$state" = active ] && grep -qx "$(node_id "$node")" <<<"$ids"; then
            continue
        fi
        if [ "$state" != inactive ]; then  # in some other (lost) swarm: start over
            nd "$node" swarm leave --force >/dev/null 2>&1 || true
        fi
        [ -n "$token" ] || token=$(nd "$MANAGER" swarm join-token -q worker)
        say "joining $node as a worker"
        nd "$node" swarm join --token "$token" --advertise-addr "$(addr_of $((11 + i)))" \
            "$manager_addr:2377" >/dev/null
    done
    # A node that was recreated joined under a new id; its old entry stays Down: drop it.
    local current=""
    for node in "${NODES[@]}"; do current+="$(node_id "$node") "; done
    for i in $(nd "$MANAGER" node ls -q); do
        case " $current " in *" $i "*) ;; *) nd "$MANAGER" node rm --force "$i" >/dev/null ;; esac
    done
    for i in $(seq 1 120); do
        [ "$(nd "$MANAGER" node ls --format '{{.Status}} {{.Availability}}' | grep -c '^Ready Active$')" = 3 ] \
            && return 0
        sleep 0.5
    done
    nd "$MANAGER" node ls >&2
    die "the three nodes were not Ready within 60 s"
}

preload_base() {  # every node gets $BASE under its own name, so builds on a node work offline
    local node want=$1 pids=()
    for node in "${NODES[@]}"; do
        [ "$(nd "$node" image inspect -f '{{.Id}}' "$BASE" 2>/dev/null)" = "$want" ] && continue
        say "loading $BASE on $node from the registry"
        { nd "$node" pull -q "$REGISTRY/$BASE" >/dev/null && nd "$node" tag "$REGISTRY/$BASE" "$BASE"; } &
        pids+=($!)
    done
    for node in "${pids[@]}"; do wait "$node" || die "loading $BASE on the nodes failed"; done
}

# --- the commands ----------------------------------------------------------------------------

lb_tag() { (cd "$REPO" && "$(python_bin)" -c 'from upgrade_manager.lb_image import source_tag; print(source_tag())'); }

print_lines() {
    local lb=$1 addrs
    addrs="$(addr_of 11),$(addr_of 12),$(addr_of 13)"
    printf 'LB_IMAGE=%s/%s\nTINY_IMAGE=%s/%s\nBASE_IMAGE=%s/%s\n' \
        "$REGISTRY" "$lb" "$REGISTRY" "$TINY" "$REGISTRY" "$BASE"
    printf 'DOCKER_HOST=unix://%s/%s/docker.sock\nREGISTRY=%s\nNODES=%s\n' \
        "$SOCKDIR" "$MANAGER" "$REGISTRY" "$addrs"
}

cmd_up() {
    local examples=0 arg lb i
    for arg in "$@"; do
        case "$arg" in --examples) examples=1 ;; *) die "up: unknown argument $arg" ;; esac
    done
    [ "$(id -u)" = 0 ] || die "needs root (it runs engines in containers)"
    if [ -z "${DANS_MN_HOST_ENGINE:-}" ]; then
        bash "$REPO/scripts/harness.sh"  # this machine's engine and the offline base image
    fi
    build_image "$NODE_IMAGE" "$HERE/multinode/node"
    build_image "$REGISTRY_IMAGE" "$HERE/multinode/registry"
    ensure_network
    ensure_registry
    for i in 0 1 2; do ensure_node "$i"; done
    for i in 0 1 2; do wait_engine "${NODES[$i]}"; done
    ensure_swarm

    # The images the tests need, built on the host as the single-node suite builds them.
    if ! docker image inspect "$TINY" >/dev/null 2>&1; then
        say "building $TINY"
        docker build -q --build-arg VERSION=1 -t "$TINY" "$REPO/tests/fixtures/tiny-image" >/dev/null
    fi
    lb=$(lb_tag) || die "cannot compute the LB image tag with $(python_bin) (run make venv)"
    if ! docker image inspect "$lb" >/dev/null 2>&1; then
        say "building $lb"
        (cd "$REPO" && "$(python_bin)" -m upgrade_manager.cli lb build-image --tag "$lb") \
            >"/tmp/$P-build.log" 2>&1 || { tail -n 30 "/tmp/$P-build.log" >&2; die "building $lb failed"; }
    fi
    local images=("$BASE" "$TINY" "$lb")
    if [ "$examples" = 1 ]; then
        bash "$REPO/examples/voting-app/build.sh" >&2
        mapfile -t -O 3 images < <(bash "$REPO/examples/voting-app/build.sh" --list)
    fi
    for i in "${images[@]}"; do push "$i"; done
    preload_base "$(docker image inspect -f '{{.Id}}' "$BASE")"
    say "cluster ready"
    print_lines "$lb"
}

cmd_status() {
    running "$MANAGER" && registry_up && [ "$(nd "$MANAGER" node ls --format '{{.Status}}' 2>/dev/null \
        | grep -c '^Ready$')" = 3 ] || { echo "multinode: not up" >&2; exit 1; }
    print_lines "$(lb_tag)"
}

cmd_down() {
    local images=0 arg c
    for arg in "$@"; do
        case "$arg" in --images) images=1 ;; *) die "down: unknown argument $arg" ;; esac
    done
    for c in "${NODES[@]}" "$REGISTRY_CTR"; do
        exists container "$c" && { say "removing $c"; docker rm -f "$c" >/dev/null; }
        exists volume "$c-data" && docker volume rm "$c-data" >/dev/null
        rm -rf "${SOCKDIR:?}/$c"
    done
    exists network "$NET" && { say "removing network $NET"; docker network rm "$NET" >/dev/null; }
    rmdir "$SOCKDIR" 2>/dev/null || true
    if [ "$images" = 1 ]; then
        for c in "$NODE_IMAGE" "$REGISTRY_IMAGE"; do
            exists image "$c" && docker rmi "$c" >/dev/null
        done
    fi
    say "down"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
        up|down)
            # Two runs at once (two test sessions) would race on the same containers.
            exec 9>"$LOCK"
            flock -w 600 9 || die "another multinode.sh holds $LOCK"
            "cmd_$cmd" "$@" ;;
        status) cmd_status ;;
        -h|--help|"") sed -n '2,9p' "$0" ;;
        *) die "unknown command $cmd (up, down, status)" ;;
    esac
}

main "$@"
