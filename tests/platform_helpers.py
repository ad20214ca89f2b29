"""Fixtures and helpers for the platform's tests (queue, workers, CLI), shared with other suites.

- `storage_url`: parametrised over SQLite (a fresh file per test) and PostgreSQL (a temporary
  database created for the test module and dropped after it; skipped, with the reason, when
  WNO_TEST_POSTGRES_URL is unset). Import both by name (`tests/` is on sys.path):
  `from platform_helpers import storage_url, pg_database  # noqa: F401`.
- `write_study(folder, name, **sections)`: a study YAML on disk.
- `TINY`: the cheapest real training config (micro ViT, 32 synthetic images, 1 epoch).
- `worker_env(tmp_path)`, `start_worker(...)`, `run_wno(...)`: the real CLI as subprocesses;
  `epochs_done(checkpoint_folder)`: how far a worker's trial has got.
- `backdate_heartbeat(queue, trial_id, seconds)`: a trial silent for `seconds`, by the database's
  clock, without waiting that long.
- `run_in_processes(...)`, `pop_until_empty`, `check_popped_once(...)`: racing processes, and a
  failure that names each trial popped twice instead of a hang.
"""

from __future__ import annotations

import json
import os
import queue as queue_module
import subprocess
import sys
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PG_ENV = "WNO_TEST_POSTGRES_URL"

# The cheapest real training run: a micro ViT on 32 synthetic images, one epoch.
TINY = dict(model="vit", model_size="micro", dataset="synthetic", train_size=32, val_size=16,
            test_size=16, batch_size=16, epochs=1, warmup_epochs=0.0)


# --- storages ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_database():
    """A fresh PostgreSQL database for the test module (the role has CREATEDB), dropped after."""
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        pytest.skip(f"{PG_ENV} is not set (.ci/run starts PostgreSQL and sets it)")
    import sqlalchemy as sa

    name = f"wno_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as e:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_ENV} is unreachable: {e.orig}")
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path) -> str:
    """A storage URL with nothing in it that this test did not put there."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return request.getfixturevalue("pg_database")


def unique(prefix: str = "s") -> str:
    """A study name no other test uses (PostgreSQL databases are shared within a module)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- study files ------------------------------------------------------------------------------------
