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
from wno.platform.queue import StudyQueue, checkpoint_folder, grace
from wno.platform.spec import load_spec, parse_spec
from wno.platform.worker import (TrialContext, Worker, WorkerOptions, physical_gpu,
                                 pin_device)
from wno.training import Callback


def torch_load(path: Path) -> dict:
    from wno.train_utils import load_checkpoint

    return load_checkpoint(path)


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
        # the checkpoint folder is keyed by (study identity, config hash), not by the trial number
        uid = StudyQueue(url).study_uid("rec", mint=False)
        ckpt = checkpoint_folder(tmp_path / "ckpt", "rec", uid, t.user_attrs[schema.CONFIG_HASH])
        assert (ckpt / "last.pt").is_file()
        assert torch_load(ckpt / "last.pt")["lineage"] == uid
        saved = json.loads((ckpt / "metrics.json").read_text())
        assert saved["config_hash"] == t.user_attrs[schema.CONFIG_HASH]
        assert saved["config"]["lr"] == t.user_attrs[schema.CONFIG]["lr"]  # what was asked


def test_an_exception_fails_that_trial_and_the_worker_goes_on(tmp_path):
    url = sqlite_url(tmp_path)
    spec = parse_spec({"name": "boom", "base": dict(TINY), "grid": {"lr": [1e-3, 3e-3]},
                       "seeds": 1})
    q = StudyQueue(url, create=True)
    q.create(spec)
    # a file where the first trial's checkpoint folder must go: train() cannot save there
    blocked = checkpoint_folder(tmp_path / "ckpt", "boom", q.study_uid("boom"), spec.plan[0].key)
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
    assert (checkpoint_folder(tmp_path / "ckpt", "legacy", q.study_uid("legacy"),
                              old.config_hash(canonical=False)) / "last.pt").is_file()


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
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # recorded: pin_device("cpu") writes it
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert physical_gpu(1, None) == "1"
    assert physical_gpu(1, "4,6") == "6"  # --gpu indexes what the scheduler made visible
    with pytest.raises(UserError, match="makes 2 GPU"):
        physical_gpu(2, "4,6")
    with pytest.raises(UserError, match="or cpu"):
        pin_device("gpu-zero")
    assert pin_device("cpu") == ("cpu", "cpu")
    # No CUDA, simulated, so that the check holds on machines with a GPU too.
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # what pin_device("cpu") wrote
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


def checkpoint_of(tmp_path: Path, study: Path, url: str) -> Path:
    spec = load_spec(study)
    uid = StudyQueue(url).study_uid(spec.name, mint=False)
    return checkpoint_folder(tmp_path / "ckpt", spec.name, uid, spec.plan[0].key)


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
    ckpt = checkpoint_of(tmp_path, study, storage_url)

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


# --- a checkpoint resumes only the trial it belongs to (issue 16) -------------------------------------
class _Starts(Callback):
    """Records where each trial's training started (0: from scratch) and how many steps it ran."""

    def __init__(self, seen: list):
        self.seen, self.steps = seen, 0

    def on_train_start(self, info) -> None:
        self.seen.append([info.start_epoch, 0, info.config.save_dir])

    def on_step(self, progress) -> None:
        self.seen[-1][1] += 1


def run_and_record(url: str, tmp_path: Path, **options) -> list:
    seen: list = []
    summary = make_worker(url, tmp_path, factory=lambda ctx: [_Starts(seen)], **options).run()
    assert summary.outcomes == {"COMPLETE": len(seen)}, summary.outcomes
    return seen


