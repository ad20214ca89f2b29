"""`make demo`: the whole platform end to end on this machine, with the commands a user would type.

Creates the small real study in studies/smoke.yaml (micro W-MSA with the kernel on and off
against the ViT baseline, on a CIFAR-10 subset) in a local SQLite storage, runs one worker until
the queue is empty (logging every trial to the local MLflow store), shows the study's status and
writes the report. Everything lands in one folder (default wno-runs/demo); running it again
reuses what is done (the study is created idempotently and finished trials are not rerun).

    python -m wno.demo --data-dir ../shared/data --out wno-runs/demo
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from wno.platform import defaults

STUDY_FILE = Path(__file__).resolve().parents[1] / "studies" / "smoke.yaml"


def _run(args: list[str], env: dict[str, str]) -> None:
    shown = " ".join(shlex.quote(a) for a in args)
    print(f"\n$ wno {shown}", flush=True)
    result = subprocess.run([sys.executable, "-m", "wno", *args], env=env)
    if result.returncode != 0:
        sys.exit(f"demo stopped: `wno {shown}` exited with {result.returncode}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=defaults.data_dir(),
                        help="folder with CIFAR-10 (the offline zip, an ImageFolder tree or "
                             "torchvision's files)")
    parser.add_argument("--out", default="wno-runs/demo", help="folder for every output")
    parser.add_argument("--study-file", default=str(STUDY_FILE))
    args = parser.parse_args(argv)

    home = Path(args.out).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, defaults.ENV_HOME: str(home),
           defaults.ENV_DATA_DIR: str(Path(args.data_dir).resolve())}
    # The demo always uses the embedded defaults, whatever this shell points at.
    for var in (defaults.ENV_STORAGE, defaults.ENV_TRACKING_URI, defaults.ENV_CHECKPOINT_DIR):
        env.pop(var, None)
    start = time.perf_counter()
    print(f"wno demo: outputs in {home}")
    _run(["study", "create", args.study_file], env)
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


if __name__ == "__main__":
    main()
