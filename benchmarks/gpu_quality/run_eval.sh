#!/bin/bash
# On the GPU machine: one time-boxed eval_sharded run of a plan; the lines come back joined in $OUT.
# usage: run_eval.sh MODEL_DIR MODEL_NAME PLAN RESULTS_DIR BUDGET_S GB_PER_PROC
set -uo pipefail
export PYTHONPATH=$PWD LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
procs=$(( total / 1024 / $6 )); [ $procs -gt 13 ] && procs=13
echo "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1): $procs processes"
python benchmarks/eval_sharded.py --model "$1" --model-name "$2" --procs $procs --out "$4" --plan "$3" --budget-s "$5" 2>&1 | grep -v -i "warn" | tail -60
mkdir -p $OUT && cat "$4"/results-*.jsonl > "$OUT/$(basename $4).jsonl"
nvidia-smi --query-gpu=memory.used --format=csv
