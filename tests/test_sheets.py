"""Image sheets (wno.training.sheets, `wno data pack`): the compact CIFAR-10 layout.

The real-data test packs the offline CIFAR-10 (WNO_TEST_DATA_DIR) and reads it back through the
CIFAR-10 loader: same counts, labels and class order as the source, pixels within the measured
error. The others use the tiny CIFAR-shaped tree of conftest and damage the sheet set in every
way a copy can be damaged.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import wno.training.data as D
from wno.base.datasets import CIFAR10_CLASSES
from wno.cli import app
from wno.training import sheets as S
from wno.training.pack import pack_cifar10
from conftest import write_image_folder, zip_folder

# Measured on the offline CIFAR-10 (quality-75 JPEGs) with `wno data pack` at quality 95, 4:4:4,
# 40x40 images a sheet (2026-12-01, Pillow 13.0 writing, torchvision 0.29.1 reading):
#   31,801,719 bytes in 39 sheets (train 26.4 MB in 32, test 5.3 MB in 7) plus the manifest;
#   mean absolute error 0.715 grey levels, worst image 1.861, largest single difference 23.
# The bounds leave room for another libjpeg build, not for another layout.
MAX_BYTES = 34_000_000
MAX_MEAN_ERROR = 0.8
MAX_IMAGE_ERROR = 2.5
MAX_PIXEL_ERROR = 40


# ------------------------------------------------------------------------------------------------
# Real CIFAR-10
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_packed_cifar10_reads_back_like_its_source(cifar10_dir, cifar10_splits, tmp_path,
                                                   monkeypatch):
    monkeypatch.delenv("WNO_CACHE_DIR")  # the default rule: the cache goes beside the sheet set
    data = tmp_path / "data"
    out = data / S.FOLDER
    result = CliRunner().invoke(app, ["data", "pack", "--data-dir", str(cifar10_dir),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "60,000 images in 39 sheets" in result.output
    assert "mean absolute error" in result.output

    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([S.MANIFEST] + [f"train-{i:03d}.jpg" for i in range(32)]
                           + [f"test-{i:03d}.jpg" for i in range(7)])
    size = sum(p.stat().st_size for p in out.iterdir())
    assert size < MAX_BYTES, f"{size:,} bytes"

    train, test, source = D.load_cifar10(data)
    assert source == str(out)
    assert S.read_manifest(out)["classes"] == list(CIFAR10_CLASSES)
    for got, want in zip((train, test), cifar10_splits):
        assert got.images.shape == want.images.shape and got.images.dtype == torch.uint8
        assert torch.equal(got.labels, want.labels)  # same images, same order, same labels
        assert torch.bincount(got.labels).tolist() == torch.bincount(want.labels).tolist()
        diff = (got.images.int() - want.images.int()).abs()
        assert 0 < diff.float().mean() < MAX_MEAN_ERROR  # 0 would mean nothing was re-encoded
        assert diff.float().mean(dim=(1, 2, 3)).max() < MAX_IMAGE_ERROR
        assert diff.max() <= MAX_PIXEL_ERROR
        del diff
    # decoded once, cached beside the set (not in it, which would grow it by 180 MB)
    assert sorted(p.name for p in out.iterdir()) == files
    assert list((data / ".wno-cache").glob("cifar10-*.pt"))


# ------------------------------------------------------------------------------------------------
# A tiny set: round trip, lookup, cache
# ------------------------------------------------------------------------------------------------
def _tiny_sheets(tmp_path: Path, columns: int = 4, rows: int = 2) -> tuple[Path, Path]:
    """(data dir, sheet folder): conftest's tiny tree (30 + 30 images) as 4 sheets a split."""
    tree = write_image_folder(tmp_path / "tree")
    train, test, _ = D.load_cifar10(tree)
    data = tmp_path / "sheets-data"
    S.write_sheets(data / S.FOLDER, {"train": (train.images, train.labels),
                                     "test": (test.images, test.labels)},
                   dataset="cifar10", classes=CIFAR10_CLASSES, columns=columns, rows=rows)
    return data, data / S.FOLDER


