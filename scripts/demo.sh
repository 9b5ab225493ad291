#!/usr/bin/env bash
# The demo command: everything a fresh Debian machine needs, then the voting-app upgrade.
#   bash scripts/demo.sh [--scenario add-api] [--strategy rolling] [--compare]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec make demo DEMO_ARGS="$*"