def test_a_study_of_the_same_name_in_another_storage_trains_from_scratch(storage_url, tmp_path):
    """The smoke study recreated in a fresh storage "completed" in seconds: it had resumed the
    checkpoints an earlier study of the same name left in the same checkpoint folder."""
    name = unique("same")
    spec = parse_spec({"name": name, "base": dict(TINY), "grid": {"lr": [1e-3]}, "seeds": 1})
    old_url = f"sqlite:///{tmp_path / 'earlier.db'}"
    StudyQueue(old_url, create=True).create(spec)
    ((start, steps, old_folder),) = run_and_record(old_url, tmp_path)
    assert start == 0 and steps > 0
    before = (Path(old_folder) / "last.pt").read_bytes()

    new = StudyQueue(storage_url, create=True)
    new.create(spec)
    assert new.study_uid(name) != StudyQueue(old_url).study_uid(name)
    ((start, steps, new_folder),) = run_and_record(storage_url, tmp_path)
    assert start == 0 and steps > 0, "the new study resumed the old one's checkpoint"
    assert new_folder != old_folder and Path(new_folder).parent.parent == Path(old_folder).parent.parent
    assert (Path(old_folder) / "last.pt").read_bytes() == before  # the other study's, untouched


def test_a_study_created_again_after_a_delete_trains_from_scratch(tmp_path):
    """Deleted (e.g. on another machine, so its checkpoints stay here) and created again under
    the same name: SQLite may even hand out the same study id again."""
    url = sqlite_url(tmp_path)
    spec = parse_spec({"name": "again", "base": dict(TINY), "grid": {"lr": [1e-3]}, "seeds": 1})
    q = StudyQueue(url, create=True)
    q.create(spec)
    first_id = q.study_id("again")
    ((_, _, first),) = run_and_record(url, tmp_path)
    assert q.delete("again") == Path(first).parent.name  # delete names the checkpoints' key
    q.create(spec)
    ((start, steps, second),) = run_and_record(url, tmp_path)
    assert start == 0 and steps > 0 and second != first, (q.study_id("again"), first_id)


def test_another_lineages_checkpoint_in_the_trial_folder_is_ignored_with_a_warning(tmp_path,
                                                                                  capsys):
    """A folder copied between machines or teams: the checkpoint's own record of its study is
    checked, not only the folder it sits in."""
    import shutil

    spec = parse_spec({"name": "copied", "base": dict(TINY), "grid": {"lr": [1e-3]}, "seeds": 1})
    theirs_url, ours_url = sqlite_url(tmp_path / "theirs"), sqlite_url(tmp_path / "ours")
    for url in (theirs_url, ours_url):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        StudyQueue(url, create=True).create(spec)
    ((_, _, theirs),) = run_and_record(theirs_url, tmp_path)
    ours = checkpoint_folder(tmp_path / "ckpt", "copied", StudyQueue(ours_url).study_uid("copied"),
                             spec.plan[0].key)
    shutil.copytree(theirs, ours)
    capsys.readouterr()
    ((start, steps, folder),) = run_and_record(ours_url, tmp_path)
    assert start == 0 and steps > 0 and Path(folder) == ours
    log = capsys.readouterr().out
    assert re.search(rf"warning: checkpoint in {re.escape(str(ours))} ignored: it belongs to "
                     rf"another study", log), log
    assert len(list(ours.glob("ignored-*/last.pt"))) == 1  # kept, set aside


def test_a_study_created_before_identities_gets_one_and_never_resumes_older_checkpoints(
        tmp_path, capsys):
    """A study created by an older wno has no identity; its checkpoints then lived in
    <root>/<study>/<config hash>/ and cannot be told from another same-named study's."""
    import sqlalchemy as sa

    from wno.platform.queue import legacy_checkpoint_folder
    from wno.platform.schema import STUDY_UID
    from wno.training import train
    from wno.training.config import TrainConfig

    url = sqlite_url(tmp_path)
    spec = parse_spec({"name": "older", "base": dict(TINY), "grid": {"lr": [1e-3]}, "seeds": 1})
    q = StudyQueue(url, create=True)
    q.create(spec)
    with q.store.engine.begin() as conn:  # as an older wno left it: no identity
        conn.execute(sa.text("DELETE FROM study_user_attributes WHERE key = :k"), {"k": STUDY_UID})
    assert q.study_uid("older", mint=False) is None
    legacy = legacy_checkpoint_folder(tmp_path / "ckpt", "older", spec.plan[0].key)
    config = TrainConfig.from_dict(spec.plan[0].user_attrs()[schema.CONFIG])
    train(config.replace(save_dir=str(legacy), data_dir=str(tmp_path / "data")))
    capsys.readouterr()

    ((start, steps, folder),) = run_and_record(url, tmp_path)
    uid = q.study_uid("older", mint=False)
    assert uid and Path(folder) == checkpoint_folder(tmp_path / "ckpt", "older", uid,
                                                     spec.plan[0].key)
    assert start == 0 and steps > 0
    assert f"checkpoint in {legacy} ignored" in capsys.readouterr().out
    assert q.study_uid("older") == uid  # minted once, then kept
    assert (legacy / "last.pt").is_file()  # not ours to delete


