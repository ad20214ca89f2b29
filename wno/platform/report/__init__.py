"""`wno report`: a study's trials aggregated over seeds and compared against the ViT baseline.

    report = build_report("levels")        # reads Optuna, and MLflow curves when reachable
    path = write_report(report, "html")    # wno-runs/reports/levels.html

    data      Report: the tables and notes every format shows (plain data)
    stats     t-intervals, Welch, Holm, the Pareto front
    build     reading the study (Optuna) and the curves (MLflow), aggregating, comparing
    html      the self-contained HTML page (plotly)
    formats   Markdown, CSV, LaTeX, JSON

The renderers take a `Report` and import nothing back from `build`.
"""

from __future__ import annotations

import re
from pathlib import Path

from wno.base.errors import UserError
from wno.base.utils import atomic_write_text
from wno.platform import defaults
from wno.platform.report import formats, html
from wno.platform.report.build import build_report, compare, matches, read_mlflow
from wno.platform.report.data import CURVE_METRICS, Report
from wno.platform.report.stats import holm, pareto_front, summarize, welch
from wno.platform.storage import Store, known_studies_text

FORMATS = defaults.REPORT_FORMATS
RENDERERS = {"html": html.to_html, "md": formats.to_markdown, "csv": formats.to_csv,
             "latex": formats.to_latex, "json": formats.to_json}

__all__ = ["CURVE_METRICS", "FORMATS", "Report", "build_report", "compare", "default_path",
           "holm", "known_studies_text", "matches", "pareto_front", "read_mlflow", "render",
           "study_names", "summarize", "welch", "write_report"]


def render(report: Report, fmt: str) -> str:
    """`report` as text in format `fmt` (html, md, csv, latex, json)."""
    if fmt not in RENDERERS:
        raise UserError(f"unknown report format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return RENDERERS[fmt](report)


def write_report(report: Report, fmt: str = "html", out: str | Path | None = None) -> Path:
    """Render `report` as `fmt` and write it atomically; returns the path written."""
    text = render(report, fmt)
    path = Path(out) if out else default_path(report.study, fmt)
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise UserError(f"cannot write the report to {path}: {e.strerror or e}") from None
    return path


def default_path(study: str, fmt: str) -> Path:
    """wno-runs/reports/<study>.<ext>, the study name made safe as a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study).strip("._") or "study"
    return defaults.reports_dir() / f"{safe}.{FORMATS.get(fmt, fmt)}"


def study_names(url: str | None = None) -> list[str]:
    """The names of the studies in the storage at `url`, sorted."""
    return Store(url, read_only=True).study_names()
