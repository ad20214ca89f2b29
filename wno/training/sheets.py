"""Image sheets: a data set's images tiled into large JPEG files, so CIFAR-10 travels in ~32 MB.

A quality-75 JPEG of one 32x32 image is about 1 KB, of which some 600 bytes are headers
(quantisation and Huffman tables). Tiling the images into sheets pays those headers once per
sheet: all 60,000 CIFAR-10 images take about 32 MB at quality 95 (against 62 MB for the zip of
single files), which fits a 64 MiB transfer to an offline machine beside the code and its wheels.

Layout of a sheet set (a folder; the loaders look for `<data dir>/cifar10-sheets/` or a data
directory that is itself one):

    sheets.json        the manifest (below)
    train-000.jpg      sheets of `columns` images per row and up to `rows` rows, filled row-major
    train-001.jpg      in the split's order; the last sheet of a split has only the rows it needs
    ...                (cells after its last image are black)
    test-000.jpg ...

`sheets.json`:

    {"format": "wno-image-sheets", "version": 1, "dataset": "cifar10",
     "classes": ["airplane", ...],          # label order: label i is classes[i]
     "image_size": [32, 32], "channels": 3, "columns": 40, "rows": 40,
     "jpeg": {"quality": 95, "subsampling": "4:4:4"}, "source": "cifar10-jpeg.zip",
     "splits": {"train": {"images": 50000, "sheets": [
         {"file": "train-000.jpg", "images": 1600, "bytes": 812345, "sha256": "...",
          "labels": [6, 9, 9, ...]}, ...]}, "test": {...}}}

Why these choices:
- Image sides are multiples of 8 and chroma is not subsampled (4:4:4), so every 8x8 JPEG block
  lies inside one image and no decoder step mixes neighbours: each image decodes exactly as it
  would alone at that quality. With 4:2:0 the decoder's chroma upsampling would blend the
  colours at an image's border with its neighbour's.
- Each sheet's sha256 and byte size are in the manifest, so a truncated, damaged or missing
  sheet is refused with its name before anything is decoded, and a partial copy of the set is
  told apart from a complete one.
- Sheets are written to a temporary folder beside the destination and renamed into place: a
  reader sees the old set, the new one, or none, never half of one.

Example (tiny fabricated images; real sets come from `wno data pack`):
    >>> import tempfile, torch
    >>> folder = Path(tempfile.mkdtemp()) / "sheets"
    >>> images = torch.zeros(5, 3, 32, 32, dtype=torch.uint8)
    >>> labels = torch.tensor([0, 1, 2, 1, 0])
    >>> manifest = write_sheets(folder, {"train": (images, labels), "test": (images, labels)},
    ...                         dataset="toy", classes=["a", "b", "c"], columns=4, rows=2)
    >>> [s["file"] for s in manifest["splits"]["train"]["sheets"]]
    ['train-000.jpg']
    >>> sheet_set = read_sheets(folder)
    >>> sheet_set.splits["test"][0].shape, sheet_set.splits["test"][1].tolist()
    (torch.Size([5, 3, 32, 32]), [0, 1, 2, 1, 0])
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported lazily, as in wno.training.data
    import torch

FORMAT = "wno-image-sheets"
VERSION = 1
MANIFEST = "sheets.json"
FOLDER = "cifar10-sheets"  # the folder name the CIFAR-10 loader looks for in a data directory
DEFAULT_QUALITY = 95  # mean absolute error ~0.7 grey levels against the quality-75 source
DEFAULT_COLUMNS = DEFAULT_ROWS = 40  # 1,600 images per 1280x1280 sheet (size made no difference)
MAX_SHEET_SIDE = 65_500  # JPEG's limit is 65,535 pixels per side
_SHEET_NAME = re.compile(r"^(?P<split>[a-z][a-z0-9_]*)-(?P<index>\d{3,6})\.jpg$")
_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SheetError(ValueError):
    """A sheet set that cannot be read: the message names the file and what was wrong."""


@dataclass
class SheetSet:
    """A decoded sheet set: per split (images (N, C, H, W) uint8, labels (N,) int64)."""

    folder: Path
    manifest: dict[str, Any]
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]


def find_manifest(data_dir: str | Path) -> Path | None:
    """The sheet manifest a data directory holds: `<dir>/sheets.json` (the directory is a sheet
    set) or `<dir>/cifar10-sheets/sheets.json`; None when neither exists."""
    data_dir = Path(data_dir)
    for folder in (data_dir, data_dir / FOLDER):
        if (folder / MANIFEST).is_file():
            return folder / MANIFEST
    return None


def is_partial(data_dir: str | Path) -> Path | None:
    """A `cifar10-sheets/` folder (or sheet files) without its manifest: a partial copy."""
    data_dir = Path(data_dir)
    for folder in (data_dir / FOLDER, data_dir):
        if folder.is_dir() and not (folder / MANIFEST).exists() and any(
                _SHEET_NAME.match(p.name) for p in folder.glob("*.jpg")):
            return folder
    return None


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def write_sheets(folder: str | Path, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], *,
                 dataset: str, classes: list[str] | tuple[str, ...], quality: int = DEFAULT_QUALITY,
                 columns: int = DEFAULT_COLUMNS, rows: int = DEFAULT_ROWS, source: str = "",
                 replace: bool = False) -> dict[str, Any]:
    """Write `splits` ({name: (images (N, C, H, W) uint8, labels (N,))}) as a sheet set in `folder`.

    `folder` must not exist (or be empty), unless `replace` is set and it holds a sheet set; the
    new set is written beside it and renamed into place. Returns the manifest.
    """
    folder = Path(folder)
    _check_write_args(splits, classes, quality, columns, rows)
    first = next(iter(splits.values()))[0]
    channels, height, width = (int(s) for s in first.shape[1:])
    _check_destination(folder, replace)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".partial"))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the set private to its writer
        manifest: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "dataset": dataset, "classes": list(classes),
            "image_size": [height, width], "channels": channels, "columns": columns,
            "rows": rows, "jpeg": {"quality": quality, "subsampling": "4:4:4"},
            "source": source, "splits": {}}
        for name, (images, labels) in splits.items():
            sheets = []
            per_sheet = columns * rows
            for index, start in enumerate(range(0, len(images), per_sheet)):
                chunk = images[start:start + per_sheet]
                data = _encode_sheet(chunk, columns, quality)
                file = f"{name}-{index:03d}.jpg"
                (tmp / file).write_bytes(data)
                sheets.append({"file": file, "images": len(chunk), "bytes": len(data),
                               "sha256": hashlib.sha256(data).hexdigest(),
                               "labels": [int(v) for v in labels[start:start + per_sheet]]})
            manifest["splits"][name] = {"images": len(images), "sheets": sheets}
        (tmp / MANIFEST).write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
        _fsync_folder(tmp)
        _swap_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_write_args(splits, classes, quality, columns, rows) -> None:
    import torch

    if not splits:
        raise SheetError("no splits to write")
    if not 1 <= quality <= 100:
        raise SheetError(f"quality={quality} is not a JPEG quality: choose 1 to 100")
    if columns < 1 or rows < 1:
        raise SheetError(f"columns={columns}, rows={rows}: both must be at least 1")
    if len(classes) < 1 or len(set(classes)) != len(classes):
        raise SheetError(f"classes must be distinct names, got {list(classes)}")
    shapes = set()
    for name, (images, labels) in splits.items():
        if not _SPLIT_NAME.match(name):
            raise SheetError(f"split name {name!r} must be lower-case letters, digits and _")
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise SheetError(f"split {name}: images must be (N, C, H, W) uint8, got "
                             f"{tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels) or len(images) == 0:
            raise SheetError(f"split {name}: {len(images)} images and {len(labels)} labels; "
                             "need the same number, at least one")
        if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < len(classes)):
            raise SheetError(f"split {name}: labels must lie in 0..{len(classes) - 1}")
        shapes.add(tuple(images.shape[1:]))
    if len(shapes) != 1:
        raise SheetError(f"every split needs the same image shape, got {sorted(shapes)}")
    c, h, w = shapes.pop()
    if c not in (1, 3) or h % 8 or w % 8:
        raise SheetError(f"images of {c} channels, {h}x{w}: sheets need 1 or 3 channels and "
                         "sides that are multiples of 8 (so no JPEG block straddles two images)")
    if columns * w > MAX_SHEET_SIDE or rows * h > MAX_SHEET_SIDE:
        raise SheetError(f"a sheet of {columns}x{rows} images of {h}x{w} exceeds JPEG's "
                         f"{MAX_SHEET_SIDE} pixels per side")


def _check_destination(folder: Path, replace: bool) -> None:
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return
    if not folder.is_dir():
        raise SheetError(f"{folder} exists and is not a folder; choose a new folder for the sheets")
    if not replace:
        raise SheetError(f"{folder} exists and is not empty; choose a new folder, or replace a "
                         "sheet set there with --replace")
    if not (folder / MANIFEST).is_file():
        raise SheetError(f"{folder} is not a sheet set (no {MANIFEST}); --replace only replaces "
                         "a sheet set, choose another folder")


def _swap_into_place(tmp: Path, folder: Path) -> None:
    """Rename the finished set into place; an old set is moved aside first and then deleted."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _encode_sheet(images: torch.Tensor, columns: int, quality: int) -> bytes:
    """(n, C, H, W) uint8 -> one JPEG of `columns` x ceil(n / columns) cells, 4:4:4."""
    import torch
    from PIL import Image

    n, c, h, w = images.shape
    rows = math.ceil(n / columns)
    cells = torch.zeros(rows * columns, c, h, w, dtype=torch.uint8)
    cells[:n] = images
    sheet = cells.view(rows, columns, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, columns * w, c)
    array = sheet.numpy() if c == 3 else sheet[..., 0].numpy()
    buf = io.BytesIO()
    # subsampling=0 is 4:4:4 (see the module docstring); optimize: per-sheet Huffman tables
    Image.fromarray(array).save(buf, "JPEG", quality=quality, subsampling=0, optimize=True)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The checked manifest of the sheet set in `folder` (no sheet is opened)."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SheetError(f"{folder} has no {MANIFEST}: not a sheet set, or a partial copy of "
                         "one; copy the whole folder or write it again with `wno data pack`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SheetError(f"{path} cannot be read as JSON ({e}); write the set again with "
                         "`wno data pack`") from None
    _check_manifest(manifest, path)
    return manifest


