#!/usr/bin/env bash
# The main job: set up (idempotent), then run visionlab on the embedded digits dataset, offline.
# Extra arguments go to the command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/visionlab data digits "$@"
