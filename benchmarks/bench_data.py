"""The data pipeline: load times, and device-resident batches against a torchvision DataLoader.

- CIFAR-10 from the offline zip: the first run (decode 60,000 JPEGs through torchvision, write the
  cache) against a cached run (load the uint8 tensors), in a fresh temporary cache folder.
- Making augmented, normalised training batches (random crop with padding 4 + flip, batch 128):
  `wno.training.data.DeviceLoader` (whole batch at once, on the device) against a torchvision `DataLoader`
  over the same uint8 images with the same augmentation per sample through
  `torchvision.transforms.v2` (its usual form), with as many workers as cores (persistent, timed
  on the second epoch so worker start-up is not counted) and with none.

    python -m benchmarks.bench_data                  # data dir: $WNO_DATA_DIR or ../shared/data
    python -m benchmarks.bench_data --data-dir DIR
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import data_dir as common_data_dir
from benchmarks.common import print_rows, row

COMMAND = "python -m benchmarks.bench_data"
BATCH = 128


_row = functools.partial(row, command=COMMAND)


def load_times(data_dir: Path) -> list[dict]:
    """First (decode + cache) and cached load of CIFAR-10 from the zip, in a fresh cache."""
    from wno.training import data as D

    with tempfile.TemporaryDirectory() as cache:
        old = os.environ.get(D.ENV_CACHE_DIR)
        os.environ[D.ENV_CACHE_DIR] = cache
        try:
            t = time.perf_counter()
            D.load_cifar10(data_dir)
            first = time.perf_counter() - t
            cached = []
            for _ in range(3):
                t = time.perf_counter()
                D.load_cifar10(data_dir)
                cached.append(time.perf_counter() - t)
        finally:
            if old is None:
                os.environ.pop(D.ENV_CACHE_DIR, None)
            else:
                os.environ[D.ENV_CACHE_DIR] = old
    cached_s = statistics.median(cached)
    return [
        _row("cifar10 load, first run (decode zip + write cache)", first, "s", None,
             f"60,000 JPEGs from {data_dir / 'cifar10-jpeg.zip'}"),
        _row("cifar10 load, cached", cached_s, "s", first,
             "ratio = cached / first run (median of 3)"),
    ]


def _images(n: int):
    """`n` synthetic 32x32 uint8 images: what the pipeline costs does not depend on content."""
    from wno.training import data as D

    train, _ = D.synthetic()
    images = train.images.repeat((n + len(train) - 1) // len(train), 1, 1, 1)[:n]
    return images, train.labels.repeat((n + len(train) - 1) // len(train))[:n]


def pipeline_throughput(n: int = 20_000) -> list[dict]:
    """Images/s of making augmented, normalised batches: DeviceLoader vs DataLoader."""
    import torch
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    from wno.training import data as D

    info = D.DATASETS["cifar10"]
    images, labels = _images(n)
    split = D.Split(images, labels)

    loader = D.DeviceLoader(split, batch_size=BATCH, mean=info.mean, std=info.std, shuffle=True,
                            drop_last=True, augment="standard", seed=0)

    def device_epoch(epoch):
        loader.set_epoch(epoch)
        count = 0
        for x, _ in loader:
            count += x.shape[0]
        return count

    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)])

    class Images(Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return transform(images[i]), labels[i]

    def torch_epoch(dl):
        count = 0
        for x, _ in dl:
            count += x.shape[0]
        return count

    def timed(fn, *a):
        t = time.perf_counter()
        count = fn(*a)
        return count / (time.perf_counter() - t)

    device_epoch(0)
    ours = statistics.median(timed(device_epoch, e) for e in (1, 2, 3))
    workers = os.cpu_count() or 1
    dl = DataLoader(Images(), batch_size=BATCH, shuffle=True, drop_last=True,
                    num_workers=workers, persistent_workers=True)
    torch_epoch(dl)  # first epoch starts the workers
    theirs = timed(torch_epoch, dl)
    del dl
    dl0 = DataLoader(Images(), batch_size=BATCH, shuffle=True, drop_last=True, num_workers=0)
    theirs0 = timed(torch_epoch, dl0)
    threads = torch.get_num_threads()
    return [
        _row("batches: DeviceLoader (crop+flip+normalise, on device)", ours, "images/s", theirs,
             f"ratio = DeviceLoader / DataLoader({workers} workers); CPU, {threads} threads, "
             f"batch {BATCH}, {n} images"),
        _row(f"batches: torchvision DataLoader, {workers} workers, v2 per sample", theirs,
             "images/s", None, "persistent workers, second epoch"),
        _row("batches: torchvision DataLoader, 0 workers, v2 per sample", theirs0, "images/s",
             ours, "ratio = this / DeviceLoader"),
    ]


def run(data_dir: str | Path | None = None) -> list[dict]:
    rows = []
    data_dir = Path(data_dir) if data_dir else common_data_dir()
    if data_dir is not None:
        rows += load_times(data_dir)
    else:
        rows.append(_row("cifar10 load", 0.0, "s", None,
                         "skipped: no cifar10-jpeg.zip (set WNO_DATA_DIR)"))
    rows += pipeline_throughput()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    print_rows(run(args.data_dir))


if __name__ == "__main__":
    main()
