#!/usr/bin/env bash
# Bring this Debian machine to a working single-node Docker Swarm with the offline base image.
#
# Idempotent: every step first checks whether it is needed. When the engine is up, the node is
# a swarm manager and the base image exists, it changes nothing and returns quickly. On a machine
# that already runs Docker in swarm mode (a real cluster) it only checks.
#
# Environment:
#   DANS_BASE_IMAGE   base image to provide (default debian:bookworm-slim)
#   DANS_DOCKERD_LOG  dockerd log file (default /var/log/dans-dockerd.log)
set -euo pipefail

BASE_IMAGE=${DANS_BASE_IMAGE:-debian:bookworm-slim}
DOCKERD_LOG=${DANS_DOCKERD_LOG:-/var/log/dans-dockerd.log}
START=$(date +%s.%N)

say() { printf 'harness: %s\n' "$*" >&2; }
die() { printf 'harness: error: %s\n' "$*" >&2; exit 1; }
elapsed() { awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1fs", e - s }'; }

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 needs root; run as root or set up Docker in swarm mode yourself"
}

engine_up() { docker info >/dev/null 2>&1; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return 0
    need_root "installing ${missing[*]}"
    say "installing ${missing[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
}

start_dockerd() {
    need_root "starting dockerd"
    # A previous session's dockerd was killed: its pid file and sockets are stale.
    local pidfile=/var/run/docker.pid
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        rm -f "$pidfile"
    fi
    if [ -f /var/run/docker/containerd/containerd.pid ] \
        && ! kill -0 "$(cat /var/run/docker/containerd/containerd.pid)" 2>/dev/null; then
        rm -f /var/run/docker/containerd/containerd.pid
    fi
    if ! pgrep -x dockerd >/dev/null; then
        say "starting dockerd (log: $DOCKERD_LOG)"
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        # The daemon outlives this script: it must not inherit the caller's open
        # files (a `flock` around the harness would stay held by dockerd forever).
        (
            for fd in /proc/self/fd/*; do
                fd=${fd##*/}
                [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
            done
            exec nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null
        ) &
        disown || true
    fi
    local i
    for i in $(seq 1 120); do
        engine_up && return 0
        if ! pgrep -x dockerd >/dev/null; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited during start-up; last lines of $DOCKERD_LOG above"
        fi
        sleep 0.5
    done
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    die "dockerd did not answer within 60 s; last lines of $DOCKERD_LOG above"
}

swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }
is_manager() { [ "$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" = true ]; }

ensure_swarm() {
    local state i
    state=$(swarm_state)
    case "$state" in
        active)
            is_manager || die "this node is a swarm worker; run dans on a manager"
            return 0 ;;
        pending)
            ;;
        inactive|"")
            say "initialising a single-node swarm"
            docker swarm init --advertise-addr 127.0.0.1 >/dev/null ;;
        *)
            die "swarm state is '$state'; fix it with 'docker swarm leave --force' and run again" ;;
    esac
    # After a restart the manager needs a moment to become active again.
    for i in $(seq 1 60); do
        [ "$(swarm_state)" = active ] && is_manager && return 0
        sleep 0.5
    done
    die "swarm did not become active within 30 s (state: $(swarm_state))"
}

ensure_base_image() {
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
    if timeout 20 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
        say "pulled $BASE_IMAGE"
        return 0
    fi
    need_root "building $BASE_IMAGE with debootstrap"
    local suite=${BASE_IMAGE#debian:}
    suite=${suite%-slim}
    local rootfs
    rootfs=$(mktemp -d /tmp/dans-rootfs.XXXXXX)
    say "no registry: building $BASE_IMAGE with debootstrap (about a minute)"
    if ! debootstrap --variant=minbase "$suite" "$rootfs" >"$rootfs.log" 2>&1; then
        tail -n 20 "$rootfs.log" >&2
        rm -rf "$rootfs"
        die "debootstrap failed; see $rootfs.log"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
}

main() {
    if engine_up && [ "$(swarm_state)" = active ] && is_manager; then
        # Already a working manager, possibly a real cluster: only check.
        ensure_base_image
        say "engine and swarm ready ($(elapsed))"
        return 0
    fi
    install_packages
    engine_up || start_dockerd
    ensure_swarm
    ensure_base_image
    say "engine and swarm ready ($(elapsed))"
}

main "$@"
