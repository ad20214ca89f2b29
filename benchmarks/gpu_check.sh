#!/usr/bin/env bash
# Issue 8's GPU checks as one prepared run on the lent GPU machine (the `device` tool copies the
# working tree there and brings $OUT back). Run it once, then give the machine back:
#
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# What it does, in order, each step bounded (180 s + 300 s) so the earlier results come back:
#   1. tests/test_attention.py: every attention path against the dense reference, outputs and
#      gradients; on CUDA also FlexAttention's compiled backward (the test CPUs skip);
#   2. python -m benchmarks.bench_gpu --save: bf16 training throughput of W-MSA small on every
#      path and ViT small, achieved TFLOP/s, written to benchmarks/gpu_results.json and copied to
#      $OUT only when this run wrote it (commit it: `make bench` then shows the rows as recorded
#      on that device).
# It exits non-zero when a step failed or a module is missing.
#
# The GPU machine has torch and torchvision but not ptwt or PyWavelets (check PyYAML and numpy:
# the script names what is missing), and reaches no network: carry the wheels in .whl/
# (git-ignored), fetched here for its Python 3.12:
#
#   pip download --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d .whl ptwt==1.0.1 PyWavelets==1.9.0 PyYAML
#
# Wheels are unpacked with Python's zipfile (no pip needed). On a machine without CUDA the
# script still runs: the CUDA test skips and bench_gpu prints the recorded rows (a dry run).
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/wno-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
started="$OUT/.started"
touch "$started"

need() {  # the modules the checks import that this Python lacks
    "$PY" -c "import importlib.util as u; print(' '.join(m for m in
        ('torch', 'torchvision', 'numpy', 'yaml', 'pywt', 'ptwt') if u.find_spec(m) is None))"
}
missing=$(need)
if [ -n "$missing" ] && compgen -G ".whl/*.whl" >/dev/null; then
    site=/tmp/wno-site
    for wheel in .whl/*.whl; do
        "$PY" -m zipfile -e "$wheel" "$site" || status=1
    done
    export PYTHONPATH="$site:$PYTHONPATH"
    missing=$(need)
fi
if [ -n "$missing" ]; then
    echo "missing on this machine: $missing (carry their wheels in .whl/, see the header)"
    exit 3
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
        || echo "no nvidia-smi"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
               'available', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/machine.txt"

echo "== 1. attention paths against the dense reference"
if "$PY" -c "import pytest" 2>/dev/null; then
    timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_attention.py 2>&1 \
        | tee "$OUT/test_attention.txt" || status=1
else
    echo "pytest is not installed here: step 1 skipped" | tee "$OUT/test_attention.txt"
    status=1
fi

echo "== 2. training throughput per attention path (bf16)"
timeout 300 "$PY" -m benchmarks.bench_gpu --size small --batch-size 256 --save 2>&1 \
    | tee "$OUT/bench_gpu.txt" || status=1
if [ benchmarks/gpu_results.json -nt "$started" ]; then
    cp benchmarks/gpu_results.json "$OUT/"
else
    echo "benchmarks/gpu_results.json was not written by this run (no CUDA, or step 2 failed)"
fi
rm -f "$started"
echo "== done (status $status): results in $OUT"
exit "$status"
