"""Training throughput: the real data pipeline against the same loop fed one pre-made batch.

`wno.train_utils.train_epoch` runs the same model, optimiser and schedule twice per round:
once over `wno.training.data.DeviceLoader` (shuffle, random crop + flip, normalisation on the device) and
once over a loader that yields one batch made beforehand (the pipeline's cost removed). Rounds
alternate the two so a busy machine slows both alike; the median of the rounds is reported.
Target: the real pipeline keeps >= 95% of the pre-made batch's images/s.

On a CUDA machine it also times one epoch of W-MSA tiny and ViT tiny on CIFAR-10 in bf16.

    python -m benchmarks.bench_training
    python -m benchmarks.bench_training --models vit-micro,vit-tiny --steps 20
"""

from __future__ import annotations

import argparse
import functools
import statistics

from benchmarks.common import SHARED_DATA, data_dir, print_rows, row

COMMAND = "python -m benchmarks.bench_training"
TARGET = 0.95

MODELS = {
    "vit-micro": dict(model="vit", model_size="micro"),
    "vit-tiny": dict(model="vit", model_size="tiny"),
    "wmsa-micro-patch4": dict(model="wavelet", model_size="micro", token_layout="patch",
                              token_patch=4),
    "wmsa-tiny": dict(model="wavelet", model_size="tiny"),
}


_row = functools.partial(row, command=COMMAND)


class _SameBatch:
    """A loader that yields one pre-made batch `steps` times."""

    def __init__(self, x, y, steps):
        self.x, self.y, self.steps = x, y, steps

    def __len__(self):
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.x, self.y


def pipeline_vs_premade(name: str, steps: int = 15, batch: int = 128, rounds: int = 5,
                        device: str = "cpu") -> list[dict]:
    """Two rows: images/s with the real pipeline vs the pre-made batch, and the pipeline's own
    time per batch against a training step's (the steadier figure on a busy machine)."""
    import time

    import torch

    from wno.training.config import TrainConfig
    from wno.training.data import load_data
    from wno.model import build_model
    from wno.train_utils import CosineAnnealingWarmupRestarts, param_groups, train_epoch
    from wno.training.loop import autocast_dtype

    config = TrainConfig(dataset="synthetic", val_size=0, batch_size=batch, device=device,
                         **MODELS[name])
    dev = torch.device(device)
    data = load_data(config, dev)
    loader = data.loader("train", batch_size=batch, augment="standard", seed=0)
    x0, y0 = next(iter(loader))
    premade = _SameBatch(x0.clone(), y0.clone(), steps)
    torch.manual_seed(0)
    model = build_model(config).to(dev)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    sched = CosineAnnealingWarmupRestarts(opt, 10_000, max_lr=1e-3, min_lr=1e-5, warmup_steps=10)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    amp = autocast_dtype(config, dev)

    class Capped:  # the real pipeline, cut to the same number of steps
        def set_epoch(self, e):
            loader.set_epoch(e)

        def __iter__(self):
            for i, b in enumerate(loader):
                if i == steps:
                    return
                yield b

    def ips(src, epoch):
        s = train_epoch(model, src, crit, opt, dev, epoch, scheduler=sched, autocast_dtype=amp)
        return s.images_per_s

    def pipeline_only(epoch):
        t = time.perf_counter()
        for x, _ in Capped():
            pass
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / steps

    ips(_SameBatch(x0, y0, 3), 0)  # warm-up
    real, same, alone = [], [], []
    for r in range(rounds):
        real.append(ips(Capped(), r + 1))
        same.append(ips(premade, r + 1))
        alone.append(pipeline_only(r + 1))
    real_ips, same_ips = statistics.median(real), statistics.median(same)
    ratio = real_ips / same_ips
    batch_ms, step_ms = statistics.median(alone) * 1e3, batch / same_ips * 1e3
    where = f"{device}, {torch.get_num_threads()} threads, batch {batch}"
    return [
        _row(f"train step {name}: real pipeline vs one pre-made batch", real_ips, "images/s",
             same_ips, f"{where}, {steps} steps x {rounds} alternating rounds (medians); target "
             f"ratio >= {TARGET} ({'met' if ratio >= TARGET else 'NOT met'})"),
        _row(f"data pipeline time per batch, {name} step as baseline", batch_ms, "ms",
             step_ms, f"{where}; ratio = share of a step the pipeline adds "
             f"(implies {1 / (1 + batch_ms / step_ms):.3f} of the pre-made throughput)"),
    ]


def gpu_epochs(data_dir: str | None) -> list[dict]:
    """One epoch of W-MSA tiny and ViT tiny on CIFAR-10 (45,000 images), bf16, on CUDA."""
    import time

    import torch

    from wno.training.config import TrainConfig
    from wno.training.data import load_data
    from wno.model import build_model
    from wno.train_utils import CosineAnnealingWarmupRestarts, param_groups, train_epoch
    from wno.training.loop import autocast_dtype

    rows = []
    for name in ("wmsa-tiny", "vit-tiny"):
        config = TrainConfig(dataset="cifar10", data_dir=data_dir or "data", device="cuda",
                             precision="bf16", batch_size=128, **MODELS[name])
        dev = torch.device("cuda")
        data = load_data(config, dev)
        loader = data.loader("train", batch_size=128, augment="standard", seed=0)
        torch.manual_seed(0)
        model = build_model(config).to(dev)
        opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
        sched = CosineAnnealingWarmupRestarts(opt, len(loader), max_lr=1e-3, min_lr=1e-5,
                                              warmup_steps=len(loader) // 10)
        crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        t = time.perf_counter()
        stats = train_epoch(model, loader, crit, opt, dev, 1, scheduler=sched,
                            autocast_dtype=autocast_dtype(config, dev))
        torch.cuda.synchronize()
        rows.append(_row(f"one CIFAR-10 epoch {name}, bf16", stats.images / (time.perf_counter() - t),
                         "images/s", None, f"{torch.cuda.get_device_name()}, batch 128, "
                         f"{stats.images} images, first epoch (includes warm-up)"))
    return rows


def run(models: tuple[str, ...] = ("vit-micro", "wmsa-micro-patch4"), steps: int = 15) -> list[dict]:
    import torch

    from wno.base.utils import keep_freed_memory

    keep_freed_memory()  # as `wno train` does on CPU
    rows = [r for m in models for r in pipeline_vs_premade(m, steps=steps)]
    if torch.cuda.is_available():
        rows += [r for m in ("vit-tiny", "wmsa-tiny")
                 for r in pipeline_vs_premade(m, steps=50, device="cuda")]
        rows += gpu_epochs(str(data_dir() or SHARED_DATA))
    else:
        rows.append(_row("one CIFAR-10 epoch on a GPU (W-MSA tiny, ViT tiny, bf16)", None,
                         "images/s", None, "skipped: no CUDA device on this machine"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit-micro,wmsa-micro-patch4",
                        help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    print_rows(run(tuple(args.models.split(",")), args.steps))


if __name__ == "__main__":
    main()
