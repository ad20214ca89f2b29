"""Workers with real training (micro ViT / wavelet models on the synthetic set): results recorded,
failures kept, search studies, and, as real `wno worker` processes on SQLite and PostgreSQL,
exactly-once under a race, SIGKILL -> retried and resumed, SIGTERM -> handed back."""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from platform_helpers import (TINY, epochs_done, pg_database, start_worker, storage_url,  # noqa: F401
                              trials, unique, wait_for, worker_env, write_study)
from wno.cli.common import UserError
from wno.platform import schema
from wno.platform.queue import StudyQueue, grace
from wno.platform.spec import load_spec, parse_spec
from wno.platform.worker import (TrialContext, Worker, WorkerOptions, physical_gpu,
                                 pin_device)
from wno.training import Callback


def make_worker(url: str, tmp_path: Path, **options) -> Worker:
    opts = WorkerOptions(device="cpu", device_label="cpu", idle_timeout=0,
                         data_dir=str(tmp_path / "data"), checkpoint_dir=str(tmp_path / "ckpt"),
                         heartbeat_interval=1.0, poll_interval=0.2)
    factory = options.pop("factory", None)
    for key, value in options.items():
        setattr(opts, key, value)
    return Worker(StudyQueue(url), opts, callbacks_factory=factory)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


# --- in-process workers --------------------------------------------------------------------------------
def test_worker_trains_each_trial_and_records_the_result(tmp_path):
    url = sqlite_url(tmp_path)
    spec = parse_spec({"name": "rec", "base": dict(TINY), "grid": {"lr": [1e-3, 3e-3]},
                       "seeds": 1, "objective": {"metric": "final_val_acc"}})
    StudyQueue(url, create=True).create(spec)
    summary = make_worker(url, tmp_path).run()
    assert summary.outcomes == {"COMPLETE": 2}
    for t in trials(url, "rec"):
        assert t.state.name == "COMPLETE"
        metrics = t.user_attrs[schema.METRICS]
        assert set(metrics) >= {"final_val_acc", "best_val_acc", "test_acc", "params", "flops",
                                "tokens", "wall_time", "throughput", "epochs_completed"}
        assert t.value == metrics["final_val_acc"] and 0 <= t.value <= 1
        assert metrics["epochs_completed"] == TINY["epochs"] and metrics["params"] > 0
        assert t.user_attrs[schema.HOST] == socket.gethostname()
        assert t.user_attrs[schema.DEVICE] == "cpu"
        # the checkpoint folder is keyed by (study, config hash), not by the trial number
        ckpt = tmp_path / "ckpt" / "rec" / t.user_attrs[schema.CONFIG_HASH]
        assert (ckpt / "last.pt").is_file()
        saved = json.loads((ckpt / "metrics.json").read_text())
        assert saved["config_hash"] == t.user_attrs[schema.CONFIG_HASH]
        assert saved["config"]["lr"] == t.user_attrs[schema.CONFIG]["lr"]  # what was asked


def test_an_exception_fails_that_trial_and_the_worker_goes_on(tmp_path):
    url = sqlite_url(tmp_path)
    spec = parse_spec({"name": "boom", "base": dict(TINY), "grid": {"lr": [1e-3, 3e-3]},
                       "seeds": 1})
    StudyQueue(url, create=True).create(spec)
    # a file where the first trial's checkpoint folder must go: train() cannot save there
    blocked = tmp_path / "ckpt" / "boom" / spec.plan[0].key
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder")
    summary = make_worker(url, tmp_path).run()
    assert summary.outcomes == {"FAIL": 1, "COMPLETE": 1}
    first, second = sorted(trials(url, "boom"), key=lambda t: t.number)
    assert first.state.name == "FAIL" and second.state.name == "COMPLETE"
    error = first.user_attrs[schema.ERROR]
    assert re.match(r"\w+Error: ", error) and ("File exists" in error or "Not a dir" in error)
    assert "\n" not in first.user_attrs[schema.ERROR]
    status = StudyQueue(url).status("boom")
    assert status.failures[0].error == first.user_attrs[schema.ERROR]


