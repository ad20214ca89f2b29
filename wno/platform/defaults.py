"""Where the platform keeps things when nobody says otherwise, and the variables that say so.

Everything local lives under one folder (`WNO_HOME`, default `./wno-runs`), so a demo or a
single-machine study is one directory to look at, back up or delete:

    wno-runs/optuna.db        the study storage (WNO_STORAGE overrides; PostgreSQL to scale)
    wno-runs/mlflow.db        MLflow's tracking store (MLFLOW_TRACKING_URI overrides)
    wno-runs/mlartifacts/     MLflow artifacts of the local store
    wno-runs/checkpoints/     trial checkpoints: <study>/<study uid>/<config hash>/
    wno-runs/cpu-workers/     lock files of the CPU workers running on each host
    wno-runs/reports/         HTML and other reports

Machine-specific settings come from the worker's environment, never from a study:
WNO_STORAGE, WNO_DATA_DIR, WNO_CHECKPOINT_DIR, MLFLOW_TRACKING_URI. The data module also reads
WNO_CACHE_DIR (where decoded data sets are cached: else <data dir>/.wno-cache when writable, else
~/.cache/wno) and WNO_OFFLINE=1 (never try a download); tracking reads WNO_MLFLOW_CHECKPOINTS
(none | final | best | both: which checkpoints become MLflow artifacts, default final) and
WNO_GIT_COMMIT (the commit to record when there is no .git, e.g. in a Docker image).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "WNO_HOME"
ENV_STORAGE = "WNO_STORAGE"
ENV_DATA_DIR = "WNO_DATA_DIR"
ENV_CHECKPOINT_DIR = "WNO_CHECKPOINT_DIR"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"


def home() -> Path:
    return Path(os.environ.get(ENV_HOME, "wno-runs"))


def default_storage_url() -> str:
    return f"sqlite:///{home() / 'optuna.db'}"


def storage_url(explicit: str | None = None) -> str:
    """The study storage: the explicit argument, else WNO_STORAGE, else the local SQLite file."""
    return explicit or os.environ.get(ENV_STORAGE) or default_storage_url()


def tracking_uri(explicit: str | None = None) -> str:
    """MLflow's tracking URI: explicit, else MLFLOW_TRACKING_URI, else a SQLite store in home()."""
    return explicit or os.environ.get(ENV_TRACKING_URI) or f"sqlite:///{home() / 'mlflow.db'}"


def artifact_location() -> str:
    """Artifact root for experiments created in the local store."""
    return (home() / "mlartifacts").resolve().as_uri()


def data_dir(explicit: str | None = None) -> str:
    return explicit or os.environ.get(ENV_DATA_DIR) or "data"


def checkpoint_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get(ENV_CHECKPOINT_DIR) or home() / "checkpoints")


def reports_dir() -> Path:
    return home() / "reports"


# `wno report --format` -> file extension (here, not in the report module, so the CLI checks a
# format without importing pandas and plotly).
REPORT_FORMATS = {"html": "html", "md": "md", "csv": "csv", "latex": "tex", "json": "json"}
