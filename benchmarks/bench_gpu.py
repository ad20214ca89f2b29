"""GPU training throughput: W-MSA and ViT (bf16 autocast) on every attention path, and TFLOP/s.

Rows (one run, ratios against ViT of the same size measured in it):
- images/s of a training step, W-MSA with the kernel off and on each attention path (flex, the
  CUDA default; sparse; fused; dense), against ViT;
- achieved TFLOP/s (counted FLOPs of a training step / step time; kernel-on FLOPs count only the
  pairs the kernel keeps, as on CPU) against ViT's.

On a machine without CUDA the suite reports the figures recorded by the last GPU run
(benchmarks/gpu_results.json, written by `--save`), marked with their device and date.

    python -m benchmarks.bench_gpu --size small --batch-size 256 --save
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

from benchmarks.common import print_rows, provenance, row

COMMAND = "python -m benchmarks.bench_gpu"
RESULTS = Path(__file__).with_name("gpu_results.json")
PATHS = ("flex", "sparse", "fused", "dense")


def _row(name, value, unit, baseline=None, notes="", command=COMMAND):
    return row(name, value, unit, baseline, notes, command)


def _measure(config, batch: int, steps: int) -> tuple[float, float]:
    """(images/s, achieved TFLOP/s) of bf16 training steps of `config`'s model."""
    import wno.model.attention_paths as paths
    from wno.training.measure import model_cost, throughput
    from wno.model import build_model

    torch.manual_seed(0)
    model = build_model(config).cuda()
    cost = model_cost(model, config)
    images_per_s = throughput(model, batch_size=batch, steps=steps, warmup=3, device="cuda",
                              autocast_dtype=torch.bfloat16)
    if config.attention == "flex" and config.use_kernel and paths.flex_fell_back():
        raise RuntimeError("FlexAttention failed to compile; the run fell back to fused")
    return images_per_s, cost.train_flops * images_per_s / 1e12


def measure(size: str, batch: int, steps: int) -> list[dict]:
    from wno.training.config import TrainConfig

    device = torch.cuda.get_device_name(0)
    cmd = f"{COMMAND} --size {size} --batch-size {batch}"
    note = f"{device}, bf16 autocast, batch {batch}, {steps} timed steps, torch {torch.__version__}"
    configs = {"vit": TrainConfig(model="vit", model_size=size),
               "off": TrainConfig(model_size=size, use_kernel=False)}
    configs.update({p: TrainConfig(model_size=size, attention=p) for p in PATHS})
    results, errors = {}, {}
    for name, config in configs.items():
        print(f"[bench_gpu] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = _measure(config, batch, steps)
            print(f"[bench_gpu] {name}: {results[name][0]:.0f} images/s, "
                  f"{results[name][1]:.1f} TFLOP/s", file=sys.stderr, flush=True)
        except Exception as e:  # one failing path must not hide the others' figures
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            print(f"[bench_gpu] {name} failed: {errors[name]}", file=sys.stderr, flush=True)
        torch.cuda.empty_cache()
    vit = results.get("vit", (None, None))
    rows = []
    for name in ("off",) + PATHS:
        label = "kernel off" if name == "off" else f"kernel on ({name})"
        if name in errors:
            rows.append(_row(f"GPU train, W-MSA {size} {label}", None, "images/s", None,
                             f"{note}; failed: {errors[name]}", cmd))
            continue
        ips, tflops = results[name]
        rows.append(_row(f"GPU train, W-MSA {size} {label} vs ViT {size}", ips, "images/s",
                         vit[0], note, cmd))
        rows.append(_row(f"GPU achieved TFLOP/s, W-MSA {size} {label} vs ViT", tflops, "TFLOP/s",
                         vit[1], note + "; target >= 0.8 (issue 8)", cmd))
    for name in PATHS:
        if name in results and "off" in results:
            rows.append(_row(f"GPU train step time, W-MSA {size} kernel on ({name}) vs off",
                             results["off"][0] / results[name][0], "x", 1.0,
                             note + "; target <= 1.0 (issue 8)", cmd))
    if "vit" in results:
        rows.append(_row(f"GPU train, ViT {size}", vit[0], "images/s", None,
                         f"{note}; {vit[1]:.1f} TFLOP/s achieved", cmd))
    return rows


def recorded() -> list[dict]:
    """The last GPU run's rows, marked as recorded, for machines without CUDA."""
    if not RESULTS.exists():
        return [_row("GPU train", None, "images/s", None,
                     "no CUDA here and no recorded GPU run (benchmarks/gpu_results.json)")]
    saved = json.loads(RESULTS.read_text())
    rows = saved["rows"]
    for r in rows:  # measured there and then: the provenance of that run, not of this machine
        r["notes"] = f"recorded {saved['date']} (no GPU here); {r['notes']}"
        r.update(device=saved["device"], torch=saved.get("torch"), commit=saved.get("commit"),
                 dirty=saved.get("dirty"))
    return rows


def run(size: str = "small", batch: int = 256, steps: int = 20, save: bool = False) -> list[dict]:
    if not torch.cuda.is_available():
        return recorded()
    rows = measure(size, batch, steps)
    if save:
        where = provenance()
        RESULTS.write_text(json.dumps({"date": dt.date.today().isoformat(),
                                       "device": torch.cuda.get_device_name(0),
                                       "torch": where["torch"], "commit": where["commit"],
                                       "dirty": where["dirty"], "rows": rows}, indent=1) + "\n")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--save", action="store_true", help=f"record the rows in {RESULTS.name}")
    args = parser.parse_args()
    print_rows(run(args.size, args.batch_size, args.steps, args.save))


if __name__ == "__main__":
    main()