def test_a_trial_whose_stored_config_changed_is_refused(tmp_path):
    """Never train a different configuration than the one enqueued."""
    url = sqlite_url(tmp_path)
    q = StudyQueue(url, create=True)
    q.create(parse_spec({"name": "tamper", "base": dict(TINY), "grid": {"lr": [1e-3]},
                         "seeds": 1}))
    (t,) = trials(url, "tamper")
    q.storage.set_trial_user_attr(t._trial_id, schema.CONFIG, {**t.user_attrs[schema.CONFIG],
                                                               "epochs": 50})
    assert make_worker(url, tmp_path).run().outcomes == {"FAIL": 1}
    (t,) = trials(url, "tamper")
    assert "hashes to" in t.user_attrs[schema.ERROR]
    assert not (tmp_path / "ckpt" / "tamper").exists()  # nothing was trained


def test_a_trial_enqueued_before_canonical_merged_more_still_runs(tmp_path):
    """A 1x1 patch was its own configuration before it became the seed layout's: a trial stored
    then (its fields as written, hashed as they are) is the same model, and runs."""
    from wno.training.config import TrainConfig

    url = sqlite_url(tmp_path)
    q = StudyQueue(url, create=True)
    q.create(parse_spec({"name": "legacy", "base": {**TINY, "model": "wavelet"},
                         "grid": {"lr": [1e-3]}, "seeds": 1}))
    (t,) = trials(url, "legacy")
    old = TrainConfig.from_dict({**t.user_attrs[schema.CONFIG], "token_layout": "patch",
                                 "token_patch": 1})
    assert old.config_hash(canonical=False) != old.config_hash()  # what an older wno stored
    q.storage.set_trial_user_attr(t._trial_id, schema.CONFIG, old.to_dict(machine=False))
    q.storage.set_trial_user_attr(t._trial_id, schema.CONFIG_HASH, old.config_hash(canonical=False))
    assert make_worker(url, tmp_path).run().outcomes == {"COMPLETE": 1}
    assert (tmp_path / "ckpt" / "legacy" / old.config_hash(canonical=False) / "last.pt").is_file()


class _Recorder(Callback):
    def __init__(self, ctx: TrialContext, seen: list):
        self.ctx, self.seen = ctx, seen
        ctx.set_user_attr(schema.MLFLOW_RUN, f"run-of-{ctx.number}")  # before training starts

    def on_train_start(self, info) -> None:
        self.seen.append(("start", self.ctx.number, info.config.device, info.config.save_dir))

    def on_trial_end(self, state: str, error: str | None) -> None:
        self.seen.append(("end", self.ctx.number, state))


def test_callbacks_factory_is_the_tracking_hook(tmp_path):
    url = sqlite_url(tmp_path)
    StudyQueue(url, create=True).create(parse_spec({
        "name": "hook", "base": dict(TINY), "grid": {"lr": [1e-3]}, "seeds": 1}))
    seen: list = []
    make_worker(url, tmp_path, factory=lambda ctx: [_Recorder(ctx, seen)]).run()
    (t,) = trials(url, "hook")
    assert t.user_attrs[schema.MLFLOW_RUN] == "run-of-0"
    assert seen[0][:3] == ("start", 0, "cpu") and seen[0][3].endswith(t.user_attrs[schema.CONFIG_HASH])
    assert seen[1] == ("end", 0, "COMPLETE")


