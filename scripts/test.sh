#!/usr/bin/env bash
# The test suite: set up (idempotent), then run every test, offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report's browser test drives Debian's Chromium (never a browser download of its own).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "visionlab: the browser test needs Chromium: sudo apt-get install chromium" >&2
  fi
fi
exec .venv/bin/python -m pytest -q "$@"
