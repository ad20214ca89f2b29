"""What every benchmark module shares: one result row, and printing rows when run alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

# The offline copy of CIFAR-10 beside a checkout (the Makefile's default too).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_dir() -> Path | None:
    """Where CIFAR-10 is for the benchmarks: WNO_DATA_DIR (or WNO_TEST_DATA_DIR), else the shared
    offline copy; None when neither holds it (the suites then say they used the synthetic set)."""
    for candidate in (os.environ.get("WNO_DATA_DIR"), os.environ.get("WNO_TEST_DATA_DIR"),
                      SHARED_DATA):
        if candidate and any((Path(candidate) / name).exists()
                             for name in ("cifar10-jpeg.zip", "cifar-10-batches-py", "train")):
            return Path(candidate)
    return None


def _sig(x: float | None, digits: int = 4) -> float | None:
    """`x` to `digits` significant digits (rows hold seconds, ratios and microseconds alike)."""
    return None if x is None else float(f"{x:.{digits}g}")


def device_name() -> str:
    """The device a row is measured on: the GPU's name, else the CPU's model and core count."""
    import torch

    from wno.base.utils import cpu_model

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_model()}, {os.cpu_count()} cores"


def provenance() -> dict:
    """Where and with which code a row is measured now: device, torch version, commit."""
    import torch

    from wno.base.code_version import code_version

    code = code_version()
    return {"device": device_name(), "torch": torch.__version__.split("+")[0],
            "commit": code["commit"], "dirty": code["dirty"]}


def row(name: str, value: float | None, unit: str, baseline: float | None = None,
        notes: str = "", command: str = "") -> dict:
    """One BENCHMARKS.md row: a figure, the baseline measured in the same run, their ratio, the
    command that reruns it, and where and with which code it was measured (`provenance`). No
    value (not measured here) means no ratio."""
    ratio = value / baseline if value is not None and baseline else None
    return {"name": name, "value": _sig(value), "unit": unit,
            "baseline": _sig(baseline) if baseline else None, "ratio": _sig(ratio),
            "command": command, "notes": notes, **provenance()}


def print_rows(rows: list[dict]) -> None:
    """A readable table on stdout, then the rows as JSON (for `python -m benchmarks.bench_*`)."""
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:,.4g}"
        ratio = "" if r["ratio"] is None else f"x{r['ratio']:.3g}"
        print(f"{r['name']:<{width}}  {value:>10} {r['unit']:<9} {ratio:>8}  {r['notes']}")
    print(json.dumps(rows, indent=1))
