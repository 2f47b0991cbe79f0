#!/usr/bin/env bash
# The test command: set-up (idempotent), then ruff, mypy and the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest -q "$@"