def _check_manifest(m: Any, path: Path) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise SheetError(f"{path}: {what}; write the set again with `wno data pack`")

    need(isinstance(m, dict) and m.get("format") == FORMAT, f"not a {FORMAT} manifest")
    need(m.get("version") == VERSION, f"version {m.get('version')!r}; this wno reads version "
         f"{VERSION} (a newer wno wrote it?)")
    classes = m.get("classes")
    need(isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
         and len(set(classes)) == len(classes), "classes must be a list of distinct names")
    size = m.get("image_size")
    need(isinstance(size, list) and len(size) == 2 and all(_int(s) and s > 0 and s % 8 == 0
                                                          for s in size),
         "image_size must be [height, width], multiples of 8")
    need(m.get("channels") in (1, 3), "channels must be 1 or 3")
    need(_int(m.get("columns")) and m["columns"] > 0 and _int(m.get("rows")) and m["rows"] > 0,
         "columns and rows must be positive integers")
    splits = m.get("splits")
    need(isinstance(splits, dict) and splits, "splits must name at least one split")
    per_sheet = m["columns"] * m["rows"]
    for name, split in splits.items():
        need(isinstance(split, dict) and _int(split.get("images"))
             and isinstance(split.get("sheets"), list) and split["sheets"],
             f"split {name!r} needs an image count and a list of sheets")
        total = 0
        for i, sheet in enumerate(split["sheets"]):
            where = f"split {name!r}, sheet {i}"
            need(isinstance(sheet, dict), f"{where} is not an object")
            match = _SHEET_NAME.match(str(sheet.get("file", "")))
            # the name pattern also keeps a manifest from pointing outside its folder
            need(bool(match) and match["split"] == name and int(match["index"]) == i,
                 f"{where}: file {sheet.get('file')!r} must be {name}-{i:03d}.jpg")
            n = sheet.get("images")
            need(_int(n) and 0 < n <= per_sheet, f"{where}: images must be 1..{per_sheet}")
            need(i == len(split["sheets"]) - 1 or n == per_sheet,
                 f"{where}: only a split's last sheet may hold fewer than {per_sheet} images")
            labels = sheet.get("labels")
            need(isinstance(labels, list) and len(labels) == n
                 and all(_int(v) and 0 <= v < len(classes) for v in labels),
                 f"{where}: labels must be {n} integers in 0..{len(classes) - 1}")
            need(_int(sheet.get("bytes")) and isinstance(sheet.get("sha256"), str)
                 and len(sheet["sha256"]) == 64, f"{where}: bytes and sha256 are required")
            total += n
        need(total == split["images"], f"split {name!r}: its sheets hold {total} images, "
             f"the manifest says {split['images']}")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_sheets(folder: str | Path, splits: tuple[str, ...] | None = None) -> SheetSet:
    """Decode the sheet set in `folder`: every sheet checked (present, size, sha256, geometry)
    before its images are cut out. `splits`: the splits to read (default: all), each required."""
    import torch

    folder = Path(folder)
    manifest = read_manifest(folder)
    wanted = tuple(manifest["splits"]) if splits is None else splits
    missing = [s for s in wanted if s not in manifest["splits"]]
    if missing:
        raise SheetError(f"{folder / MANIFEST} has the splits {list(manifest['splits'])}; "
                         f"{missing} are needed")
    data = {name: _sheet_bytes(folder, manifest["splits"][name]["sheets"]) for name in wanted}
    out = {}
    h, w = manifest["image_size"]
    c, columns = manifest["channels"], manifest["columns"]
    for name in wanted:
        sheets = manifest["splits"][name]["sheets"]
        images = torch.empty(manifest["splits"][name]["images"], c, h, w, dtype=torch.uint8)
        labels = []
        at = 0
        for sheet, blob in zip(sheets, data[name]):
            n = sheet["images"]
            images[at:at + n] = _decode_sheet(folder / sheet["file"], blob, n, c, h, w, columns)
            labels.extend(sheet["labels"])
            at += n
        out[name] = (images, torch.tensor(labels, dtype=torch.long))
    return SheetSet(folder, manifest, out)


