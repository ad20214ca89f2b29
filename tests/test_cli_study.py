"""`wno study ...` and `wno worker` through CliRunner, and end to end as real subprocesses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from platform_helpers import run_wno, trials, unique, worker_env, write_study
from wno.cli import app
from wno.platform import schema
from wno.platform.queue import StudyQueue, checkpoint_folder

REPO = Path(__file__).resolve().parents[1]
BAD = sorted((REPO / "tests" / "bad_studies").glob("*.yaml"))
runner = CliRunner()


def wno(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def sqlite(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'queue' / 'optuna.db'}"


def test_create_prints_the_plan_and_is_idempotent(tmp_path, sqlite):
    study = write_study(tmp_path, "cli", grid={"lr": [1e-3, 2e-3], "levels": [1]}, seeds=2)
    dry = wno("study", "create", str(study), "--storage", sqlite, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "grid lr (2): 0.001 [2 trials], 0.002 [2 trials]" in dry.output
    assert "total: 4 trials (4 model, 0 baseline)" in dry.output
    assert "dry run: would create study 'cli' and enqueue 4 trials" in dry.output
    assert not (tmp_path / "queue").exists()  # a dry run creates nothing, not even the storage

    first = wno("study", "create", str(study), "--storage", sqlite)
    assert first.exit_code == 0, first.output
    assert re.search(r"created study 'cli' in sqlite:///.*: enqueued 4 trial\(s\)", first.output)
    again = wno("study", "create", str(study), "--storage", sqlite)
    assert again.exit_code == 0
    assert "study 'cli' exists in" in again.output and "enqueued 0 trial(s), 4 already there" in \
        again.output
    assert len(trials(sqlite, "cli")) == 4


def test_a_changed_definition_is_refused_unless_asked(tmp_path, sqlite):
    study = write_study(tmp_path, "chg", grid={"lr": [1e-3]}, seeds=1)
    assert wno("study", "create", str(study), "--storage", sqlite).exit_code == 0
    study = write_study(tmp_path, "chg", grid={"lr": [1e-3, 5e-3]}, seeds=1)
    refused = wno("study", "create", str(study), "--storage", sqlite)
    assert refused.exit_code == 2
    assert "already exists with a different definition (grid.lr: [0.001] -> [0.001, 0.005])" in \
        refused.stderr
    assert "--update" in refused.stderr
    assert len(trials(sqlite, "chg")) == 1
    updated = wno("study", "create", str(study), "--storage", sqlite, "--update")
    assert updated.exit_code == 0 and "enqueued 1 trial(s), 1 already there" in updated.output
    assert len(trials(sqlite, "chg")) == 2


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_a_bad_study_file_is_refused_and_nothing_is_enqueued(tmp_path, sqlite, path):
    result = wno("study", "create", str(path), "--storage", sqlite)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path} is not a valid study")
    for expected in re.findall(r"^# expect: (.*)$", path.read_text(), re.M):
        assert expected in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "queue").exists()  # nothing was created, let alone enqueued


def test_list_status_cancel_retry_delete(tmp_path, sqlite):
    study = write_study(tmp_path, "ops", grid={"lr": [1e-3, 2e-3]}, seeds=1,
                        description="two learning rates")
    assert wno("study", "create", str(study), "--storage", sqlite).exit_code == 0
    listed = wno("study", "list", "--storage", sqlite)
    assert listed.exit_code == 0
    assert re.search(r"ops\s+grid\s+2\s+0\s+0\s+0\s+0\s+two learning rates", listed.output)

    status = wno("study", "status", "ops", "--storage", sqlite)
    assert status.exit_code == 0
    assert "[" + "." * 30 + "] 0/2 done   waiting 2  running 0" in status.output
    assert "ETA: unknown until a trial completes" in status.output

    cancelled = wno("study", "cancel", "ops", "--storage", sqlite)
    assert cancelled.exit_code == 0 and "cancelled 2 trial(s)" in cancelled.output
    data = json.loads(wno("study", "status", "ops", "--storage", sqlite, "--json").output)
    assert data["counts"] == {"FAIL": 2} and data["planned"] == 2 and data["done"] == 0
    assert {t["error"] for t in data["trials"]} == {"cancelled by `wno study cancel`"}
    text = wno("study", "status", "ops", "--storage", sqlite).output
    assert "failed:" in text and "cancelled by `wno study cancel`" in text

    retried = wno("study", "retry", "ops", "--storage", sqlite)
    assert retried.exit_code == 0
    assert "trial #0 re-enqueued as #2" in retried.output
    assert "2 trial(s) back in the queue" in retried.output
    text = wno("study", "status", "ops", "--storage", sqlite).output
    assert "-> retried as #2" in text and "waiting 2" in text

    uid = StudyQueue(sqlite).study_uid("ops", mint=False)
    ckpt = checkpoint_folder(tmp_path / "ckpt", "ops", uid, "somehash")
    ckpt.mkdir(parents=True)
    deleted = wno("study", "delete", "ops", "--storage", sqlite, "--yes",
                  "--checkpoint-dir", str(tmp_path / "ckpt"))
    assert deleted.exit_code == 0 and not (tmp_path / "ckpt" / "ops").exists()
    assert f"removed its checkpoints in {ckpt.parent}" in deleted.output
    assert "no studies in" in wno("study", "list", "--storage", sqlite).output
    missing = wno("study", "status", "ops", "--storage", sqlite)
    assert missing.exit_code == 2 and "no study named 'ops'" in missing.stderr


def test_a_study_stored_with_a_test_objective_still_runs_and_says_so(tmp_path, sqlite):
    """Older wno accepted `objective: test_acc`; such a stored study must not become unreadable
    (status, retry and the worker re-read the stored definition): it is read with a note, while
    a new file with that objective is still refused."""
    import optuna

    study = write_study(tmp_path, "old", grid={"lr": [1e-3, 2e-3]}, seeds=1)
    assert wno("study", "create", str(study), "--storage", sqlite).exit_code == 0
    storage = optuna.storages.RDBStorage(sqlite)
    sid = storage.get_study_id_from_name("old")
    stored = storage.get_study_user_attrs(sid)[schema.SPEC]
    storage.set_study_user_attr(sid, schema.SPEC, {**stored, "objective": {"metric": "test_acc"}})

    status = wno("study", "status", "old", "--storage", sqlite)
    assert status.exit_code == 0, status.output
    assert "0/2 done" in status.output
    assert "note: objective 'test_acc' selects on the test set" in status.output
    assert StudyQueue(sqlite).spec("old").objective.metric == "test_acc"
    assert wno("study", "cancel", "old", "--storage", sqlite).exit_code == 0
    assert "2 trial(s) back" in wno("study", "retry", "old", "--storage", sqlite).output

    report = wno("report", "--study", "old", "--storage", sqlite, "--format", "md",
                 "--out", "-", "--no-curves")
    assert report.exit_code == 0, report.output
    assert "the objective test_acc ranks on the test set" in report.output

    again = write_study(tmp_path, "new", grid={"lr": [1e-3]}, seeds=1,
                        objective={"metric": "test_acc"})
    refused = wno("study", "create", str(again), "--storage", sqlite)
    assert refused.exit_code == 2 and "would select on the test set" in refused.stderr


def test_delete_removes_only_that_studys_checkpoints(tmp_path, sqlite):
    """Checkpoints of other studies of the same name (another storage, or older ones without an
    identity) share the name's folder: they are kept, and the output says so."""
    study = write_study(tmp_path, "mine", grid={"lr": [1e-3]}, seeds=1)
    assert wno("study", "create", str(study), "--storage", sqlite).exit_code == 0
    root = tmp_path / "ckpt"
    mine = checkpoint_folder(root, "mine", StudyQueue(sqlite).study_uid("mine"), "a1b2c3d4e5f6")
    theirs = checkpoint_folder(root, "mine", "0123456789abcdef", "a1b2c3d4e5f6")
    older = root / "mine" / "a1b2c3d4e5f6"  # written before studies had identities
    for folder in (mine, theirs, older):
        folder.mkdir(parents=True)
        (folder / "last.pt").write_bytes(b"weights")
    deleted = wno("study", "delete", "mine", "--storage", sqlite, "--yes",
                  "--checkpoint-dir", str(root))
    assert deleted.exit_code == 0, deleted.output
    assert not mine.parent.exists() and (theirs / "last.pt").is_file() and (older / "last.pt").is_file()
    assert f"kept 2 folder(s) in {root / 'mine'}: checkpoints of other studies" in deleted.output


