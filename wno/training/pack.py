"""`wno data pack`: a data set, from any source its loader reads, written as image sheets.

The copy is read back through the sheet reader and compared with the source image by image, so
the report states what the lossy re-encoding cost (mean absolute error in grey levels, the worst
image's, the largest single pixel's) next to the size it saved. See `wno.training.sheets` for the
layout and docs/offline.md for why it exists.

Example (needs CIFAR-10 in ./data):
    >>> report = pack_cifar10("data", "data/cifar10-sheets")  # doctest: +SKIP
    >>> print("\\n".join(report.lines()))  # doctest: +SKIP
    wrote data/cifar10-sheets: 60,000 images in 39 sheets, 31.7 MB (JPEG quality 95, 4:4:4)
    ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wno.base.datasets import CIFAR10_CLASSES
from wno.training.data import load_cifar10
from wno.training.sheets import DEFAULT_QUALITY, SheetError, read_sheets, write_sheets

CHUNK = 5000


@dataclass
class PackReport:
    """What `pack_cifar10` wrote and how far its pixels are from the source's."""

    out: Path
    source: str
    quality: int
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  # images, sheets, bytes
    mean_abs_error: float = 0.0  # grey levels, over every pixel and channel
    worst_image_error: float = 0.0  # the largest per-image mean absolute error
    max_pixel_error: int = 0  # the largest single difference

    @property
    def total_bytes(self) -> int:
        return sum(s["bytes"] for s in self.splits.values())

    def lines(self) -> list[str]:
        images = sum(s["images"] for s in self.splits.values())
        sheets = sum(s["sheets"] for s in self.splits.values())
        out = [f"wrote {self.out}: {images:,} images in {sheets} sheets, "
               f"{self.total_bytes / 1e6:.1f} MB (JPEG quality {self.quality}, 4:4:4) from "
               f"{self.source}"]
        out += [f"  {name}: {s['images']:,} images, {s['sheets']} sheets, {s['bytes'] / 1e6:.1f} MB"
                for name, s in self.splits.items()]
        out.append(f"  pixels against the source: mean absolute error {self.mean_abs_error:.3f} "
                   f"grey levels, worst image {self.worst_image_error:.3f}, largest single "
                   f"difference {self.max_pixel_error}")
        return out


def pack_cifar10(data_dir: str | Path, out: str | Path, *, quality: int = DEFAULT_QUALITY,
                 replace: bool = False) -> PackReport:
    """Read CIFAR-10 from `data_dir` (any source `load_cifar10` finds) and write it as a sheet
    set in `out`; read it back and measure the difference."""
    train, test, source = load_cifar10(data_dir)
    parts = {"train": train, "test": test}
    write_sheets(out, {name: (s.images, s.labels) for name, s in parts.items()},
                 dataset="cifar10", classes=CIFAR10_CLASSES, quality=quality,
                 source=Path(source).name, replace=replace)
    back = read_sheets(out)
    report = PackReport(Path(out), source, quality)
    total_error, total_values = 0, 0
    for name, split in parts.items():
        images, labels = back.splits[name]
        if not (labels.equal(split.labels) and images.shape == split.images.shape):
            # the writer keeps order and labels by construction; a mismatch is a bug, not input
            raise SheetError(f"{out}: split {name} did not read back as written")
        # in chunks: the int32 differences of 50,000 images at once would take 600 MB
        for start in range(0, len(labels), CHUNK):
            part = slice(start, start + CHUNK)
            diff = (images[part].int() - split.images[part].int()).abs()  # (n, C, H, W)
            total_error += int(diff.sum())
            total_values += diff.numel()
            report.worst_image_error = max(report.worst_image_error,
                                           float(diff.float().mean(dim=(1, 2, 3)).max()))
            report.max_pixel_error = max(report.max_pixel_error, int(diff.max()))
        sheets = back.manifest["splits"][name]["sheets"]
        report.splits[name] = {"images": len(labels), "sheets": len(sheets),
                               "bytes": sum(s["bytes"] for s in sheets)}
    report.mean_abs_error = total_error / total_values
    return report
