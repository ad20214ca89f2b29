"""Data sets as uint8 tensors resident on the training device, and batches made there.

A data set is a registry entry (`DATASETS`) plus a loader that returns its images as one uint8
tensor per split. Training never touches a `Dataset`/`DataLoader`: a `DeviceLoader` indexes the
resident tensor, augments the whole batch on the device (random crop with padding, flip, optional
RandAugment / MixUp / CutMix) and normalises it, so there is no per-sample Python work in the loop.

Splits: the validation set is held out of the training set (stratified), and every subset is drawn
with a fixed split seed (`SPLIT_SEED`), independent of the training seed, so every trial of a study
sees the same images. The test set is reported, never selected on.

Sources for `cifar10`, looked up in the data directory in this order:
  1. torchvision's `cifar-10-batches-py/` (what `torchvision.datasets.CIFAR10` downloads);
  2. an ImageFolder tree: `train/<class>/*.jpg|png` and `test/<class>/*` (in the data directory,
     or in `cifar10/` or `cifar10-jpeg/` under it);
  3. a zip of such a tree (`cifar10-jpeg.zip`, `cifar10.zip`, or any zip holding `train/`+`test/`);
  4. image sheets (`wno.training.sheets`, written by `wno data pack`): `cifar10-sheets/sheets.json`,
     or a data directory that is itself a sheet set; the compact copy for offline machines;
  5. a download through torchvision, when the machine is online and the directory writable.
Trees, zips and sheets are decoded once and cached as uint8 tensors (see `cache_dir`; a sheet
set's cache goes beside it, never into it, so the folder stays the size it was packed at).

One concern, a little over 500 lines: a data set's pixels, from wherever they are, as tensors on
the training device and the batches drawn from them; the facts about each data set (sizes,
classes) are `wno.base.datasets`.

Example:
    >>> from wno.training.config import TrainConfig
    >>> data = load_data(TrainConfig(dataset="synthetic", val_size=500))
    >>> loader = data.loader("train", batch_size=64, augment="standard", seed=0)
    >>> loader.set_epoch(1)
    >>> x, y = next(iter(loader))   # x: (64, 3, 32, 32) float32, normalised; y: (64,) int64
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import stat
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wno.base.datasets import CIFAR10_CLASSES, DATASETS, DatasetInfo  # noqa: F401
from wno.base.utils import ENV_CACHE_DIR, user_cache_dir

if TYPE_CHECKING:  # torch is imported lazily so `wno --help` and config validation stay fast
    import torch

    from wno.training.config import TrainConfig


SPLIT_SEED = 20_240_229  # fixed: splits and subsets do not depend on the training seed
CACHE_VERSION = 1  # bump when the cache format changes
ENV_DATA_DIR = "WNO_DATA_DIR"


class DataError(ValueError):
    """Data that exists but cannot be used (corrupt zip or image, wrong classes or sizes)."""


class DataMissing(DataError):
    """No data set where one was expected; the message says where to put what."""


# ------------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------------
@dataclass
class Split:
    """One split as resident tensors: images (N, C, H, W) uint8, labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: str | torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Data:
    """A data set's train / val / test splits on one device, and the facts about it."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    source: str  # where the images came from (path or "generated"), for logs

    def loader(self, split: str, *, batch_size: int, augment: str = "none", seed: int = 0,
               mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> DeviceLoader:
        """Batches of `split`; the training split is shuffled and may drop its last partial batch."""
        part: Split = getattr(self, split)
        training = split == "train"
        return DeviceLoader(part, batch_size=batch_size, mean=self.info.mean, std=self.info.std,
                            shuffle=training, drop_last=training and len(part) > batch_size,
                            augment=augment if training else "none",
                            mixup_alpha=mixup_alpha if training else 0.0,
                            cutmix_alpha=cutmix_alpha if training else 0.0,
                            num_classes=self.info.num_classes, seed=seed)


def stratified_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """`n` indices drawn so every class keeps its share (largest remainder), sorted.

    Deterministic for a given `seed`; the same call always returns the same images.
    """
    import torch

    total = len(labels)
    if not 0 <= n <= total:
        raise ValueError(f"cannot draw {n} images from a split of {total}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(total, generator=g)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / total
    quota = exact.floor().long()
    # Hand the images lost to rounding to the classes with the largest remainders (ties: lowest class).
    short = n - int(quota.sum())
    if short:
        remainder = exact - quota
        quota[torch.argsort(-remainder, stable=True)[:short]] += 1
    picked = []
    shuffled = labels[order]
    for c, q in zip(classes.tolist(), quota.tolist()):
        picked.append(order[shuffled == c][:q])
    return torch.cat(picked).sort().values


def make_splits(train: Split, test: Split, *, val_size: int, train_size: int | None,
                test_size: int | None) -> tuple[Split, Split, Split]:
    """Hold `val_size` images out of `train` and take the asked subsets, all stratified.

    The validation images never depend on `train_size`, so a quick run on a subset is validated
    on the same images as a full one.
    """
    import torch

    if val_size >= len(train):
        raise ValueError(f"val_size={val_size} leaves no training images: the training split has "
                         f"{len(train)}; choose val_size < {len(train)}")
    val_idx = stratified_indices(train.labels, val_size, SPLIT_SEED)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[val_idx] = False
    train_idx = keep.nonzero().squeeze(1)
    if train_size is not None:
        if train_size > len(train_idx):
            raise ValueError(f"train_size={train_size} is larger than the {len(train_idx)} training "
                             f"images left after holding out val_size={val_size}")
        train_idx = train_idx[stratified_indices(train.labels[train_idx], train_size, SPLIT_SEED + 1)]
    test_idx = torch.arange(len(test))
    if test_size is not None:
        if test_size > len(test):
            raise ValueError(f"test_size={test_size} is larger than the test split ({len(test)})")
        test_idx = stratified_indices(test.labels, test_size, SPLIT_SEED + 2)
    pick = lambda s, i: Split(s.images[i].contiguous(), s.labels[i].contiguous())  # noqa: E731
    return pick(train, train_idx), pick(train, val_idx), pick(test, test_idx)


def load_data(config: TrainConfig, device: str | torch.device = "cpu") -> Data:
    """The data set of `config` with its splits, resident on `device`."""
    if config.dataset not in DATASETS:
        raise ValueError(f"dataset={config.dataset!r} is not one of {', '.join(DATASETS)}")
    info = DATASETS[config.dataset]
    if config.dataset == "synthetic":
        train, test, source = *synthetic(info.train_images, info.test_images), "generated"
    else:
        train, test, source = load_cifar10(config.data_dir)
    train, val, test = make_splits(train, test, val_size=config.val_size,
                                   train_size=config.train_size, test_size=config.test_size)
    return Data(info, train.to(device), val.to(device), test.to(device), source)


# ------------------------------------------------------------------------------------------------
# Synthetic: oriented gratings at two scales
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)  # a second or two to generate; tests and sweeps ask repeatedly
def synthetic(n_train: int = 5000, n_test: int = 1000, seed: int = 7) -> tuple[Split, Split]:
    """Deterministic images whose class is a grating's orientation (5, flip-folded) and scale (2).

    Phase, colour, contrast, a slight orientation/frequency jitter and pixel noise vary per image,
    so the class is learnable but not readable off one pixel. A horizontal flip maps orientation
    theta to -theta; classes are defined on |theta|, so the standard augmentation keeps labels.
    """
    import torch

    def make(n: int, gen: torch.Generator) -> Split:
        labels = torch.arange(n) % 10
        labels = labels[torch.randperm(n, generator=gen)]
        orient, scale = labels % 5, labels // 5
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        theta = sign * (orient.float() * math.pi / 8 + (torch.rand(n, generator=gen) - 0.5) * 0.1)
        period = torch.where(scale == 0, 8.0, 3.5) * (1 + (torch.rand(n, generator=gen) - 0.5) * 0.1)
        phase = torch.rand(n, generator=gen) * 2 * math.pi
        yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        proj = (xx * torch.cos(theta)[:, None, None] + yy * torch.sin(theta)[:, None, None])
        wave = torch.sin(2 * math.pi * proj / period[:, None, None] + phase[:, None, None])  # (N, H, W)
        colour = 0.3 + 0.7 * torch.rand(n, 3, generator=gen)  # (N, 3)
        contrast = 0.15 + 0.2 * torch.rand(n, generator=gen)
        img = 0.5 + contrast[:, None, None, None] * colour[:, :, None, None] * wave[:, None]
        img = img + 0.08 * torch.randn(n, 3, 32, 32, generator=gen, dtype=torch.float32)
        images = (img.clamp(0, 1) * 255).round().to(torch.uint8)  # (N, 3, 32, 32)
        return Split(images, labels.long())

    gen = torch.Generator().manual_seed(seed)
    return make(n_train, gen), make(n_test, gen)


# ------------------------------------------------------------------------------------------------
# CIFAR-10 from the data directory
# ------------------------------------------------------------------------------------------------
def cache_dir(data_dir: str | Path) -> Path:
    """Where decoded images are cached: $WNO_CACHE_DIR, else <data_dir>/.wno-cache when the data
    directory is writable (the shared copy is not), else ~/.cache/wno."""
    if os.environ.get(ENV_CACHE_DIR):
        return user_cache_dir()
    data_dir = Path(data_dir)
    return data_dir / ".wno-cache" if writable(data_dir) else user_cache_dir()


def writable(folder: Path) -> bool:
    """A folder we may write in: permitted, and not marked read-only by its mode bits (root may
    write anywhere, but a shared read-only data folder stays untouched)."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return (folder.is_dir() and os.access(folder, os.W_OK)
            and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)))


