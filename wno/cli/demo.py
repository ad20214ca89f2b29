"""`wno demo` (`make demo`): the whole platform end to end on this machine, with the commands a
user would type.

Creates the small real study in studies/smoke.yaml (micro W-MSA with the kernel on and off
against the ViT baseline, on a CIFAR-10 subset) in a local SQLite storage, runs one worker until
the queue is empty (logging every trial to the local MLflow store), shows the study's status and
writes the report. Everything lands in one folder (default wno-runs/demo); running it again
reuses what is done (the study is created idempotently and finished trials are not rerun).

    wno demo --data-dir data --out wno-runs/demo
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import typer

from wno.platform import defaults

STUDY_FILE = Path(__file__).resolve().parents[2] / "studies" / "smoke.yaml"


def _run(args: list[str], env: dict[str, str]) -> None:
    shown = " ".join(shlex.quote(a) for a in args)
    print(f"\n$ wno {shown}", flush=True)
    result = subprocess.run([sys.executable, "-m", "wno", *args], env=env)
    if result.returncode != 0:
        typer.secho(f"demo stopped: `wno {shown}` exited with {result.returncode}", err=True,
                    fg=typer.colors.RED)
        raise typer.Exit(result.returncode)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    data_dir: str = typer.Option(None, "--data-dir", help="Folder with CIFAR-10: the offline zip, "
                                 "an ImageFolder tree or torchvision's files (default: "
                                 "$WNO_DATA_DIR, else ./data, where torchvision downloads it)."),
    out: str = typer.Option("wno-runs/demo", "--out", help="Folder for every output (storage, "
                            "MLflow store, checkpoints, report)."),
    study_file: str = typer.Option(str(STUDY_FILE), "--study-file", help="The study to run."),
) -> None:
    """Run a small real study end to end: create it, train it with one CPU worker until the queue
    is empty, show its status, write its report, and say where to look."""
    data_dir = defaults.data_dir(data_dir)
    home = Path(out).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, defaults.ENV_HOME: str(home),
           defaults.ENV_DATA_DIR: str(Path(data_dir).resolve())}
    # The demo always uses the embedded defaults, whatever this shell points at.
    for var in (defaults.ENV_STORAGE, defaults.ENV_TRACKING_URI, defaults.ENV_CHECKPOINT_DIR):
        env.pop(var, None)
    start = time.perf_counter()
    print(f"wno demo: outputs in {home}")
    _run(["study", "create", study_file], env)
    _run(["worker", "--gpu", "cpu", "--exit-when-empty", "--study", "smoke"], env)
    _run(["study", "status", "smoke"], env)
    _run(["report", "--study", "smoke"], env)
    minutes = (time.perf_counter() - start) / 60
    print(f"""
Done in {minutes:.1f} min. Where to look:
  report        {home / 'reports' / 'smoke.html'}   (open it in a browser; it works offline)
  MLflow runs   WNO_HOME={home} wno ui              (then open http://127.0.0.1:5000)
  study queue   WNO_HOME={home} wno study status smoke
  stores        {home / 'optuna.db'} (Optuna), {home / 'mlflow.db'} (MLflow), {home / 'checkpoints'}
Run `make demo` again to reuse these results, or delete {home} to start over.""")

