"""Shared fixtures: the real CIFAR-10 data dir, a per-session decode cache, small configs, and a
small ImageFolder set built on the fly (for the tree/zip/corruption paths)."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _wno_cache_dir(tmp_path_factory):
    """Decoded data sets are cached in one temporary folder per test session (never a leftover
    from an earlier run), shared by every test and subprocess of the session."""
    if os.environ.get("WNO_CACHE_DIR"):
        yield Path(os.environ["WNO_CACHE_DIR"])
        return
    path = tmp_path_factory.mktemp("wno-cache")
    os.environ["WNO_CACHE_DIR"] = str(path)
    try:
        yield path
    finally:
        os.environ.pop("WNO_CACHE_DIR", None)


@pytest.fixture(scope="session", autouse=True)
def _isolated_stores(tmp_path_factory):
    """Every default store (Optuna file, MLflow store, checkpoints, reports) lives in a temporary
    WNO_HOME for the session, and the environment's own storage and tracking server are never
    touched: `wno train` tracks by default, and a developer's real server must not get test runs."""
    saved = {k: os.environ.get(k) for k in ("WNO_HOME", "WNO_STORAGE", "MLFLOW_TRACKING_URI",
                                             "WNO_CHECKPOINT_DIR")}
    os.environ["WNO_HOME"] = str(tmp_path_factory.mktemp("wno-home"))
    for key in ("WNO_STORAGE", "MLFLOW_TRACKING_URI", "WNO_CHECKPOINT_DIR"):
        os.environ.pop(key, None)
    try:
        yield Path(os.environ["WNO_HOME"])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """The real CIFAR-10 data dir (WNO_TEST_DATA_DIR, e.g. ../shared/data); skips when unset."""
    value = os.environ.get("WNO_TEST_DATA_DIR")
    if not value:
        pytest.skip("WNO_TEST_DATA_DIR is not set (point it at the folder holding cifar10-jpeg.zip)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"WNO_TEST_DATA_DIR={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def cifar10_splits(cifar10_dir):
    """(train, test) `Split`s of the real CIFAR-10, decoded once per session."""
    from wno.training.data import load_cifar10

    train, test, _ = load_cifar10(cifar10_dir)
    return train, test


@pytest.fixture
def make_config(tmp_path):
    """`make_config(**changes)`: a small, fast TrainConfig on the synthetic set in tmp_path.

    Defaults: micro ViT, 1,000 training images, 500 validation, 500 test, 2 epochs, batch 64, CPU.
    """
    from wno.training.config import TrainConfig

    def make(**changes):
        base = dict(model="vit", model_size="micro", dataset="synthetic", train_size=1000,
                    val_size=500, test_size=500, epochs=2, batch_size=64, lr=2e-3,
                    warmup_epochs=0.5, device="cpu", save_dir=str(tmp_path / "run"),
                    data_dir=str(tmp_path / "data"))
        base.update(changes)
        return TrainConfig(**base)

    return make


# A tiny CIFAR-shaped ImageFolder set: n images per class and split, 32x32 RGB, with the CIFAR-10
# class names, written as JPEG (train) and PNG (test) through torchvision.
def write_image_folder(root: Path, per_class: int = 3) -> Path:
    import warnings

    import torch
    from torchvision.io import encode_jpeg, encode_png

    from wno.training.data import CIFAR10_CLASSES

    g = torch.Generator().manual_seed(0)
    for split, encode, ext in (("train", encode_jpeg, "jpg"), ("test", encode_png, "png")):
        for c, name in enumerate(CIFAR10_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                # a class-dependent brightness, to check labels survive decoding
                noise = torch.randint(-8, 9, (3, 32, 32), generator=g)
                img = (20 + 22 * c + noise).clamp(0, 255).to(torch.uint8)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    encoded = encode(img)
                (folder / f"{i:04d}.{ext}").write_bytes(bytes(encoded.numpy().tobytes()))
    return root


def zip_folder(src: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                z.write(f, prefix + str(f.relative_to(src)))
    return dest


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A data dir holding a tiny CIFAR-shaped ImageFolder tree (train/<class>/, test/<class>/)."""
    return write_image_folder(tmp_path / "tree")


@pytest.fixture
def image_zip(tmp_path, image_folder) -> Path:
    """A data dir holding only `cifar10-jpeg.zip`, a zip of `image_folder`."""
    data = tmp_path / "zipdir"
    data.mkdir()
    zip_folder(image_folder, data / "cifar10-jpeg.zip")
    return data


@pytest.fixture
def wno_cmd():
    """The argv prefix that runs the real `wno` command in a subprocess."""
    exe = shutil.which("wno", path=str(REPO / ".venv" / "bin"))
    import sys

    return [exe] if exe else [sys.executable, "-m", "wno"]