def load_cifar10(data_dir: str | Path) -> tuple[Split, Split, str]:
    """CIFAR-10's train and test splits as uint8 tensors, from the first source found (see above)."""
    data_dir = Path(data_dir)
    if (data_dir / "cifar-10-batches-py").is_dir():
        return (*_torchvision_cifar10(data_dir, download=False), str(data_dir / "cifar-10-batches-py"))
    for root in (data_dir, data_dir / "cifar10", data_dir / "cifar10-jpeg"):
        if (root / "train").is_dir() and (root / "test").is_dir():
            return (*_cached(root, _read_tree), str(root))
    zips = _find_zips(data_dir)
    if zips:
        return (*_cached(zips[0], _read_zip), str(zips[0]))
    from wno.training import sheets

    manifest = sheets.find_manifest(data_dir)
    if manifest is not None:
        return (*_cached(manifest, _read_sheets, cache=_sheets_cache(data_dir, manifest.parent)),
                str(manifest.parent))
    partial = sheets.is_partial(data_dir)
    if partial is not None:
        raise DataError(f"{partial} holds image sheets but no {sheets.MANIFEST}: a partial copy; "
                        "copy the whole folder, or write it again with `wno data pack`")
    return (*_download_or_explain(data_dir), str(data_dir / "cifar-10-batches-py"))