def test_sheets_read_like_the_tree_they_came_from(tmp_path):
    tree = write_image_folder(tmp_path / "tree")
    data, folder = _tiny_sheets(tmp_path)
    assert sorted(p.name for p in folder.glob("train-*.jpg")) == [f"train-{i:03d}.jpg"
                                                                 for i in range(4)]
    tree_train, tree_test, _ = D.load_cifar10(tree)
    train, test, source = D.load_cifar10(data)
    assert source == str(folder)
    for got, want in ((train, tree_train), (test, tree_test)):
        assert torch.equal(got.labels, want.labels)
        # each image in its own place: the tiny images differ by 22 grey levels a class
        means = (got.images.float().mean((1, 2, 3)) - want.images.float().mean((1, 2, 3))).abs()
        assert float(means.max()) < 1.0
        # their pixels are uniform noise of +-8, JPEG's worst case (CIFAR-10's error is 0.7)
        assert float((got.images.int() - want.images.int()).abs().float().mean()) < 4.0
    # a data directory that is itself a sheet set is read the same way
    again, _, source = D.load_cifar10(folder)
    assert source == str(folder) and torch.equal(again.images, train.images)


def test_every_image_keeps_its_own_pixels(tmp_path):
    """Neighbours on a sheet do not bleed into each other: images of flat, very different
    colours come back flat (4:4:4 and 8-aligned cells; 4:2:0 would blur their borders)."""
    g = torch.Generator().manual_seed(1)
    colours = torch.randint(0, 256, (9, 3, 1, 1), generator=g, dtype=torch.uint8)
    images = colours.expand(9, 3, 32, 32).contiguous()
    labels = torch.arange(9) % 3
    S.write_sheets(tmp_path / "s", {"train": (images, labels)}, dataset="flat",
                   classes=["a", "b", "c"], columns=3, rows=2)
    back, back_labels = S.read_sheets(tmp_path / "s").splits["train"]
    assert torch.equal(back_labels, labels)
    assert (back.int() - images.int()).abs().max() <= 2


def test_lookup_order_prefers_the_lossless_sources(tmp_path, image_folder):
    """A data directory holding the zip and a sheet set reads the zip (the sheets are a lossy
    copy of it); without the zip it reads the sheets."""
    data, folder = _tiny_sheets(tmp_path)
    zip_folder(image_folder, data / "cifar10-jpeg.zip")
    assert D.load_cifar10(data)[2].endswith("cifar10-jpeg.zip")
    (data / "cifar10-jpeg.zip").unlink()
    assert D.load_cifar10(data)[2] == str(folder)


def test_sheets_are_cached_beside_the_set(tmp_path, monkeypatch):
    data, folder = _tiny_sheets(tmp_path)
    monkeypatch.delenv("WNO_CACHE_DIR")
    first, _, _ = D.load_cifar10(data)
    (path,) = (data / ".wno-cache").glob("cifar10-*.pt")
    assert not list(folder.glob(".wno-cache"))
    blob = torch.load(path, weights_only=True)
    blob["train_images"][0] = 7
    torch.save(blob, path)
    cached, _, _ = D.load_cifar10(data)  # from the cache, not the sheets
    assert (cached.images[0] == 7).all()
    # a set packed again (a new manifest) is decoded again, not taken from the old cache
    S.write_sheets(folder, {"train": (first.images, first.labels),
                            "test": (first.images[:10], first.labels[:10])},
                   dataset="cifar10", classes=CIFAR10_CLASSES, replace=True)
    train, test, _ = D.load_cifar10(data)
    assert not (train.images[0] == 7).all() and len(test) == 10


# ------------------------------------------------------------------------------------------------
# Damaged and partial sets: refused, naming the file and what to do
# ------------------------------------------------------------------------------------------------
def _edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / S.MANIFEST).read_text())
    change(manifest)
    (folder / S.MANIFEST).write_text(json.dumps(manifest))


def _refused(data: Path, pattern: str) -> None:
    with pytest.raises(D.DataError, match=pattern):
        D.load_cifar10(data)


