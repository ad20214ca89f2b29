#!/usr/bin/env bash
# The GPU check as one command on an offline CUDA node that keeps its own torch. Copy the checkout
# there with the two folders below, and run from its root with OUT set to a folder for the results:
#
#   OUT=results bash benchmarks/gpu_check.sh
#
# Prepare the two folders first (both git-ignored; about 25 + 32 MB, so that the checkout with
# them stays under 64 MiB; docs/offline.md explains both):
#
#   wno bundle build --out dist/wno-bundle                               # CPython 3.12 wheels
#   wno data pack --data-dir ../shared/data --out data/cifar10-sheets    # CIFAR-10 as sheets
#
# Steps, each bounded so that what came before still comes back (GPU defaults; about 9 minutes):
#   0. install the bundle into $SITE with its install.py (it checks the wheels, the node's torch
#      and, on a GPU run, CUDA device $GPU), unless this python already imports everything;
#   1. tests/test_attention.py on CUDA (FlexAttention's compiled backward included)    <= 150 s;
#   2. python -m benchmarks.bench_gpu --save: every attention path, kernel on vs off   <= 170 s;
#   3. the study: benchmarks.gpu_study measures each arm's images/s and writes a study (W-MSA
#      kernel on/off vs the ViT twin, 2 seeds, full CIFAR-10) with the epochs that fit in the
#      time left ($TOTAL_SECONDS, default 540, less what steps 0-2 took and 60 s for step 4);
#      $WORKERS concurrent `wno worker --gpu $GPU` train it (SQLite storage, local MLflow store)
#      and get SIGTERM at the deadline (a running trial is handed back);
#   4. `wno study status`, then the stores (no checkpoints) and logs into $OUT, 7 files:
#      gpu_check.log workers.log plan.json status.json optuna.db mlflow.db gpu_results.json
#      (build the report from the two stores on any machine: wno report --storage ...).
#
# Without CUDA (or with DRY_RUN=1) the same steps run as a dry run in about 1.5 minutes: the CUDA-only
# attention tests, bench_gpu's recorded rows, a synthetic study of micro models, one epoch.
# tests/test_deploy.py runs that dry run; tests/test_offline.py runs it through the installer.
#
# Settings (environment): PYTHON (python3), OUT, GPU (0), WORKERS, TOTAL_SECONDS, DRY_RUN,
# WNO_BUNDLE (dist/wno-bundle), SITE (where the bundle goes), DATA_DIR (data), WORK (scratch).
# Exit status: 0 every step passed; 1 a step failed (the others still ran); 2 or 3 the install
# refused (its message says why) or the data is missing.
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/wno-gpu-check}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/wno-gpu-check.XXXXXX")}
BUNDLE=${WNO_BUNDLE:-dist/wno-bundle}
SITE=${SITE:-$WORK/site}
DATA_DIR=${DATA_DIR:-data}
GPU=${GPU:-0}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/gpu_check.log"
: >"$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
started="$WORK/.started"
touch "$started"

say() { echo "$*" | tee -a "$LOG"; }
step() { say "== $*"; }
logged() { "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }

if [ "${DRY_RUN:-}" = 1 ] || ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    dry=1
    device=cpu
    WORKERS=${WORKERS:-2}
    TOTAL_SECONDS=${TOTAL_SECONDS:-150}
else
    dry=0
    device=$GPU
    WORKERS=${WORKERS:-6}
    TOTAL_SECONDS=${TOTAL_SECONDS:-540}
fi
# Every store and cache of the run lives in $WORK: nothing is written into the checkout but
# benchmarks/gpu_results.json (by a GPU run of step 2).
# WNO_OFFLINE: a missing data set is said at once, not after a download that cannot succeed.
export WNO_HOME="$WORK/home" WNO_DATA_DIR="$DATA_DIR" WNO_CACHE_DIR="$WORK/cache" \
    WNO_MLFLOW_CHECKPOINTS=none WNO_OFFLINE=1
unset WNO_STORAGE MLFLOW_TRACKING_URI WNO_CHECKPOINT_DIR

step "0. machine and install (dry run: $dry)"
logged nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
    || say "no nvidia-smi"
needs="import wno.cli, wno.platform.worker, wno.platform.tracking, ptwt, optuna, mlflow"
if "$PY" -c "$needs" 2>/dev/null; then
    say "this python imports everything the run needs: nothing to install"
elif [ -f "$BUNDLE/manifest.json" ]; then
    gpu_flag=()
    [ "$dry" = 0 ] && gpu_flag=(--gpu "$GPU")
    logged "$PY" "$BUNDLE/install.py" --target "$SITE" "${gpu_flag[@]}"
    code=$?
    if [ "$code" != 0 ]; then
        say "the bundle was refused (exit $code): nothing installed, nothing run"
        exit "$code"
    fi
    export PYTHONPATH="$SITE:$PYTHONPATH"
else
    say "this python lacks wno's dependencies and there is no bundle at $BUNDLE:"
    say "  build one where the registry is reachable: wno bundle build --out $BUNDLE"
    exit 3
fi
logged "$PY" -c "import torch, wno; print('torch', torch.__version__, 'cuda', torch.version.cuda,
    'available', torch.cuda.is_available()); print('wno from', wno.__file__)"