def _sheets_cache(data_dir: Path, folder: Path) -> Path:
    """Where a sheet set's decoded cache goes: beside the set, never inside it, so the folder stays
    the size it was packed at and can be copied to an offline machine as it is."""
    return cache_dir(data_dir) if folder != data_dir else user_cache_dir()


def _read_sheets(manifest: Path) -> tuple[Split, Split]:
    """A sheet set's train and test splits, with the same class-order check as trees and zips."""
    from wno.training import sheets

    folder = manifest.parent
    try:
        found = sheets.read_manifest(folder)
        _check_classes(found["classes"], str(manifest))
        got = sheets.read_sheets(folder, splits=("train", "test")).splits
    except sheets.SheetError as e:
        raise DataError(str(e)) from None
    if tuple(got["train"][0].shape[1:]) != (3, 32, 32):
        raise DataError(f"{manifest} holds {tuple(got['train'][0].shape[1:])} images; CIFAR-10 "
                        "images are (3, 32, 32)")
    return Split(*got["train"]), Split(*got["test"])


def _find_zips(data_dir: Path) -> list[Path]:
    if not data_dir.is_dir():
        return []
    named = [data_dir / n for n in ("cifar10-jpeg.zip", "cifar10.zip") if (data_dir / n).is_file()]
    return named + sorted(p for p in data_dir.glob("*.zip") if p not in named and _has_tree(p))