def test_missing_sheets_are_named_as_a_partial_set(tmp_path):
    data, folder = _tiny_sheets(tmp_path)
    (folder / "train-002.jpg").unlink()
    (folder / "train-003.jpg").unlink()
    _refused(data, r"partial sheet set: 2 of 4 sheets .* missing \(train-002.jpg, train-003.jpg\)")


def test_sheets_without_their_manifest_are_a_partial_copy(tmp_path):
    data, folder = _tiny_sheets(tmp_path)
    (folder / S.MANIFEST).unlink()
    _refused(data, r"holds image sheets but no sheets.json: a partial copy")


@pytest.mark.parametrize("damage, pattern", [
    (lambda b: b[: len(b) // 2], r"train-001.jpg has \d+ bytes, the manifest says \d+: truncated"),
    (lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:], r"train-001.jpg does not match its sha256"),
], ids=["truncated", "bit-flip"])
def test_damaged_sheets_are_refused(tmp_path, damage, pattern):
    data, folder = _tiny_sheets(tmp_path)
    path = folder / "train-001.jpg"
    path.write_bytes(damage(path.read_bytes()))
    _refused(data, pattern)


def test_a_sheet_of_the_wrong_geometry_is_refused(tmp_path):
    """A sheet that matches its checksum but not the grid (e.g. a manifest edited by hand)."""
    import hashlib

    data, folder = _tiny_sheets(tmp_path)
    wrong = S._encode_sheet(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), 8, 95)  # 8 columns
    (folder / "train-000.jpg").write_bytes(wrong)

    def fix(m):
        m["splits"]["train"]["sheets"][0].update(bytes=len(wrong),
                                                 sha256=hashlib.sha256(wrong).hexdigest())
    _edit_manifest(folder, fix)
    _refused(data, r"train-000.jpg is 256x32 pixels .* need 128x64")


@pytest.mark.parametrize("change, pattern", [
    (lambda m: m["classes"].reverse(), r"class folders \['truck', .*CIFAR-10 needs exactly "
                                       r"\['airplane'"),
    (lambda m: m.update(version=2), r"version 2; this wno reads version 1"),
    (lambda m: m.update(format="zip"), r"not a wno-image-sheets manifest"),
    (lambda m: m["splits"]["train"].update(images=31), r"its sheets hold 30 images, the manifest "
                                                       r"says 31"),
    (lambda m: m["splits"]["train"]["sheets"][0]["labels"].__setitem__(0, 10),
     r"labels must be 8 integers in 0..9"),
    (lambda m: m["splits"]["test"]["sheets"][0].update(file="../../etc/passwd"),
     r"file '../../etc/passwd' must be test-000.jpg"),
    (lambda m: m["splits"]["train"]["sheets"][0].update(images=5),
     r"only a split's last sheet may hold fewer than 8 images"),
    (lambda m: m["splits"].pop("test"), r"has the splits \['train'\]; \['test'\] are needed"),
], ids=["class-order", "version", "format", "count", "label-range", "path", "short-sheet",
        "no-test-split"])
def test_bad_manifests_are_refused(tmp_path, change, pattern):
    data, folder = _tiny_sheets(tmp_path)
    _edit_manifest(folder, change)
    _refused(data, pattern)


def test_unreadable_manifest_is_refused(tmp_path):
    data, folder = _tiny_sheets(tmp_path)
    (folder / S.MANIFEST).write_text('{"format": "wno-image-sheets", ')
    _refused(data, r"sheets.json cannot be read as JSON")


# ------------------------------------------------------------------------------------------------
# Writing: atomic, refuses to overwrite, checks its input
# ------------------------------------------------------------------------------------------------
def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    images = torch.zeros(20, 3, 32, 32, dtype=torch.uint8)
    calls = []

    def failing(chunk, columns, quality):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(chunk, columns, quality)

    real = S._encode_sheet
    monkeypatch.setattr(S, "_encode_sheet", failing)
    with pytest.raises(OSError, match="disk full"):
        S.write_sheets(tmp_path / "out", {"train": (images, torch.zeros(20, dtype=torch.long))},
                       dataset="x", classes=["a"], columns=2, rows=2)
    assert os.listdir(tmp_path) == []  # no set, no temporary folder


