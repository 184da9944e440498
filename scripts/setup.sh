#!/usr/bin/env bash
# Idempotent set-up: .venv with the pinned dependencies (requirements.lock) and visionlab
# installed in editable mode. A second run finds the stamp matching and installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "visionlab needs Python >= 3.11; set PYTHON=/path/to/python3.11 or newer" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
# A C compiler builds visionlab's max-pool kernel on first use (visionlab/models/maxpool.py: the small
# CNNs train ~20% faster here); without one, PyTorch's pooling runs instead.
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null
  else
    echo "visionlab: no C compiler (cc): the small CNNs will train without the native max-pool kernel" >&2
  fi
fi
stamp=.venv/.visionlab-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "visionlab: installing the pinned environment into .venv (torch is large: a few minutes the first time)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.lock
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
# visionlab's own bytecode, written now: where PYTHONDONTWRITEBYTECODE is set, as on this project's
# machines, every command would otherwise compile each module it imports (pip does this for site-packages)
.venv/bin/python -m compileall -q visionlab >/dev/null