def write_study(folder: Path, name: str, **sections) -> Path:
    """Write `{name: ..., **sections}` as `folder/<name>.yaml`; `base` defaults to TINY."""
    doc = {"name": name, "base": dict(TINY), **sections}
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- the real CLI as subprocesses ---------------------------------------------------------------------
def worker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for `wno` subprocesses: everything local under tmp_path, one thread each."""
    env = dict(os.environ)
    env.update({"WNO_HOME": str(tmp_path / "home"), "WNO_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
                "WNO_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    env.pop("WNO_STORAGE", None)
    env.update(extra)
    return env


def wno_argv() -> list[str]:
    exe = REPO / ".venv" / "bin" / "wno"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "wno"]


def run_wno(args: list[str], env: dict[str, str], timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(wno_argv() + args, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def start_worker(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`wno worker ...` in the background, stdout and stderr into `log`."""
    out = open(log, "w")
    return subprocess.Popen(wno_argv() + ["worker"] + args, env=env, stdout=out,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def epochs_done(folder: Path) -> int:
    """Epochs recorded in a trial's `metrics.json` (0 before the first, or mid-write)."""
    try:
        return len(json.loads((folder / "metrics.json").read_text())["history"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def trials(url: str, name: str):
    """The study's trials, read fresh from the storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def backdate_heartbeat(queue, trial_id: int, seconds: float) -> None:
    """Make a RUNNING trial's last heartbeat `seconds` old by the database's own clock (the clock
    the sweep judges by), so that staleness at production intervals (minutes) is tested without
    waiting for it."""
    import datetime as dt

    import sqlalchemy as sa

    H = queue.store._table("TrialHeartbeatModel")
    with queue.store.engine.begin() as conn:
        now = conn.execute(sa.select(sa.func.now())).scalar()
        # naive, as the heartbeat column and the sweep's own reading of now() are
        then = now.replace(tzinfo=None) - dt.timedelta(seconds=seconds)
        n = conn.execute(sa.update(H).where(H.c.trial_id == trial_id)
                         .values(heartbeat=then)).rowcount
    assert n == 1, f"trial {trial_id} has no heartbeat row to backdate"


# --- processes for the queue races (module-level so that multiprocessing's spawn can import them) --
def pop_until_empty(url: str, study: str, start, results) -> None:
    """Pop and finish trials of `study` until none waits; put a report on `results`.

    The report is put whatever happens (an exception is reported, not raised): a racing process
    that dies silently would leave the parent waiting instead of saying what went wrong.
    Report: {"pid", "popped": trial numbers in order, "unfinished": those whose `finish` was
    refused (someone else had told them), "error": a traceback or None}.
    """
    report = {"pid": os.getpid(), "popped": [], "unfinished": [], "error": None}
    try:
        import optuna

        from wno.platform.queue import StudyQueue

        queue = StudyQueue(url)
        # optuna's own load_study: the queue's would parse the spec, which imports torch (slow)
        optuna_study = optuna.load_study(study_name=study, storage=queue.storage)
        start.wait()
        while (claim := queue.pop([study], host=f"pid{os.getpid()}", device="cpu")) is not None:
            report["popped"].append(claim.number)
            if not queue.finish(optuna_study, claim, value=float(claim.number), metrics={}):
                report["unfinished"].append(claim.number)
    except Exception:  # noqa: BLE001 - reported to the parent, which fails the test with it
        report["error"] = traceback.format_exc()
    finally:
        results.put(report)


def check_popped_once(reports: list[dict], expected: list[int]) -> None:
    """Fail the test, naming the trials and processes, unless every number in `expected` was
    popped by exactly one process and nothing else was popped or refused."""
    by_trial: dict[int, list[int]] = defaultdict(list)
    for r in reports:
        for number in r["popped"]:
            by_trial[number].append(r["pid"])
    problems = [f"trial #{n} popped {len(pids)} times (processes {', '.join(map(str, pids))})"
                for n, pids in sorted(by_trial.items()) if len(pids) > 1]
    missing = sorted(set(expected) - set(by_trial))
    if missing:
        problems.append(f"never popped: {', '.join(f'#{n}' for n in missing)}")
    extra = sorted(set(by_trial) - set(expected))
    if extra:
        problems.append(f"popped but never enqueued (created by popping?): "
                        f"{', '.join(f'#{n}' for n in extra)}")
    refused = sorted(n for r in reports for n in r["unfinished"])
    if refused:
        problems.append(f"finish refused (told by another process): "
                        f"{', '.join(f'#{n}' for n in refused)}")
    problems += [f"process {r['pid']} failed:\n{r['error']}" for r in reports if r["error"]]
    if problems:
        pytest.fail("exactly-once violated: " + "; ".join(problems), pytrace=False)


def sweep_once(url: str, study: str, start, results) -> None:
    """One stale-trial sweep, started together with the others."""
    from wno.platform.queue import StudyQueue

    queue = StudyQueue(url)
    start.wait()
    results.put(queue.sweep_stale([study]))


def run_in_processes(target, args: tuple, n: int, timeout: float = 120) -> list:
    """Run `target(*args, start, results)` in `n` spawned processes released at once; what each
    put on `results`. A process that exits without putting its result fails the test at once,
    with its exit code, rather than after `timeout`."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, results)) for _ in range(n)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    start.set()
    out: list = []
    deadline = time.monotonic() + timeout
    reported = False
    try:
        while len(out) < n:
            try:
                out.append(results.get(timeout=0.5))
                continue
            except queue_module.Empty:
                pass
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                pytest.fail(f"racing process {dead[0].pid} exited with {dead[0].exitcode} without "
                            f"reporting ({len(out)} of {n} reported); its traceback is in the "
                            f"captured stderr", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"{n - len(out)} of {n} racing processes did not report within "
                            f"{timeout:.0f} s", pytrace=False)
        reported = True
    finally:
        for p in procs:  # after a failure, a process still racing is of no use: stop it
            p.join(timeout=30 if reported else 1)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return out
