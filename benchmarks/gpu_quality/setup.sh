#!/bin/bash
# On the GPU machine, once every piece is in /tmp/lr/pieces: join, verify, install the wheels, convert the models.
set -euo pipefail
SHA="$1"
REPO=$PWD; cd /tmp/lr
cat $(ls pieces/part-* | sort) > bundle.tar
echo "$SHA  bundle.tar" | sha256sum -c -
mkdir -p x && tar xf bundle.tar -C x && rm -rf bundle.tar pieces
python -m pip install -q --no-index --no-deps x/wh/*.whl  # the interpreter that runs the eval, not /usr/local/bin/pip
python "$REPO/benchmarks/gpu_quality/convert.py" x/q15.gguf /tmp/lr/q15
python "$REPO/benchmarks/gpu_quality/convert.py" x/q05.gguf /tmp/lr/q05
ls -la /tmp/lr/q15 /tmp/lr/q05
nvidia-smi --query-gpu=name,memory.total --format=csv
