"""How long `wno report` takes on a study of 1,000 trials, and how big the HTML is.

A synthetic study (tests/fake_study.py: 72 W-MSA configurations and 3 ViT twins, up to 14
seeds, 2% failed, 10 running, 20 waiting) is written into a temporary SQLite storage, with one
MLflow run per trial (10 epochs of curves) in a temporary local MLflow store. Then:

- `wno report` as a real process, end to end (interpreter start, imports, Optuna, aggregation,
  HTML), without and with MLflow curves, against the 10 s target;
- the in-process build against the floor it cannot beat: Optuna loading the same trials;
- the HTML's size against the plotly.js bundle it embeds.

    python -m benchmarks.bench_report              # prints the rows and a JSON copy
    python -m benchmarks.bench_report --no-mlflow  # skips the (slow to write) MLflow runs
    python -m benchmarks.bench_report --workdir benchmarks/out/report  # keep and reuse the study
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_rows, row

TARGET_S = 10.0
N_TRIALS = 1000
REPEATS = 3
COMMAND = "python -m benchmarks.bench_report"


_row = functools.partial(row, command=COMMAND)


def _median_time(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cli(args: list[str], env: dict, repeats: int = REPEATS) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of `wno report ARGS` as a real process.

    CPU time is reported beside wall time because these machines are shared: under load the
    wall time mostly measures the other processes."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "wno", "report", *args], env=env,
                              capture_output=True, text=True, timeout=600)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise RuntimeError(f"wno report failed ({proc.returncode}):\n{proc.stderr}")
    return statistics.median(walls), statistics.median(cpus)


def make_study(directory: Path, mlflow: bool) -> tuple[str, str | None, float]:
    """Write the 1,000-trial study (unless `directory` holds it from an earlier --workdir run);
    returns (storage URL, tracking URI, seconds it took)."""
    import optuna

    from tests import fake_study as fs  # the test suite's synthetic studies

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{directory / 'optuna.db'}"
    tracking = f"sqlite:///{directory / 'mlflow.db'}" if mlflow else None
    if (directory / "optuna.db").exists() and (not mlflow or (directory / "mlflow.db").exists()):
        return url, tracking, 0.0
    grid, trials = fs.synthetic_trials(N_TRIALS, seeds=14, running=10, waiting=20)
    t = time.perf_counter()
    fs.write_study(url, fs.study_spec("bench", grid=grid, seeds=range(14)), trials,
                   tracking_uri=tracking, epochs=10)
    return url, tracking, time.perf_counter() - t


def run(mlflow: bool = True, workdir: str | None = None) -> list[dict]:
    """The rows; `workdir` keeps the generated study there (and reuses it on the next run)."""
    import optuna

    from wno.platform import report as rep

    rows = []
    with tempfile.TemporaryDirectory(prefix="wno-bench-report-") as tmp:
        d = Path(workdir or tmp)
        d.mkdir(parents=True, exist_ok=True)
        url, tracking, setup = make_study(d, mlflow)
        env = {**os.environ, "WNO_HOME": str(d / "home")}
        html = d / "bench.html"

        load = "load average %.1f on %d CPUs" % (os.getloadavg()[0], os.cpu_count())
        variants = [("optuna_only", ["--no-curves"], "no MLflow")]
        if tracking:
            variants.append(("with_mlflow_curves", ["--tracking-uri", tracking],
                             "with the curves of the 970 MLflow runs (local SQLite store)"))
        for name, extra, what in variants:
            wall, cpu = _cli(["--study", "bench", "--storage", url, *extra, "--out", str(html)],
                             env)
            rows.append(_row(f"report_cli_1000_trials_{name}_wall", wall, "s", TARGET_S,
                             f"`wno report` process end to end (start, imports, read, HTML), "
                             f"{what}; median of {REPEATS}; {load}; baseline = the 10 s target"))
            rows.append(_row(f"report_cli_1000_trials_{name}_cpu", cpu, "s", TARGET_S,
                             "user + system CPU seconds of the same process (less sensitive to "
                             "other load); baseline = the 10 s target"))

        def load_trials():
            optuna.load_study(study_name="bench", storage=url).get_trials(deepcopy=False)

        floor = _median_time(load_trials)
        build = _median_time(lambda: rep.build_report("bench", url, curves=False))
        rows.append(_row("report_build_1000_trials_in_process", build, "s", floor,
                         "build_report (read + aggregate, no MLflow); baseline = Optuna's own "
                         "load_study().get_trials() of the same trials"))
        report = rep.build_report("bench", url, curves=False)
        render = _median_time(lambda: rep.write_report(report, "html", html))
        rows.append(_row("report_render_html_1000_trials", render, "s", build,
                         "to_html + atomic write; baseline = the build above"))

        from plotly.offline import get_plotlyjs

        bundle = len(get_plotlyjs().encode()) / 1e6
        size = html.stat().st_size / 1e6
        rows.append(_row("report_html_size_1000_trials", size, "MB", bundle,
                         "self-contained HTML (1,000-row trial table, 5 charts); baseline = the "
                         "embedded plotly.js bundle alone"))
        for fmt in ("md", "json"):
            out = rep.write_report(report, fmt, d / f"bench.{fmt}")
            rows.append(_row(f"report_{fmt}_size_1000_trials", out.stat().st_size / 1e6, "MB",
                             size, "baseline = the HTML report"))
        if setup:
            rows.append(_row("bench_setup_write_1000_trials", setup, "s", 0,
                             "writing the synthetic study (Optuna" + (" + MLflow" if mlflow else "")
                             + "); context only, not a target"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow runs")
    parser.add_argument("--workdir", help="keep the generated study here and reuse it next time")
    args = parser.parse_args()
    print_rows(run(mlflow=not args.no_mlflow, workdir=args.workdir))


if __name__ == "__main__":
    main()
