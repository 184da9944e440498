#!/usr/bin/env bash
# The main job: set up (idempotent), then run the default study on the embedded digits dataset,
# offline, and print where the report is. Extra arguments go to `visionlab run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/visionlab run "$@"