def test_delete_asks_first(tmp_path, sqlite):
    study = write_study(tmp_path, "keep", grid={"lr": [1e-3]}, seeds=1)
    wno("study", "create", str(study), "--storage", sqlite)
    result = runner.invoke(app, ["study", "delete", "keep", "--storage", sqlite], input="n\n")
    assert result.exit_code != 0
    assert len(trials(sqlite, "keep")) == 1


def test_worker_flags_are_checked(tmp_path, sqlite):
    both = wno("worker", "--gpu", "cpu", "--exit-when-empty", "--idle-timeout", "5",
               "--storage", sqlite)
    assert both.exit_code == 2 and "not both" in both.stderr
    missing = wno("worker", "--gpu", "cpu", "--storage", sqlite)
    assert missing.exit_code == 3 and "no study storage at" in missing.stderr
    no_device = wno("worker", "--exit-when-empty", "--storage", sqlite)
    assert no_device.exit_code == 2
    assert "needs --gpu" in no_device.stderr and "--gpu cpu" in no_device.stderr
    for bad in ("0", "two"):
        threads = wno("worker", "--gpu", "cpu", "--threads", bad, "--storage", sqlite)
        assert threads.exit_code == 2 and "Invalid value for '--threads'" in threads.stderr, \
            threads.output