def test_search_study_samples_exactly_n_trials_across_workers(tmp_path):
    url = sqlite_url(tmp_path)
    spec = parse_spec({
        "name": "tune", "base": {**{k: v for k, v in TINY.items() if k != "batch_size"}, "epochs": 2},
        "seeds": [0],
        "search": {"n_trials": 4, "params": {"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                             "batch_size": [8, 16]},
                   "sampler": {"name": "random", "seed": 0}, "pruner": "median"}})
    StudyQueue(url, create=True).create(spec)
    workers = [make_worker(url, tmp_path) for _ in range(2)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    done = trials(url, "tune")
    assert len(done) == 4  # the budget held: no worker sampled a fifth trial
    assert sum(w.summary.trials for w in workers) == 4
    assert {t.state.name for t in done} <= {"COMPLETE", "PRUNED"}
    for t in done:
        config = t.user_attrs[schema.CONFIG]
        assert set(t.params) == {"lr", "batch_size"}
        assert config["lr"] == t.params["lr"] and config["batch_size"] == t.params["batch_size"]
        assert 1e-4 <= t.params["lr"] <= 1e-2
        assert len(t.intermediate_values) >= 1  # reported per epoch for pruning
    assert len({t.user_attrs[schema.CONFIG_HASH] for t in done}) == 4


def test_device_pinning(monkeypatch):
    assert physical_gpu(1, None) == "1"
    assert physical_gpu(1, "4,6") == "6"  # --gpu indexes what the scheduler made visible
    with pytest.raises(UserError, match="makes 2 GPU"):
        physical_gpu(2, "4,6")
    with pytest.raises(UserError, match="or cpu"):
        pin_device("gpu-zero")
    assert pin_device("cpu") == ("cpu", "cpu")
    import torch

    if not torch.cuda.is_available():
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        with pytest.raises(UserError, match="no CUDA device is visible here"):
            pin_device("0")


# --- real `wno worker` processes -------------------------------------------------------------------------
def started_numbers(logs: list[Path], name: str) -> Counter:
    pattern = re.compile(rf"trial {re.escape(name)}#(\d+) started")
    return Counter(int(n) for log in logs for n in pattern.findall(log.read_text()))


@pytest.mark.slow
def test_four_workers_race_over_twenty_trials_each_runs_once(storage_url, tmp_path):
    name = unique("race")
    study = write_study(tmp_path, name, grid={"lr": [1e-3, 2e-3, 3e-3, 4e-3]}, seeds=5)
    env = worker_env(tmp_path, WNO_STORAGE=storage_url)
    StudyQueue(storage_url, create=True).create(load_spec(study))
    logs = [tmp_path / f"worker{i}.log" for i in range(4)]
    procs = [start_worker(["--gpu", "cpu", "--exit-when-empty", "--study", name], env, log)
             for log in logs]
    for p in procs:
        assert p.wait(timeout=600) == 0
    started = started_numbers(logs, name)
    assert sorted(started) == list(range(20)) and set(started.values()) == {1}, started
    done = trials(storage_url, name)
    assert len(done) == 20 and all(t.state.name == "COMPLETE" for t in done)
    assert sum(1 for log in logs if f"{name}#" in log.read_text()) >= 2, "no race happened"


def checkpoint_of(tmp_path: Path, study: Path) -> Path:
    spec = load_spec(study)
    return tmp_path / "ckpt" / spec.name / spec.plan[0].key


@pytest.mark.slow
def test_sigterm_hands_back_and_a_killed_worker_trial_is_retried_and_resumes(
        storage_url, tmp_path, capsys):
    """One trial's life: worker A gets SIGTERM (hands it back, exits 0), worker B resumes it and
    is killed with SIGKILL (the trial goes stale, is failed and retried), a third worker resumes
    the retry from B's checkpoint and completes it. Every epoch is trained exactly once."""
    name = unique("life")
    study = write_study(tmp_path, name, base={**TINY, "train_size": 512, "epochs": 5,
                                              "batch_size": 32}, grid={"lr": [1e-3]}, seeds=1)
    env = worker_env(tmp_path, WNO_STORAGE=storage_url)
    StudyQueue(storage_url, create=True).create(load_spec(study))
    ckpt = checkpoint_of(tmp_path, study)

    # 1. SIGTERM: the trial goes back to the queue, the worker exits 0
    a = start_worker(["--gpu", "cpu", "--heartbeat", "1"], env, tmp_path / "a.log")  # no exit
    wait_for(lambda: epochs_done(ckpt) >= 1, 300, "worker A's first epoch")
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=120) == 0
    log_a = (tmp_path / "a.log").read_text()
    assert "handed back to the queue" in log_a and "Traceback" not in log_a, log_a
    (t,) = trials(storage_url, name)
    assert t.state.name == "WAITING" and t.number == 0  # the same trial, back in the queue
    assert schema.ERROR not in t.user_attrs
    after_a = epochs_done(ckpt)

    # 2. SIGKILL: worker B resumes it, then dies without a word
    b = start_worker(["--gpu", "cpu", "--exit-when-empty", "--heartbeat", "1"], env,
                     tmp_path / "b.log")
    wait_for(lambda: epochs_done(ckpt) > after_a, 300, "worker B's first epoch")
    b.send_signal(signal.SIGKILL)
    assert b.wait(timeout=30) == -signal.SIGKILL
    log_b = (tmp_path / "b.log").read_text()
    assert re.search(rf"{name}#0: resumed from checkpoint at epoch {after_a}/5", log_b), log_b
    after_b = epochs_done(ckpt)
    assert after_b < 5, "the trial finished before the kill"
    (t,) = trials(storage_url, name)
    assert t.state.name == "RUNNING"  # nobody knows yet

    # 3. once its heartbeat is stale, whoever looks (here `study status`) fails and retries it
    time.sleep(grace(1) + 1.5)
    assert StudyQueue(storage_url).status(name).retried_now == [(0, 1)]
    capsys.readouterr()
    assert make_worker(storage_url, tmp_path).run().outcomes == {"COMPLETE": 1}
    out = capsys.readouterr().out
    resumed = re.search(rf"{name}#1: resumed from checkpoint at epoch (\d+)/5", out)
    assert resumed and int(resumed.group(1)) >= after_b > after_a, out  # (last.pt precedes metrics.json)
    old, new = sorted(trials(storage_url, name), key=lambda t: t.number)
    assert old.state.name == "FAIL" and "worker lost" in old.user_attrs[schema.ERROR]
    assert new.state.name == "COMPLETE" and new.user_attrs[schema.RETRY_OF] == old.number
    assert new.user_attrs[schema.CONFIG_HASH] == old.user_attrs[schema.CONFIG_HASH]
    assert new.user_attrs[schema.METRICS]["epochs_completed"] == 5
    history = json.loads((ckpt / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]  # none trained twice or skipped


@pytest.mark.slow
def test_worker_on_a_real_wavelet_model(tmp_path):
    """The W-MSA model itself (not only the ViT twin) trains through the worker."""
    url = sqlite_url(tmp_path)
    StudyQueue(url, create=True).create(parse_spec({
        "name": "wmsa", "base": {**TINY, "model": "wavelet", "token_layout": "patch",
                                 "n_levels": 2},
        "grid": {"kernel": [True, False]}, "seeds": 1}))
    assert make_worker(url, tmp_path).run().outcomes == {"COMPLETE": 2}
    assert {t.user_attrs[schema.CONFIG]["use_kernel"] for t in trials(url, "wmsa")} == {True, False}


def test_idle_worker_with_a_missing_study_is_an_error(tmp_path):
    url = sqlite_url(tmp_path)
    StudyQueue(url, create=True)
    with pytest.raises(UserError, match="no study named 'nope'"):
        make_worker(url, tmp_path, studies=["nope"]).run()



def test_max_trials_and_idle_timeout(tmp_path):
    url = sqlite_url(tmp_path)
    StudyQueue(url, create=True).create(parse_spec({
        "name": "few", "base": dict(TINY), "grid": {"lr": [1e-3, 2e-3]}, "seeds": 1}))
    assert make_worker(url, tmp_path, max_trials=1).run().outcomes == {"COMPLETE": 1}
    assert sorted(t.state.name for t in trials(url, "few")) == ["COMPLETE", "WAITING"]
    # an idle worker waits for work, then gives up after --idle-timeout seconds
    StudyQueue(url).cancel("few")
    started = time.monotonic()
    assert make_worker(url, tmp_path, idle_timeout=1.5).run().trials == 0
    assert 1.5 <= time.monotonic() - started < 30