# --- CPU workers share the machine (issue 16) ----------------------------------------------------------
@pytest.fixture
def torch_threads():
    """Restore torch's thread count after a test that lets a worker change it."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class _Threads(Callback):
    """Records torch's thread count when training starts and after each epoch."""

    def __init__(self, seen: list, on_first_epoch=None):
        self.seen, self.on_first_epoch = seen, on_first_epoch

    def on_train_start(self, info) -> None:
        import torch

        self.seen.append(("start", torch.get_num_threads()))

    def on_epoch_end(self, m) -> None:
        import torch

        self.seen.append((m.epoch, torch.get_num_threads()))
        if m.epoch == 1 and self.on_first_epoch:
            self.on_first_epoch()


def test_cpu_workers_divide_the_cores_and_follow_workers_that_come(tmp_path, monkeypatch,
                                                                   torch_threads):
    from wno.platform.cpu_share import CpuShare, machine_cores, share_of

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    url = sqlite_url(tmp_path)
    StudyQueue(url, create=True).create(parse_spec({
        "name": "share", "base": {**TINY, "epochs": 3}, "grid": {"lr": [1e-3]}, "seeds": 1}))
    registry, cores = tmp_path / "cpu-workers", machine_cores()
    other = CpuShare(registry)  # a second CPU worker, starting after our first epoch
    seen: list = []
    try:
        make_worker(url, tmp_path, cpu_registry=str(registry),
                    factory=lambda ctx: [_Threads(seen, other.register)]).run()
        shared = {share_of(cores, 2, rank) for rank in (0, 1)}
    finally:
        other.unregister()
    # alone: every core; once the other registered, recounted after the next epoch: a share
    assert seen[0] == ("start", cores) and seen[1] == (1, cores), seen
    assert seen[2][1] in shared and seen[3][1] in shared, seen


def test_threads_given_are_used_and_omp_num_threads_caps_the_share(tmp_path, monkeypatch,
                                                                  torch_threads):
    url = sqlite_url(tmp_path)
    StudyQueue(url, create=True).create(parse_spec({
        "name": "fixed", "base": dict(TINY), "grid": {"lr": [1e-3, 2e-3]}, "seeds": 1}))
    seen: list = []
    make_worker(url, tmp_path, threads=1, max_trials=1,
                factory=lambda ctx: [_Threads(seen)]).run()
    assert seen == [("start", 1), (1, 1)]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    seen.clear()
    make_worker(url, tmp_path, cpu_registry=str(tmp_path / "reg"),
                factory=lambda ctx: [_Threads(seen)]).run()
    assert seen == [("start", 1), (1, 1)]


def test_a_dead_workers_registration_is_not_counted(tmp_path, monkeypatch):
    """SIGKILL leaves the lock file behind, but not the lock: the next count removes it."""
    import subprocess
    import sys

    from wno.platform.cpu_share import CpuShare

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    registry = tmp_path / "cpu-workers"
    code = ("import sys, time\nfrom wno.platform.cpu_share import CpuShare\n"
            f"CpuShare({str(registry)!r}).register()\nprint('registered', flush=True)\n"
            "time.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "registered"
        with CpuShare(registry, cores=4) as me:
            assert len(me.workers()) == 2 and me.threads() == 2  # 4 cores between 2 workers
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
            assert me.workers() == [me.name] and me.threads() == 4
            assert [p.name for p in registry.glob("*.lock")] == [me.name]  # the dead one's, gone
        assert not list(registry.glob("*.lock"))  # ours, gone on exit
    finally:
        child.kill()
        child.wait()
