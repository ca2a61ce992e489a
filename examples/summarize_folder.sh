#!/usr/bin/env bash
# Summarize every supported document below a folder with the CLI, mirroring the tree under an output folder.
# Usage: examples/summarize_folder.sh [FOLDER] [OUT] [MODEL]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
folder=${1:-$here}
out=${2:-summaries}
model=${3:-local}
# --dry-run first: segments, calls, tokens and the estimated cost, without calling the model.
"$here/../.venv/bin/longread" summarize "$folder" --out "$out" --model "$model" --window 2048 --dry-run
"$here/../.venv/bin/longread" summarize "$folder" --out "$out" --model "$model" --window 2048
find "$out" -name '*.summary.md' -print
