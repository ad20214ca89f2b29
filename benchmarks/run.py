"""`make bench`: run every benchmark and write BENCHMARKS.md.

Each module in SUITES exposes `run() -> list[dict]` rows (name, value, unit, baseline, ratio,
command, notes): a figure, the baseline measured in the same run, their ratio, and the command
that reruns just that row. This file only collects them and writes the table.

    python -m benchmarks.run --out BENCHMARKS.md            # everything
    python -m benchmarks.run --only model,data --out -      # some suites, to stdout
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import sys
import time
import traceback

SUITES = ("model", "gpu", "training", "data", "queue", "tracking", "report")


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def render(results: dict[str, list[dict]], errors: dict[str, str], seconds: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine()}, by `make bench` "
        f"({seconds / 60:.0f} min). Every ratio is against a baseline measured in the same run "
        "(these machines are noisy: compare ratios, not seconds). Rerun a row with its command.",
        "",
    ]
    for suite, rows in results.items():
        lines += [f"## {suite}", "",
                  "| benchmark | value | unit | baseline | ratio | notes | rerun |",
                  "|---|---:|---|---:|---:|---|---|"]
        for r in rows:
            lines.append(f"| {r['name']} | {_fmt(r.get('value'))} | {r.get('unit', '')} | "
                         f"{_fmt(r.get('baseline'))} | {_fmt(r.get('ratio'))} | "
                         f"{r.get('notes', '')} | `{r.get('command', '')}` |")
        lines.append("")
    for suite, err in errors.items():
        lines += [f"## {suite}", "", f"Not measured in this run: `{err}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    parser.add_argument("--out", default="BENCHMARKS.md", help="file to write, or - for stdout")
    args = parser.parse_args()
    start = time.perf_counter()
    results, errors = {}, {}
    for suite in args.only.split(","):
        print(f"[bench] {suite} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.bench_{suite}")
            results[suite] = module.run()
        except Exception as e:  # one broken suite must not hide the others' figures
            traceback.print_exc()
            errors[suite] = f"{type(e).__name__}: {e}"
    text = render(results, errors, time.perf_counter() - start)
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
