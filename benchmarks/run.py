"""`make bench`: run every benchmark and write BENCHMARKS.md.

Each module in SUITES exposes `run() -> list[dict]` rows (name, value, unit, baseline, ratio,
command, notes): a figure, the baseline measured in the same run, their ratio, and the command
that reruns just that row. This file only collects them and writes the table.

    python -m benchmarks.run --out BENCHMARKS.md            # everything
    python -m benchmarks.run --only model,data --out -      # some suites, to stdout
    python -m benchmarks.run --only queue --keep-others --out BENCHMARKS.md
                                  # rewrite the queue section, keep the others as they are
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

SUITES = ("model", "gpu", "training", "data", "queue", "tracking", "report")


def machine() -> str:
    import torch

    from wno.base.utils import cpu_model

    cpu = cpu_model()
    gpu = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def render_section(suite: str, rows: list[dict] | None, error: str | None = None,
                   note: str = "") -> str:
    """One suite's section: its heading, an optional note, and its table (or why it has none)."""
    lines = [f"## {suite}", ""]
    if note:
        lines += [note, ""]
    if error is not None:
        return "\n".join(lines + [f"Not measured in this run: `{error}`", ""]) + "\n"
    lines += ["| benchmark | value | unit | baseline | ratio | notes | measured on | rerun |",
              "|---|---:|---|---:|---:|---|---|---|"]
    for r in rows or []:
        lines.append(f"| {r['name']} | {_fmt(r.get('value'))} | {r.get('unit', '')} | "
                     f"{_fmt(r.get('baseline'))} | {_fmt(r.get('ratio'))} | "
                     f"{r.get('notes', '')} | {measured_on(r)} | `{r.get('command', '')}` |")
    return "\n".join(lines + [""]) + "\n"


STALE = " **STALE: measured on older code**"
# What a measurement depends on: a commit that changed only docs leaves its rows current.
CODE_PATHS = ("wno", "benchmarks", "pyproject.toml")


def measured_on(r: dict) -> str:
    """'<device>, torch <v>, <commit>', and STALE when the row's code is not the code now: a
    figure measured on older code is kept, never passed off as current."""
    commit = r.get("commit")
    text = (f"{r.get('device') or 'unknown device'}, torch {r.get('torch') or '?'}, "
            + (f"commit {commit[:10]}" if commit else "commit unknown")
            + (" (uncommitted changes)" if r.get("dirty") else ""))
    return text + (STALE if is_stale(commit) else "")


@functools.cache
def is_stale(commit: str | None) -> bool:
    """Whether the code (CODE_PATHS) differs between `commit` and HEAD; an unknown commit is."""
    if not commit:
        return True
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(["git", "-C", str(root), "diff", "--quiet", commit, "HEAD", "--",
                          *CODE_PATHS], capture_output=True)
    return run.returncode != 0  # 1: differs; 128: a commit this clone does not know


def remark(section: str) -> str:
    """A kept section with STALE added to each row whose commit's code is no longer HEAD's:
    a section not rerun grows old as the code moves on."""
    def mark(line: str) -> str:
        found = re.search(r"commit ([0-9a-f]{7,40})", line)
        if not line.startswith("| ") or STALE in line or not found:
            return line
        if not is_stale(_full(found.group(1))):
            return line
        cells = line.rstrip("\n").split(" | ")
        cells[-2] += STALE  # the "measured on" cell, before the command
        return " | ".join(cells) + ("\n" if line.endswith("\n") else "")
    return "".join(mark(line) for line in section.splitlines(keepends=True))


def _full(prefix: str) -> str | None:
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet",
                          f"{prefix}^{{commit}}"], capture_output=True, text=True)
    return run.stdout.strip() or None


def render(results: dict[str, list[dict]], errors: dict[str, str], seconds: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine()}, by `make bench` "
        f"({seconds / 60:.0f} min). Every ratio is against a baseline measured in the same run "
        "(these machines are noisy: compare ratios, not seconds). Rerun a row with its command.",
        "",
    ]
    body = "".join(render_section(suite, rows) for suite, rows in results.items())
    body += "".join(render_section(suite, None, err) for suite, err in errors.items())
    return ("\n".join(lines) + "\n" + body).rstrip("\n") + "\n"


def split_sections(text: str) -> tuple[str, dict[str, str]]:
    """(everything before the first `## ` heading, {suite: its section's text})."""
    head, sections, current = [], {}, None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = ""
        if current is None:
            head.append(line)
        else:
            sections[current] += line
    return "".join(head), sections


def merge(old: str, results: dict[str, list[dict]], errors: dict[str, str], seconds: float,
          command: str) -> str:
    """`old` with the sections of the suites just run replaced (the others kept word for word),
    each new one saying when, where and by which command it was measured."""
    head, sections = split_sections(old)
    note = (f"This section was measured alone, by `{command}` ({seconds / 60:.0f} min) on "
            f"{dt.date.today().isoformat()} on {machine()}; the other sections come from "
            "earlier runs (compare ratios only).")
    sections = {suite: remark(text) for suite, text in sections.items()}
    for suite, rows in results.items():
        sections[suite] = render_section(suite, rows, note=note)
    for suite, err in errors.items():
        sections[suite] = render_section(suite, None, err, note=note)
    order = [s for s in SUITES if s in sections] + [s for s in sections if s not in SUITES]
    body = "".join(sections[s].rstrip("\n") + "\n\n" for s in order)
    return (head + body).rstrip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    parser.add_argument("--out", default="BENCHMARKS.md", help="file to write, or - for stdout")
    parser.add_argument("--keep-others", action="store_true",
                        help="replace only the sections of the suites run in an existing --out "
                             "file; keep every other section as it is")
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
    seconds = time.perf_counter() - start
    if args.keep_others and args.out != "-" and os.path.exists(args.out):
        with open(args.out) as f:
            old = f.read()
        command = f"python -m benchmarks.run --only {args.only} --keep-others --out {args.out}"
        text = merge(old, results, errors, seconds, command)
    else:
        text = render(results, errors, seconds)
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
