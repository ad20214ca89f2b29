"""The study of the prepared GPU run (benchmarks/gpu_check.sh), sized to the time it has.

W-MSA with the kernel on and off against its ViT twin, `--seeds` seeds each, on full CIFAR-10
(45,000 training images after the 5,000 held out for validation, the 10,000 test images). The
number of epochs is measured, not guessed: each arm's training images/s is timed here on the
device the workers will use (after a warm-up that includes any compilation), and the epochs are
the most that fit in `--budget` seconds when the trials share the device: the workers run
concurrently, so an epoch of the whole study costs about the sum of its trials' epochs.

    python -m benchmarks.gpu_study --out study.yaml --budget 240 --name gpu-cifar10
    python -m benchmarks.gpu_study --out study.yaml --budget 20 --dry-run   # CPU: synthetic, micro

Writes the study file (YAML) and prints the plan as one JSON line (arms' images/s, epochs).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ARMS = {"kernel on": {"model": "wavelet", "use_kernel": True},
        "kernel off": {"model": "wavelet", "use_kernel": False},
        "vit": {"model": "vit"}}


# A dry run checks the plumbing in seconds on a CPU: 4x4 coefficient patches (84 tokens).
DRY_LAYOUT = {"token_layout": "patch", "token_patch": 4}


def measure(size: str, batch: int, device: str, steps: int, layout: dict,
            warmup: int = 3) -> dict[str, float]:
    """Training images/s of each arm on `device` (bf16 autocast on CUDA, as training uses)."""
    from wno.model import build_model
    from wno.training.config import TrainConfig
    from wno.training.measure import throughput

    dtype = torch.bfloat16 if device.startswith("cuda") else None
    out = {}
    for arm, fields in ARMS.items():
        config = TrainConfig(model_size=size, **layout, **fields).validate()
        torch.manual_seed(0)
        out[arm] = throughput(build_model(config), batch_size=batch, steps=steps, warmup=warmup,
                              device=device, autocast_dtype=dtype)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return out


def epochs_that_fit(images_per_s: dict[str, float], train_images: int, seeds: int, budget: float,
                    overhead: float, cap: int) -> int:
    """The most epochs whose summed trial time (each arm `seeds` times) fits the budget.

    >>> epochs_that_fit({"a": 1000.0, "b": 500.0}, 10_000, 2, budget=130, overhead=10, cap=50)
    2
    """
    per_epoch = seeds * sum(train_images / ips for ips in images_per_s.values())  # seconds
    return max(1, min(cap, math.floor((budget - overhead) / per_epoch)))


def study_yaml(name: str, *, size: str, epochs: int, batch: int, seeds: int, dry_run: bool) -> str:
    data = ("  dataset: synthetic\n  train_size: 256\n  val_size: 128\n  test_size: 128\n"
            if dry_run else "  dataset: cifar10\n  val_size: 5000\n")
    warmup = 0.5 if epochs <= 5 else round(0.1 * epochs, 1)
    layout = "".join(f"  {k}: {v}\n" for k, v in DRY_LAYOUT.items()) if dry_run else ""
    return (f"# Written by benchmarks/gpu_study.py for benchmarks/gpu_check.sh; epochs measured to fit.\n"
            f"name: {name}\n"
            f"description: W-MSA kernel on/off vs its ViT twin, {size}, {epochs} epoch(s), "
            f"{'synthetic dry run' if dry_run else 'full CIFAR-10'}\n"
            f"base:\n  model_size: {size}\n{data}{layout}  epochs: {epochs}\n"
            f"  batch_size: {batch}\n  warmup_epochs: {warmup}\n"
            f"grid:\n  kernel: [true, false]\n"
            f"seeds: {seeds}\n"
            f"baselines:\n  vit: {{}}\n"
            f"objective:\n  metric: best_val_acc\n  direction: maximize\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="study file to write")
    p.add_argument("--name", default="gpu-cifar10")
    p.add_argument("--budget", type=float, required=True, help="seconds the workers may train")
    p.add_argument("--overhead", type=float, default=None,
                   help="seconds per trial not spent in epochs (start, compile, evaluation); "
                        "default 90 on CUDA, 10 in a dry run")
    p.add_argument("--size", default=None, help="model size (default tiny; micro in a dry run)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--dry-run", action="store_true", help="CPU plumbing check: synthetic, micro")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        p.error("no CUDA device: pass --dry-run for the CPU plumbing check")
    size = args.size or ("tiny" if cuda else "micro")
    batch = args.batch_size or (256 if cuda else 64)
    overhead = args.overhead if args.overhead is not None else (90.0 if cuda else 10.0)
    train_images = 256 if args.dry_run else 45_000
    ips = measure(size, batch, "cuda" if cuda else "cpu", steps=10 if cuda else 1,
                  layout=DRY_LAYOUT if args.dry_run else {}, warmup=3 if cuda else 1)
    epochs = epochs_that_fit(ips, train_images, args.seeds, args.budget, overhead,
                             1 if args.dry_run else args.max_epochs)
    args.out.write_text(study_yaml(args.name, size=size, epochs=epochs, batch=batch,
                                   seeds=args.seeds, dry_run=args.dry_run))
    print(json.dumps({"study": args.name, "size": size, "batch_size": batch, "epochs": epochs,
                      "images_per_s": {k: round(v, 1) for k, v in ips.items()},
                      "budget_s": args.budget, "overhead_s": overhead,
                      "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                      "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