# --- real subprocesses --------------------------------------------------------------------------------
def test_an_unreachable_storage_is_a_clear_error(tmp_path):
    env = worker_env(tmp_path)
    url = "postgresql+psycopg://wno:hunter2@127.0.0.1:1/wno"  # nothing listens on port 1
    for args in (["study", "status", "x", "--storage", url],
                 ["study", "list", "--storage", url],
                 ["worker", "--gpu", "cpu", "--exit-when-empty", "--storage", url]):
        r = run_wno(args, env, timeout=120)
        assert r.returncode == 3, (args, r.stderr)
        assert r.stderr.startswith("error: cannot reach the study storage "
                                   "postgresql+psycopg://wno:***@127.0.0.1:1/wno: ")
        assert "hunter2" not in r.stdout + r.stderr and "Traceback" not in r.stderr


# Runs the CLI with the given arguments and reports, at exit, which heavy libraries it imported.
_IMPORTS_AT_EXIT = """
import atexit, sys
heavy = {"torch", "torchvision", "ptwt"}
atexit.register(lambda: print("heavy imports: " + ",".join(sorted(
    heavy & {m.split(".")[0] for m in sys.modules})), file=sys.stderr))
sys.argv = ["wno"] + sys.argv[1:]
from wno.cli import app
app()
"""


def test_study_commands_answer_without_importing_torch(tmp_path):
    """create, status and list validate every trial's configuration (wavelet levels, sizes,
    layouts) but need no tensors: importing torch cost them 4-10 s per call."""
    import subprocess
    import sys

    env = worker_env(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = str(REPO / "studies" / "tokens.yaml")
    for args in (["study", "create", study, "--storage", storage],
                 ["study", "status", "tokens", "--storage", storage],
                 ["study", "list", "--storage", storage]):
        r = subprocess.run([sys.executable, "-c", _IMPORTS_AT_EXIT, *args], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args, r.stderr)
        assert "heavy imports: \n" in r.stderr, (args, r.stderr[-300:])


def test_gpu_without_cuda_is_a_clear_error(tmp_path):
    env = worker_env(tmp_path, CUDA_VISIBLE_DEVICES="")
    r = run_wno(["worker", "--gpu", "0", "--exit-when-empty"], env, timeout=120)
    assert r.returncode == 2
    assert "CUDA_VISIBLE_DEVICES is set but empty" in r.stderr and "--gpu cpu" in r.stderr


@pytest.mark.slow
def test_create_worker_status_end_to_end(tmp_path):
    """The README's flow as real processes, on the default storage (SQLite under WNO_HOME).
    PostgreSQL through WNO_STORAGE runs the same commands in test_worker.py's race."""
    name = unique("e2e")
    study = write_study(tmp_path, name, grid={"lr": [1e-3, 3e-3]}, seeds=1,
                        baselines={"vit_p8": {"patch_size": 8, "lr": 1e-3}})
    env = worker_env(tmp_path)
    created = run_wno(["study", "create", str(study)], env)
    assert created.returncode == 0, created.stderr
    assert "enqueued 3 trial(s)" in created.stdout
    storage_url = f"sqlite:///{tmp_path / 'home' / 'optuna.db'}"  # the default location
    assert (tmp_path / "home" / "optuna.db").is_file()
    worker = run_wno(["worker", "--gpu", "cpu", "--exit-when-empty", "--study", name], env)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert worker.stdout.count(" complete: best_val_acc = ") == 3
    status = run_wno(["study", "status", name], env)
    assert status.returncode == 0
    assert f"[{'#' * 30}] 3/3 done" in status.stdout and "finished" in status.stdout
    listed = run_wno(["study", "list"], env)
    assert re.search(rf"{name}\s+grid\s+0\s+0\s+3\s+0\s+0", listed.stdout)
    done = trials(storage_url, name)
    assert {t.user_attrs[schema.ROLE] for t in done} == {"model", "baseline"}
    assert all(t.state.name == "COMPLETE" and schema.METRICS in t.user_attrs for t in done)
    uid = StudyQueue(storage_url).study_uid(name, mint=False)
    for t in done:  # checkpoints under WNO_CHECKPOINT_DIR/<study>/<study uid>/<config hash>
        assert (checkpoint_folder(tmp_path / "ckpt", name, uid, t.user_attrs[schema.CONFIG_HASH])
                / "last.pt").is_file()
