#!/usr/bin/env bash
# Build the example's images offline: dans-vcauth/app:1 and :2, FROM the voting app's base.
#
#   examples/vc-auth/build.sh [--force] [--list]
#
# Idempotent like examples/voting-app/build.sh: an image is rebuilt only when its sources (or
# the base image) changed, recorded in the label dans.vcauth.source. The base image
# dans-voting/base:1 comes from examples/voting-app/build.sh, run when it is missing.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${DANS_VCAUTH_REPO:-dans-vcauth}
BASE=${DANS_VOTING_REPO:-dans-voting}/base:1
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --list) echo "$REPO/app:1"; echo "$REPO/app:2"; exit 0 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    "$HERE/../voting-app/build.sh" >&2
fi
BASE_ID=$(docker image inspect -f '{{.Id}}' "$BASE")
for version in 1 2; do
    tag="$REPO/app:$version"
    hash=$( { echo "$version $BASE_ID"; (cd "$HERE" && find Dockerfile vcauth -type f \
        ! -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum); } | sha256sum | cut -c1-16)
    have=$(docker image inspect -f '{{ index .Config.Labels "dans.vcauth.source" }}' "$tag" \
        2>/dev/null || true)
    if [ "$FORCE" = 0 ] && [ "$have" = "$hash" ]; then
        echo "build: $tag is up to date" >&2
        continue
    fi
    echo "build: building $tag" >&2
    docker build -q --label "dans.vcauth.source=$hash" -t "$tag" --build-arg "BASE=$BASE" \
        --build-arg "VERSION=$version" "$HERE" >/dev/null
done
