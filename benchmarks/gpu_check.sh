#!/usr/bin/env bash
# Issue 8's GPU checks as one prepared run on the lent GPU machine (the `device` tool copies the
# working tree there and brings $OUT back). Run it once, then give the machine back:
#
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#
# What it does, in order, each step bounded so that the results of the earlier ones come back:
#   1. tests/test_attention.py on CUDA: every attention path (FlexAttention included, gradients
#      too) against the dense reference;
#   2. python -m benchmarks.bench_gpu --save: bf16 training throughput of W-MSA small on every
#      path and ViT small, achieved TFLOP/s, written to benchmarks/gpu_results.json (copied to
#      $OUT; commit it and `make bench` shows the rows as recorded on that device).
#
# The GPU machine has torch but not ptwt or PyWavelets, and reaches no network: carry their wheels
# in .whl/ (git-ignored), fetched here for its Python 3.12:
#
#   pip download --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d .whl ptwt==1.0.1 PyWavelets==1.9.0
#
# On a machine without CUDA it still runs: the CUDA tests skip and bench_gpu prints the recorded
# rows (a dry run of this script).
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/wno-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import ptwt, pywt" 2>/dev/null; then
    site=/tmp/wno-site
    "$PY" -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl \
        || { echo "ptwt/PyWavelets missing and .whl/ holds no wheels for $("$PY" -V)"; exit 3; }
    export PYTHONPATH="$site:$PYTHONPATH"
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
        || echo "no nvidia-smi"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
               'available', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/machine.txt"

echo "== 1. attention paths against the dense reference"
if "$PY" -c "import pytest" 2>/dev/null; then
    timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_attention.py 2>&1 \
        | tee "$OUT/test_attention.txt"
else
    echo "pytest is not installed here: step 1 skipped" | tee "$OUT/test_attention.txt"
fi

echo "== 2. training throughput per attention path (bf16)"
timeout 300 "$PY" -m benchmarks.bench_gpu --size small --batch-size 256 --save 2>&1 \
    | tee "$OUT/bench_gpu.txt"
cp benchmarks/gpu_results.json "$OUT/" 2>/dev/null || true
echo "== done: results in $OUT"
