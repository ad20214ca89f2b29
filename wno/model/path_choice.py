"""Which attention path `auto` runs on a CPU: measured once per machine, torch version and shape.

Whether the block-sparse path beats the fused one on a CPU depends on the CPU, not only on how
much the kernel lets it skip: the sparse path's W-MSA tiny training step took 0.84-0.87x of kernel
off on a 2-core AMD EPYC, 0.96-1.03x on a 2-core Intel Xeon, and 1.13-1.48x on a 2-core Xeon with
AVX-512 and AMX (fast dense matmuls; BENCHMARKS.md names the machine of each row). So `auto`
times both on the shapes it will
run (a forward and backward of one attention layer, the median of a few repetitions), keeps the
faster, and remembers it in a small JSON file keyed by the CPU, its thread count, the torch
version and the shape, so each machine measures once. Every path computes the same attention
(tests/test_attention.py): the choice changes speed only.

On CUDA `auto` is FlexAttention by rule (its compiled kernel skips the zero blocks). Set
WNO_ATTENTION_AUTOTUNE=0 to use the rule on CPU too (sparse when it gathers at most half of the
key blocks, else fused), e.g. where a few seconds of measuring at the first step matter.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from wno.base.utils import atomic_write_text, cpu_model, user_cache_dir

ENV_AUTOTUNE = "WNO_ATTENTION_AUTOTUNE"
CACHE_NAME = "attention-paths.json"
REPEATS = 3
# Batches larger than this are timed at this size: both paths' cost grows linearly with the batch
# (every image is a batch of heads to them), and a full batch of 128 would cost gigabytes and
# tens of seconds on a CPU just to choose.
MAX_BATCH = 16


def cache_file() -> Path:
    """Where choices are kept: $WNO_CACHE_DIR, else ~/.cache/wno (the data cache's folder)."""
    return user_cache_dir() / CACHE_NAME


def autotune_enabled() -> bool:
    return os.environ.get(ENV_AUTOTUNE, "1").strip().lower() not in ("0", "false", "no", "off")


def cpu_name() -> str:
    """The CPU's model name and the threads torch uses: what the choice depends on."""
    return f"{cpu_model()} x{torch.get_num_threads()} threads"


def key(shape: tuple[int, int, int, int], gathered_fraction: float) -> str:
    """The cache key of a choice: machine, torch, and the attention's (B, H, N, dh) shape."""
    b, h, n, dh = shape
    return (f"{cpu_name()} | torch {torch.__version__} | B={b} H={h} N={n} dh={dh} "
            f"gathered={gathered_fraction:.3f}")


def choose(candidates: dict[str, Callable[[], None]], cache_key: str) -> str:
    """The fastest of `candidates` (name -> one forward and backward), remembered per key."""
    path = cache_file()
    cached = _read(path)
    if cached.get(cache_key) in candidates:
        return cached[cache_key]
    timings = {name: _time(step) for name, step in candidates.items()}
    best = min(timings, key=timings.get)
    cached = _read(path)  # another process may have written meanwhile
    cached[cache_key] = best
    cached[f"{cache_key} | seconds"] = {k: round(v, 5) for k, v in timings.items()}
    _write(path, cached)
    return best


def _time(step: Callable[[], None]) -> float:
    step()  # warm-up: allocations, kernels chosen on first use
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # missing or damaged: measure again
        return {}


def _write(path: Path, data: dict) -> None:
    try:
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError:  # an unwritable cache only costs measuring again next time
        pass