def _sheet_bytes(folder: Path, sheets: list[dict]) -> list[bytes]:
    """Every sheet's bytes, checked against the manifest; all missing ones named at once."""
    absent = [s["file"] for s in sheets if not (folder / s["file"]).is_file()]
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise SheetError(f"{folder} is a partial sheet set: {len(absent)} of {len(sheets)} sheets "
                         f"of a split are missing ({shown}); copy the whole folder or write it "
                         "again with `wno data pack`")
    out = []
    for s in sheets:
        path = folder / s["file"]
        blob = path.read_bytes()
        if len(blob) != s["bytes"]:
            raise SheetError(f"{path} has {len(blob)} bytes, the manifest says {s['bytes']}: "
                             "truncated or replaced; copy it again or write the set again "
                             "with `wno data pack`")
        if hashlib.sha256(blob).hexdigest() != s["sha256"]:
            raise SheetError(f"{path} does not match its sha256 in {MANIFEST}: damaged; copy it "
                             "again or write the set again with `wno data pack`")
        out.append(blob)
    return out


def _decode_sheet(path: Path, blob: bytes, n: int, c: int, h: int, w: int,
                  columns: int) -> torch.Tensor:
    """One sheet's bytes -> its n images (n, C, H, W) uint8, decoded like the other loaders'."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    rows = math.ceil(n / columns)
    try:
        with warnings.catch_warnings():  # "superseded by TorchCodec": still works in 0.29
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_image(torch.frombuffer(bytearray(blob), dtype=torch.uint8),
                               mode=ImageReadMode.RGB if c == 3 else ImageReadMode.GRAY)
    except RuntimeError as e:
        raise SheetError(f"cannot decode {path}: {e}") from None
    if tuple(img.shape) != (c, rows * h, columns * w):
        raise SheetError(f"{path} is {img.shape[2]}x{img.shape[1]} pixels with {img.shape[0]} "
                         f"channels; {n} images in {columns} columns of {w}x{h} need "
                         f"{columns * w}x{rows * h} with {c}")
    cells = img.view(c, rows, h, columns, w).permute(1, 3, 0, 2, 4).reshape(rows * columns, c, h, w)
    return cells[:n]  # (n, C, H, W)
