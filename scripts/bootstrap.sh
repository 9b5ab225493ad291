#!/usr/bin/env bash
# Make sure the tools the Makefile needs exist on a fresh Debian machine: make, python3 with
# venv and pip. Sourced by scripts/test.sh and scripts/demo.sh; installs only what is missing.
set -euo pipefail
missing=()
command -v make >/dev/null 2>&1 || missing+=(make)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "bootstrap: need root to install ${missing[*]}" >&2; exit 1; }
    echo "bootstrap: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"bootstrap: dans needs Python 3.11 or newer, found {sys.version.split()[0]}")
PY
