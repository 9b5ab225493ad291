#!/usr/bin/env bash
# Build every image of the voting app, offline: FROM debian:bookworm-slim, Debian packages only.
#
#   examples/voting-app/build.sh [--force] [--list]
#
# Idempotent: an image is built only when its tag is missing or its sources changed (each image
# carries a hash of what it was built from in the label dans.voting.source). --force rebuilds
# everything; --list prints the tags and exits. Images: dans-voting/base:1 (python3, aiohttp,
# asyncpg), dans-voting/db:1 (PostgreSQL 15), and FROM the base, one image per service and
# version: vote and worker 1, 2-change-api, 2-add-api, 2-candidates; result 1, 2-candidates;
# edge 1 (the test swarm's stand-in for the routing mesh).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${DANS_VOTING_REPO:-dans-voting}
VERSIONS="1 2-change-api 2-add-api 2-candidates"
FORCE=0
LIST=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --list) LIST=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

app_images() {
    local v
    for v in $VERSIONS; do echo "vote $v"; echo "worker $v"; done
    echo "result 1"; echo "result 2-candidates"; echo "edge 1"
}

if [ "$LIST" = 1 ]; then
    echo "$REPO/base:1"; echo "$REPO/db:1"
    app_images | while read -r s v; do echo "$REPO/$s:$v"; done
    exit 0
fi

START=$(date +%s)
say() { printf 'build: [%3ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }

tree_hash() {  # hash of the files under the given paths (names and contents), plus extra text
    local extra=$1; shift
    { echo "$extra"; (cd "$HERE" && find "$@" -type f ! -path '*/__pycache__/*' | LC_ALL=C sort \
        | xargs sha256sum); } | sha256sum | cut -c1-16
}

current_label() {
    docker image inspect -f '{{ index .Config.Labels "dans.voting.source" }}' "$1" 2>/dev/null || true
}

build() {  # build TAG HASH docker-build-args...
    local tag=$1 hash=$2; shift 2
    if [ "$FORCE" = 0 ] && [ "$(current_label "$tag")" = "$hash" ]; then
        say "$tag is up to date"
        return 0
    fi
    say "building $tag"
    local log
    log=$(mktemp)
    if ! docker build -q --label "dans.voting.source=$hash" -t "$tag" "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "build.sh: building $tag failed" >&2
        exit 1
    fi
    rm -f "$log"
}

build "$REPO/base:1" "$(tree_hash base images/base)" "$HERE/images/base"
build "$REPO/db:1" "$(tree_hash db images/db)" "$HERE/images/db"
BASE_ID=$(docker image inspect -f '{{.Id}}' "$REPO/base:1")
app_images | while read -r service version; do
    build "$REPO/$service:$version" \
        "$(tree_hash "$service $version $BASE_ID" images/app votingapp)" \
        -f "$HERE/images/app/Dockerfile" --build-arg "BASE=$REPO/base:1" \
        --build-arg "SERVICE=$service" --build-arg "VERSION=$version" "$HERE"
done
say "done"
