#!/usr/bin/env bash
# The test command: venv + package, Docker engine + swarm + base image, images, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec make test PYTEST_ARGS="${PYTEST_ARGS:-}"