if [ "$dry" = 0 ] && ! "$PY" -c "from wno.training.data import load_cifar10 as l; l('$DATA_DIR')" \
        >>"$LOG" 2>&1; then
    say "CIFAR-10 is not readable in $DATA_DIR (see the log): carry data/cifar10-sheets"
    exit 3
fi

step "1. attention paths against the dense reference"
if ! "$PY" -c "import pytest" 2>/dev/null; then
    say "pytest is not installed here: step 1 skipped"
    status=1
elif [ "$dry" = 1 ]; then  # the CUDA tests only (they skip here): the plumbing, in seconds
    logged timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_attention.py -k cuda \
        || status=1
else
    logged timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_attention.py || status=1
fi

step "2. training throughput per attention path (bf16)"
logged timeout 170 "$PY" -m benchmarks.bench_gpu --size small --batch-size 256 --save || status=1
if [ benchmarks/gpu_results.json -nt "$started" ]; then
    cp benchmarks/gpu_results.json "$OUT/"
else
    say "benchmarks/gpu_results.json was not written by this run (no CUDA, or step 2 failed)"
fi

STUDY_SECONDS=$((TOTAL_SECONDS - SECONDS - 60))  # what is left, less step 4 and the stop
[ "$STUDY_SECONDS" -lt 60 ] && STUDY_SECONDS=60
deadline=$((SECONDS + STUDY_SECONDS))  # the workers stop here, however long the plan takes
step "3. the study: $WORKERS workers, ${STUDY_SECONDS}s including the plan"
name=gpu-cifar10
plan_seconds=90  # measuring the three arms, compilation included
if [ "$dry" = 1 ]; then
    name=gpu-dry
    plan_seconds=30
fi
plan_flags=(--budget "$((STUDY_SECONDS - plan_seconds))")
[ "$dry" = 1 ] && plan_flags+=(--dry-run)
if timeout "$plan_seconds" "$PY" -m benchmarks.gpu_study --out "$WORK/study.yaml" --name "$name" \
        "${plan_flags[@]}" >"$OUT/plan.json" 2>>"$LOG" \
    && logged cat "$OUT/plan.json" && logged "$PY" -m wno study create "$WORK/study.yaml"; then
    pids=()
    for i in $(seq 1 "$WORKERS"); do
        "$PY" -m wno worker --gpu "$device" --study "$name" --exit-when-empty \
            >"$WORK/worker-$i.log" 2>&1 &
        pids+=($!)
    done
    while [ "$SECONDS" -lt "$deadline" ] && kill -0 "${pids[@]}" 2>/dev/null; do
        sleep 2
    done
    for pid in "${pids[@]}"; do  # SIGTERM: a running trial stops at its next step, handed back
        kill -TERM "$pid" 2>/dev/null && say "worker $pid still running at the deadline: stopped"
    done
    stop=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$stop" ] && kill -0 "${pids[@]}" 2>/dev/null; do
        sleep 1
    done
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null && say "worker $pid ignored SIGTERM for 30 s: killed"
        wait "$pid" || status=1
    done
    for i in $(seq 1 "$WORKERS"); do
        { echo "---- worker $i"; cat "$WORK/worker-$i.log"; } >>"$OUT/workers.log"
    done
else
    say "the study could not be planned or created (see the log)"
    status=1
fi

step "4. status and results"
logged timeout 60 "$PY" -m wno study status "$name" || status=1
timeout 60 "$PY" -m wno study status "$name" --json >"$OUT/status.json" 2>>"$LOG" || status=1
# A consistent copy of each SQLite store (the WAL folded in), without checkpoints or artifacts.
for db in optuna mlflow; do
    if [ -f "$WNO_HOME/$db.db" ]; then
        "$PY" -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" \
            "$WNO_HOME/$db.db" "$OUT/$db.db" || status=1
    else
        say "no $db store was written"
        status=1
    fi
done
rm -f "$started"
say "== done (status $status): $(find "$OUT" -maxdepth 1 -type f -printf '%f ')in $OUT"
exit "$status"
