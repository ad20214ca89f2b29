"""What is known about each data set without loading it: size, channels, classes, statistics.

The model reads the image size, channels and class count; the configuration checks split sizes
against the image counts; the loaders (`wno.training.data`) read the pixels. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What the model and the config need to know about a data set, without loading it."""

    name: str
    image_size: int
    in_channels: int
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_images: int  # size of the full training split (before the validation hold-out)
    test_images: int
    classes: tuple[str, ...] = ()


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 32, 3, 10, (0.4914, 0.4822, 0.4465),
                           (0.2470, 0.2435, 0.2616), 50_000, 10_000, CIFAR10_CLASSES),
    # Oriented gratings: 5 orientations (folded so a horizontal flip keeps the class) x 2 scales.
    "synthetic": DatasetInfo("synthetic", 32, 3, 10, (0.5, 0.5, 0.5), (0.15, 0.15, 0.15),
                             5_000, 1_000, tuple(f"{o}deg-{s}" for s in ("coarse", "fine")
                                                  for o in (0, 22, 45, 67, 90))),
}