def _has_tree(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return _zip_prefix(z.namelist()) is not None
    except (zipfile.BadZipFile, OSError):
        return False


def _missing_message(data_dir: Path, reason: str) -> str:
    return (
        f"CIFAR-10 not found in the data directory {str(data_dir)!r} ({reason}).\n"
        "Put one of these there (or point --data-dir / the WNO_DATA_DIR environment variable at "
        "a directory holding one):\n"
        f"  - torchvision's download: {data_dir / 'cifar-10-batches-py'}/ (downloaded automatically "
        "when online),\n"
        f"  - an ImageFolder tree: {data_dir / 'train'}/<class>/*.jpg and {data_dir / 'test'}/<class>/*.jpg "
        f"with the classes {', '.join(CIFAR10_CLASSES)},\n"
        f"  - a zip of that tree, e.g. {data_dir / 'cifar10-jpeg.zip'},\n"
        f"  - image sheets written by `wno data pack`: {data_dir / 'cifar10-sheets'}/sheets.json.\n"
        "For smoke runs without data use --dataset synthetic --val-size "
        f"{DATASETS['synthetic'].train_images // 5}."
    )


def _download_or_explain(data_dir: Path) -> tuple[Split, Split]:
    """torchvision's download when online; otherwise (or on failure) say where to put what.

    A failed download leaves nothing behind (no empty folder, no partial archive).
    WNO_OFFLINE=1 skips the attempt.
    """
    parent = data_dir if data_dir.exists() else data_dir.parent
    if os.environ.get("WNO_OFFLINE"):
        raise DataMissing(_missing_message(data_dir, "and WNO_OFFLINE is set"))
    if not writable(parent):
        raise DataMissing(_missing_message(data_dir, "and it is not writable for a download"))
    import shutil
    import socket

    created = not data_dir.exists()
    archive = data_dir / "cifar-10-python.tar.gz"
    had_archive = archive.exists()
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        return _torchvision_cifar10(data_dir, download=True)
    except Exception as e:  # no network, proxy, DNS: all mean "put it there yourself"
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        elif not had_archive:
            archive.unlink(missing_ok=True)
        raise DataMissing(_missing_message(data_dir, f"and the download failed: {e}")) from None
    finally:
        socket.setdefaulttimeout(old)


def _torchvision_cifar10(root: Path, download: bool) -> tuple[Split, Split]:
    import torch
    from torchvision.datasets import CIFAR10

    def split(train: bool) -> Split:
        try:
            ds = CIFAR10(str(root), train=train, download=download)
        except RuntimeError as e:
            raise DataError(f"torchvision's CIFAR-10 under {root} cannot be read: {e}") from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        return Split(images, torch.tensor(ds.targets, dtype=torch.long))

    return split(True), split(False)


def _cached(source: Path, read, cache: Path | None = None) -> tuple[Split, Split]:
    """Decode `source` once; later runs load the uint8 tensors from the cache in about a second.

    The cache file goes into the folder `cache`, by default `cache_dir` of the folder holding
    `source`."""
    import torch

    from wno.base.utils import atomic_write_bytes

    stat = source.stat()
    key = hashlib.sha256(f"{CACHE_VERSION}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
                         .encode()).hexdigest()[:16]
    if cache is None:
        cache = cache_dir(source.parent if source.is_file() else source)
    path = cache / f"cifar10-{key}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
            return (Split(blob["train_images"], blob["train_labels"]),
                    Split(blob["test_images"], blob["test_labels"]))
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    train, test = read(source)
    buf = io.BytesIO()
    torch.save({"train_images": train.images, "train_labels": train.labels,
                "test_images": test.images, "test_labels": test.labels,
                "source": str(source)}, buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:  # a cache we cannot write only costs time
        pass
    return train, test


def _check_classes(found: list[str], where: str) -> None:
    if tuple(found) != CIFAR10_CLASSES:
        raise DataError(f"{where} has the class folders {found}; CIFAR-10 needs exactly "
                        f"{list(CIFAR10_CLASSES)}")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _decode(items: list[tuple[str, bytes]], where: str) -> torch.Tensor:
    """Decode (name, encoded bytes) pairs into one (N, 3, 32, 32) uint8 tensor via torchvision."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    out = torch.empty(len(items), 3, 32, 32, dtype=torch.uint8)
    for i, (name, data) in enumerate(items):  # once per data set, then cached
        try:
            with warnings.catch_warnings():  # "superseded by TorchCodec": still works in 0.29
                warnings.simplefilter("ignore", DeprecationWarning)
                img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                   mode=ImageReadMode.RGB)
        except RuntimeError as e:
            raise DataError(f"cannot decode image {name} in {where}: {e}") from None
        if img.shape != (3, 32, 32):
            raise DataError(f"image {name} in {where} is {tuple(img.shape[1:])} pixels; "
                            "CIFAR-10 images are 32x32")
        out[i] = img
    return out


def _read_tree(root: Path) -> tuple[Split, Split]:
    import torch
    from torchvision.datasets.folder import find_classes

    def split(name: str) -> Split:
        folder = root / name
        classes, _ = find_classes(str(folder))
        _check_classes(classes, str(folder))
        items, labels = [], []
        for label, cls in enumerate(classes):
            for f in sorted((folder / cls).iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    items.append((str(f), f.read_bytes()))
                    labels.append(label)
        if not items:
            raise DataError(f"{folder} holds no .jpg/.png images")
        return Split(_decode(items, str(folder)), torch.tensor(labels, dtype=torch.long))

    return split("train"), split("test")


def _zip_prefix(names: list[str]) -> str | None:
    """'' when the zip holds train/ and test/ at its root, 'dir/' when under one folder, else None."""
    tops = {n.split("/", 1)[0] for n in names}
    if {"train", "test"} <= tops:
        return ""
    for top in tops:
        if {f"{top}/train", f"{top}/test"} <= {"/".join(n.split("/", 2)[:2]) for n in names}:
            return f"{top}/"
    return None


def _read_zip(path: Path) -> tuple[Split, Split]:
    import torch

    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path} is not a readable zip file ({e}); replace it with a good copy") from None
    with z:
        names = z.namelist()
        prefix = _zip_prefix(names)
        if prefix is None:
            raise DataError(f"{path} does not hold train/<class>/ and test/<class>/ folders")

        def split(name: str) -> Split:
            base = f"{prefix}{name}/"
            files = sorted(n for n in names if n.startswith(base) and n.lower().endswith(IMAGE_SUFFIXES))
            classes = sorted({n[len(base):].split("/", 1)[0] for n in files if "/" in n[len(base):]})
            _check_classes(classes, f"{path}:{base}")
            index = {c: i for i, c in enumerate(classes)}
            items, labels = [], []
            for n in files:
                try:
                    items.append((n, z.read(n)))
                except (zipfile.BadZipFile, OSError, zlib.error) as e:
                    raise DataError(f"{path} is damaged: cannot read {n} ({e})") from None
                labels.append(index[n[len(base):].split("/", 1)[0]])
            return Split(_decode(items, str(path)), torch.tensor(labels, dtype=torch.long))

        return split("train"), split("test")


# ------------------------------------------------------------------------------------------------
# Batches on the device
# ------------------------------------------------------------------------------------------------
def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, stream), stable across runs and machines."""
    h = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


class DeviceLoader:
    """Batches of a resident uint8 split: shuffled, augmented and normalised on its device.

    Order and augmentation depend only on (seed, epoch), set with `set_epoch`, so a resumed run
    sees exactly the batches an uninterrupted one would. Yields (x, y): x (B, C, H, W) float32
    normalised with the data set's mean/std; y (B,) int64 labels, or (B, num_classes) float
    soft labels when MixUp/CutMix are on.
    """

    RANDAUGMENT_GROUP = 16  # RandAugment draws one op set per group of images (not per batch)

    def __init__(self, split: Split, *, batch_size: int, mean, std, shuffle: bool = False,
                 drop_last: bool = False, augment: str = "none", mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0, num_classes: int = 10, seed: int = 0, pad: int = 4):
        import torch

        if augment not in ("none", "standard", "randaugment"):
            raise ValueError(f"augment={augment!r} is not one of none, standard, randaugment")
        self.split, self.batch_size, self.shuffle, self.drop_last = split, batch_size, shuffle, drop_last
        self.augment, self.pad, self.seed, self.epoch = augment, pad, seed, 0
        self.num_classes = num_classes
        self.device = split.images.device
        c = split.images.shape[1]
        # x_float = x_uint8 * scale + shift  ==  (x / 255 - mean) / std, per channel
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t
        self.mix = self._make_mix(mixup_alpha, cutmix_alpha, num_classes)
        self.randaugment = None
        if augment == "randaugment":
            from torchvision.transforms import v2

            self.randaugment = v2.RandAugment()

    @staticmethod
    def _make_mix(mixup_alpha: float, cutmix_alpha: float, num_classes: int):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            return None  # and no torchvision import: it pulls in torch._dynamo (2.6 s)
        from torchvision.transforms import v2

        mixes = []
        if mixup_alpha > 0:
            mixes.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            mixes.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        return None if not mixes else mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_images(self) -> int:
        """Images yielded per epoch."""
        return len(self) * self.batch_size if self.drop_last else len(self.split)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        n = len(self.split)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(
                _mix(self.seed, self.epoch, 0))).to(self.device)
        else:
            order = None
        gen = None
        if self.augment != "none":
            gen = torch.Generator(device=self.device).manual_seed(_mix(self.seed, self.epoch, 1))
        for step in range(len(self)):
            sl = slice(step * self.batch_size, (step + 1) * self.batch_size)
            if order is None:
                x, y = self.split.images[sl], self.split.labels[sl]
            else:
                idx = order[sl]
                x, y = self.split.images[idx], self.split.labels[idx]  # (B, C, H, W) uint8
            if gen is not None:
                x = crop_flip(x, self.pad, gen)
            if self.randaugment is not None or self.mix is not None:
                x, y = self._global_rng_augment(x, y, step)
            else:
                x = self.normalize(x)
            yield x, y

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mul_(self.scale).add_(self.shift)  # (B, C, H, W) float32

    def _global_rng_augment(self, x, y, step):
        """RandAugment / MixUp / CutMix draw from torch's global RNG: fork it, seeded per step."""
        import torch

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.manual_seed(_mix(self.seed, self.epoch, 2, step))
            if self.randaugment is not None:  # one op set per group keeps Python work per group
                x = torch.cat([self.randaugment(g) for g in x.split(self.RANDAUGMENT_GROUP)])
            x = self.normalize(x)
            if self.mix is not None:
                x, y = self.mix(x, y)
        return x, y


def crop_flip(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by `pad`, then a left-right flip with probability 1/2, each
    image its own draw, as one gather over the batch. (B, C, H, W) -> (B, C, H, W), any dtype.

    out[b, :, i, j] = padded[b, :, dy_b + i, dx_b + (W - 1 - j if flip_b else j)]
    """
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x  # (B, C, H+2p, W+2p)
    wp = w + 2 * pad
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen, device=x.device)
    flip = torch.rand(b, 1, generator=gen, device=x.device) < 0.5
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flip, w - 1 - cols, cols) + dx  # (B, W)
    rows = torch.arange(h, device=x.device) + dy  # (B, H)
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)