@pytest.mark.parametrize("kwargs, pattern", [
    ({"quality": 0}, r"quality=0 is not a JPEG quality: choose 1 to 100"),
    ({"images": torch.zeros(2, 3, 30, 30, dtype=torch.uint8)}, r"multiples of 8"),
    ({"images": torch.zeros(2, 3, 32, 32)}, r"must be \(N, C, H, W\) uint8"),
    ({"labels": torch.tensor([0, 5])}, r"labels must lie in 0..1"),
], ids=["quality", "size", "dtype", "labels"])
def test_write_refuses_bad_input(tmp_path, kwargs, pattern):
    images = kwargs.pop("images", torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    labels = kwargs.pop("labels", torch.tensor([0, 1]))
    with pytest.raises(S.SheetError, match=pattern):
        S.write_sheets(tmp_path / "out", {"train": (images, labels)}, dataset="x",
                       classes=["a", "b"], **kwargs)
    assert not (tmp_path / "out").exists()


def test_pack_refuses_a_non_empty_folder_and_replaces_only_a_sheet_set(tmp_path, image_folder):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    runner = CliRunner()
    result = runner.invoke(app, ["data", "pack", "--data-dir", str(image_folder), "--out", str(out)])
    assert result.exit_code == 2
    assert "exists and is not empty" in result.output and "--replace" in result.output
    result = runner.invoke(app, ["data", "pack", "--data-dir", str(image_folder), "--out", str(out),
                                 "--replace"])
    assert result.exit_code == 2 and "is not a sheet set" in result.output
    assert os.listdir(out) == ["notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out", "tree"]  # no temporary folder left

    fresh = tmp_path / "fresh"
    assert runner.invoke(app, ["data", "pack", "--data-dir", str(image_folder),
                               "--out", str(fresh)]).exit_code == 0
    first = (fresh / S.MANIFEST).read_bytes()
    result = runner.invoke(app, ["data", "pack", "--data-dir", str(image_folder), "--out",
                                 str(fresh), "--replace", "--quality", "80"])
    assert result.exit_code == 0, result.output
    assert (fresh / S.MANIFEST).read_bytes() != first
    assert S.read_manifest(fresh)["jpeg"]["quality"] == 80


def test_pack_cli_as_a_subprocess(tmp_path, image_folder, wno_cmd):
    """The real command: packs a tree, prints the measured error; damaged input exits 2 naming
    the sheet; no data at all exits 3 and writes nothing."""
    out = tmp_path / "data" / S.FOLDER
    run = subprocess.run([*wno_cmd, "data", "pack", "--data-dir", str(image_folder),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "60 images in 2 sheets" in run.stdout and "mean absolute error" in run.stdout
    (out / "test-000.jpg").write_bytes(b"\xff\xd8\xff")
    again = subprocess.run([*wno_cmd, "data", "pack", "--data-dir", str(tmp_path / "data"),
                            "--out", str(tmp_path / "copy")], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 2
    assert "test-000.jpg has 3 bytes" in again.stderr and "wno data pack" in again.stderr
    assert not (tmp_path / "copy").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = subprocess.run([*wno_cmd, "data", "pack", "--data-dir", str(empty),
                              "--out", str(tmp_path / "none")], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "WNO_OFFLINE": "1"})
    assert missing.returncode == 3, missing.stderr
    assert "cifar10-sheets" in missing.stderr and not (tmp_path / "none").exists()


def test_pack_reports_what_it_measured(tmp_path, image_folder):
    report = pack_cifar10(image_folder, tmp_path / "s")
    assert report.splits == {
        "train": {"images": 30, "sheets": 1, "bytes": (tmp_path / "s" / "train-000.jpg").stat().st_size},
        "test": {"images": 30, "sheets": 1, "bytes": (tmp_path / "s" / "test-000.jpg").stat().st_size}}
    assert 0 < report.mean_abs_error <= report.worst_image_error <= report.max_pixel_error
