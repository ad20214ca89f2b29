"""MLflow tracking against a real local store (SQLite + artifact folder), with real trainings of a
micro wavelet model on the synthetic set: one complete run per training, resumed trainings
continuing the same run with every epoch once, epochs that never reached MLflow filled in, a run
replaced when its checkpoint is gone, no password anywhere in MLflow, and the background sender's
ordering, retries and give-ups. The tracking server and `wno ui` are in test_tracking_server.py."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from wno.training.config import TrainConfig
from wno.platform import defaults, schema, tracking
from wno.platform.tracking import sender
from wno.training import Callback, train

# The helpers below are shared with test_tracking_server.py.


def tiny_config(folder: Path, name: str = "run", **changes) -> TrainConfig:
    """A 3-epoch micro wavelet run on 64 synthetic images (seconds on one CPU core)."""
    base = dict(dataset="synthetic", model_size="micro", token_layout="patch", token_patch=4,
                train_size=64, val_size=32, test_size=32, epochs=3, batch_size=32,
                warmup_epochs=0.5, device="cpu", save_dir=str(folder / name),
                data_dir=str(folder / "data"))
    base.update(changes)
    return TrainConfig(**base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def active_runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def download_text(client, run_id: str, path: str, dest: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(dest))).read_text()


def assert_complete_run(client, run_id: str, config: TrainConfig, result, tmp_path: Path) -> None:
    """Everything a finished training leaves in its MLflow run."""
    import torch

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    # params: every TrainConfig field but the machine ones, with its value
    assert run.data.params == {k: str(v) for k, v in config.to_dict(machine=False).items()}
    tags = run.data.tags
    assert tags["wno.config_hash"] == config.config_hash()
    assert tags["wno.seed"] == str(config.seed)
    assert tags["wno.save_dir"] == config.save_dir and tags["wno.device"] == "cpu"
    # per-epoch metrics: one point per epoch, the values the training reported
    for key in schema.EPOCH_METRICS:
        points = history(client, run_id, key)
        assert [s for s, _ in points] == list(range(1, config.epochs + 1)), key
        expected = [getattr(m, key) for m in result.history]
        assert [v for _, v in points] == pytest.approx(expected, nan_ok=True), key
    # final metrics: once, at the last epoch, equal to the result
    for key, value in result.metrics().items():
        assert history(client, run_id, key) == [(config.epochs, pytest.approx(value))], key
    assert set(schema.FINAL_METRICS) <= set(run.data.metrics)
    # artifacts: the resolved config, the environment, metrics.json, the final weights
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "environment.json", "metrics.json", "checkpoints"} <= names
    saved = yaml.safe_load(download_text(client, run_id, "config.yaml", tmp_path / "a1"))
    assert TrainConfig.from_dict(saved) == config
    env = json.loads(download_text(client, run_id, "environment.json", tmp_path / "a2"))
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] or \
        env["packages"]["torch"] == torch.__version__
    git = tracking.git_info()
    if git is not None:
        assert env["git"]["commit"] == git["commit"] == tags["mlflow.source.git.commit"]
    metrics_json = json.loads(download_text(client, run_id, "metrics.json", tmp_path / "a3"))
    assert len(metrics_json["history"]) == config.epochs
    final = torch.load(client.download_artifacts(run_id, "checkpoints/final.pt",
                                                 str(tmp_path / "a4")), weights_only=True)
    assert final["epoch"] == config.epochs and final["config_hash"] == config.config_hash()
    assert "optimizer" not in final and final["model"]


class StopAfterEpoch(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, m):
        return m.epoch >= self.epoch


class StopDuringEpoch(Callback):
    """should_stop_now: abandon epoch `epoch` at its first step (like a signal would)."""

    def __init__(self, epoch: int):
        self.epoch, self.current = epoch, 0

    def on_step(self, p):
        self.current = p.epoch

    def should_stop_now(self):
        return self.current == self.epoch


@pytest.fixture(scope="module")
def local_store(tmp_path_factory) -> str:
    """A real local MLflow store (SQLite file, artifacts beside it), created once per module:
    a new store takes MLflow seconds to lay out."""
    folder = tmp_path_factory.mktemp("mlflow-local")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracking.quiet_mlflow()
    client_for(uri).search_experiments()  # creates the tables
    return uri


# --- real trainings on the local store ---------------------------------------------------------------
@pytest.mark.slow
def test_a_training_is_one_complete_run(tmp_path, local_store):
    config = tiny_config(tmp_path)
    experiment = f"e-{uuid.uuid4().hex[:8]}"
    tracker = tracking.train_tracker(config, tracking_uri=local_store, experiment=experiment,
                                     system_metrics_interval=0.2)
    result = train(config, [tracker])
    client = client_for(local_store)
    runs = active_runs(client, experiment)
    assert [r.info.run_id for r in runs] == [tracker.run_id]
    assert runs[0].info.run_name == tracking.describe(config)
    assert_complete_run(client, tracker.run_id, config, result, tmp_path)
    # system metrics through MLflow's own monitor
    assert any(k.startswith("system/cpu_utilization") for k in runs[0].data.metrics)
    # artifacts of the local store live beside its SQLite file
    exp = client.get_experiment_by_name(experiment)
    db = Path(local_store.removeprefix("sqlite:///"))
    assert exp.artifact_location == (db.parent / "mlartifacts").resolve().as_uri()
    assert tracker.outbox.failures == 0 and tracker.outbox.pending == 0


@pytest.mark.slow
def test_stopped_and_resumed_trainings_continue_the_same_run(tmp_path, local_store):
    config = tiny_config(tmp_path)
    experiment = f"e-{uuid.uuid4().hex[:8]}"
    client = client_for(local_store)

    def attempt(*stoppers):
        tracker = tracking.train_tracker(config, tracking_uri=local_store, experiment=experiment,
                                         system_metrics=False)
        return tracker, train(config, [tracker, *stoppers], resume=True)

    first, r1 = attempt(StopAfterEpoch(1))  # a callback returns True after epoch 1
    assert r1.stopped and client.get_run(first.run_id).info.status == "KILLED"
    assert [s for s, _ in history(client, first.run_id, "val_acc")] == [1]
    assert "test_acc" not in client.get_run(first.run_id).data.metrics  # not final yet

    second, r2 = attempt(StopDuringEpoch(3))  # stopped inside epoch 3, after epoch 2
    assert r2.stopped and r2.epochs_completed == 2
    assert second.run_id == first.run_id

    third, r3 = attempt()
    assert not r3.stopped and third.run_id == first.run_id
    assert [r.info.run_id for r in active_runs(client, experiment)] == [first.run_id]
    assert_complete_run(client, first.run_id, config, r3, tmp_path)
    tags = client.get_run(first.run_id).data.tags
    assert tags["wno.attempts"] == "3" and tags["wno.start_epoch"] == "2"


@pytest.mark.slow
def test_epochs_that_never_reached_mlflow_are_filled_in_on_resume(tmp_path, local_store, caplog):
    """MLflow unreachable for the first attempt: training is unharmed; the resumed attempt
    fills in the epochs MLflow missed from the checkpoint's history."""
    config = tiny_config(tmp_path)
    experiment = f"e-{uuid.uuid4().hex[:8]}"
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    caplog.set_level(logging.WARNING, logger="wno.platform.tracking")
    lost = tracking.train_tracker(config, tracking_uri=nowhere, experiment=experiment,
                                  open_timeout=2, drain_timeout=1, backoff=(0.1, 0.5))
    r1 = train(config, [lost, StopAfterEpoch(2)])
    assert r1.stopped and r1.epochs_completed == 2  # training went on without MLflow
    assert lost.run_id is None and lost.outbox.failures > 0
    assert any("cannot reach" in r.getMessage() for r in caplog.records)

    tracker = tracking.train_tracker(config, tracking_uri=local_store, experiment=experiment,
                                     system_metrics=False)
    r2 = train(config, [tracker])
    client = client_for(local_store)
    assert [r.info.run_id for r in active_runs(client, experiment)] == [tracker.run_id]
    assert_complete_run(client, tracker.run_id, config, r2, tmp_path)
    assert client.get_run(tracker.run_id).data.tags["wno.start_epoch"] == "2"


@pytest.mark.slow
def test_a_run_holding_epochs_the_checkpoint_lacks_is_replaced(tmp_path, local_store):
    """The checkpoint is gone (e.g. another machine), so training restarts at epoch 1: the run
    that holds the old epochs is replaced by a new one and deleted, never mixed."""
    from mlflow.entities import Metric

    config = tiny_config(tmp_path)
    experiment = f"e-{uuid.uuid4().hex[:8]}"
    client = client_for(local_store)
    target = tracking.train_target(config, tracking_uri=local_store, experiment=experiment)
    exp_id = tracking.ensure_experiment(client, experiment, tracking.artifact_root(local_store))
    old = client.create_run(exp_id, run_name=target.run_name, tags=target.identity).info.run_id
    client.log_batch(old, metrics=[Metric("val_acc", 0.5, 0, e) for e in (1, 2)])

    tracker = tracking.MlflowTracker(target, system_metrics=False)
    result = train(config, [tracker])
    assert tracker.run_id != old
    assert client.get_run(old).info.lifecycle_stage == "deleted"
    assert client.get_run(old).data.tags["wno.replaced_by"] == tracker.run_id
    assert client.get_run(tracker.run_id).data.tags["wno.replaces"] == old
    assert [r.info.run_id for r in active_runs(client, experiment)] == [tracker.run_id]
    assert_complete_run(client, tracker.run_id, config, result, tmp_path)


@pytest.mark.slow
def test_no_password_reaches_mlflow(tmp_path, local_store):
    """A trial's storage URL and an error quoting it: MLflow sees them masked, everywhere."""
    secret = f"pw-{uuid.uuid4().hex}"
    storage = f"postgresql+psycopg://wno:{secret}@db.example:5432/wno"
    config = tiny_config(tmp_path)
    study = f"s-{uuid.uuid4().hex[:8]}"
    attrs = {schema.CONFIG: config.to_dict(machine=False), schema.CONFIG_HASH: config.config_hash(),
             schema.GROUP: "use_kernel=True", schema.SEED: 0, schema.ROLE: schema.ROLE_MODEL,
             schema.FACTORS: {"use_kernel": True}, schema.RETRY_OF: 3}
    target = tracking.trial_target(study=study, number=4, trial_id=9, attrs=attrs, config=config,
                                   storage_url=storage, host="h", device="cpu",
                                   retry_history=[3], tracking_uri=local_store,
                                   description=f"stored in {storage}")
    stored = []
    tracker = tracking.MlflowTracker(target, managed=True, on_run_id=stored.append,
                                     system_metrics=False, checkpoints="both")
    assert tracker.open() is not None and stored == [tracker.run_id]
    train(config, [tracker])
    tracker.on_trial_end("FAIL", f"OperationalError: cannot connect to {storage}")

    client = client_for(local_store)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    tags = run.data.tags
    assert tags["wno.storage"] == "postgresql+psycopg://wno:***@db.example:5432/wno"
    assert tags["wno.error"] == "OperationalError: cannot connect to postgresql+psycopg://wno:***@db.example:5432/wno"
    assert tags["wno.study"] == study and tags["wno.trial_number"] == "4"
    assert tags["wno.trial_id"] == "9" and tags["wno.trial_numbers"] == "4"
    assert tags["wno.retry_of"] == "3" and tags["wno.retry_history"] == "3"
    assert tags["wno.group"] == "use_kernel=True" and tags["wno.state"] == "FAIL"
    assert run.info.run_name == "use_kernel=True, seed=0"
    exp = client.get_experiment_by_name(study)
    everything = [json.dumps(run.data.params), json.dumps(tags), json.dumps(run.data.metrics),
                  json.dumps(exp.tags), run.info.run_name]
    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "all")))
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.yaml", "environment.json", "metrics.json",
                                        "final.pt", "best.pt"}
    blobs = [p.read_bytes() for p in files]
    assert not any(secret in text for text in everything)
    assert not any(secret.encode() in blob for blob in blobs)


@pytest.mark.slow
def test_workers_starting_together_on_a_new_store_do_not_break_it(tmp_path):
    """MLflow lays out a new SQLite store with dozens of migrations; four processes doing it at
    once leave it broken for good unless they take turns."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    code = ("import sys; from wno.platform import tracking; "
            "print(len(tracking.client_for(sys.argv[1]).search_experiments()))")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err[-2000:] for _, err in outs]
    client = client_for(uri)
    exp = tracking.ensure_experiment(client, "after", tracking.artifact_root(uri))
    client.log_batch(client.create_run(exp).info.run_id, params=[])


# --- a study trained by a worker ------------------------------------------------------------------------
TINY_WAVELET = dict(model_size="micro", dataset="synthetic", token_layout="patch", token_patch=4,
                    train_size=64, val_size=32, test_size=32, epochs=2, batch_size=32,
                    warmup_epochs=0.5)


def study_spec(name: str, **changes):
    from wno.platform.spec import parse_spec

    doc = {"name": name, "description": "kernel on/off against ViT",
           "base": {**TINY_WAVELET, **changes}, "grid": {"kernel": [True, False]}, "seeds": 1,
           "baselines": {"vit": {}}, "objective": {"metric": "best_val_acc"}}
    return parse_spec(doc)


def assert_trial_runs(client, storage: str, name: str, tmp_path: Path) -> dict[int, str]:
    """Every COMPLETE trial of study `name` has its own finished MLflow run in the study's
    experiment, linked both ways, holding its config, curves, final metrics and artifacts."""
    from platform_helpers import trials

    done = [t for t in trials(storage, name) if t.state.name == "COMPLETE"]
    runs = {r.info.run_id: r for r in active_runs(client, name)}
    assert sorted(runs) == sorted(t.user_attrs[schema.MLFLOW_RUN] for t in done)
    for t in done:
        attrs = t.user_attrs
        run = runs[attrs[schema.MLFLOW_RUN]]
        tags = run.data.tags
        assert run.info.status == "FINISHED" and tags["wno.state"] == "COMPLETE"
        assert run.info.run_name == f"{attrs[schema.GROUP]}, seed={attrs[schema.SEED]}"
        assert tags["wno.study"] == name and tags["wno.trial_number"] == str(t.number)
        assert tags["wno.trial_id"] == str(t._trial_id)
        assert tags["wno.config_hash"] == attrs[schema.CONFIG_HASH]
        assert tags["wno.role"] == attrs[schema.ROLE] and tags["wno.group"] == attrs[schema.GROUP]
        assert run.data.params == {k: str(v) for k, v in attrs[schema.CONFIG].items()}
        epochs = attrs[schema.CONFIG]["epochs"]
        for key in schema.EPOCH_METRICS:
            assert [s for s, _ in history(client, run.info.run_id, key)] == \
                list(range(1, epochs + 1)), key
        for key, value in attrs[schema.METRICS].items():
            assert history(client, run.info.run_id, key) == [(epochs, pytest.approx(value))]
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "environment.json", "metrics.json", "checkpoints"} <= names
        saved = yaml.safe_load(download_text(client, run.info.run_id, "config.yaml",
                                             tmp_path / f"c{t.number}"))
        assert TrainConfig.from_dict(saved).config_hash() == attrs[schema.CONFIG_HASH]
    return {t.number: t.user_attrs[schema.MLFLOW_RUN] for t in done}


@pytest.mark.slow
def test_a_study_run_by_a_worker_is_one_run_per_trial(tmp_path, local_store, monkeypatch):
    from wno.platform.queue import StudyQueue
    from wno.platform.worker import Worker, WorkerOptions

    monkeypatch.setenv("MLFLOW_TRACKING_URI", local_store)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    name = f"s-{uuid.uuid4().hex[:8]}"
    StudyQueue(storage, create=True).create(study_spec(name))
    options = WorkerOptions(device="cpu", device_label="cpu", idle_timeout=0,
                            data_dir=str(tmp_path / "data"), checkpoint_dir=str(tmp_path / "ckpt"),
                            heartbeat_interval=1.0, poll_interval=0.2)
    summary = Worker(StudyQueue(storage), options,
                     callbacks_factory=tracking.trial_callbacks).run()
    assert summary.outcomes == {"COMPLETE": 3}
    client = client_for(local_store)
    assert len(assert_trial_runs(client, storage, name, tmp_path)) == 3
    exp = client.get_experiment_by_name(name)
    assert exp.tags["mlflow.note.content"] == "kernel on/off against ViT"


# --- a retried trial finds its run: by the stored id, else by its tags -----------------------------------
def _trial_run_setup(store: str, stored: str | None = None):
    """A trial's RunTarget on `store` (run id `stored` kept on the trial, if any), with its
    study's experiment created; (target, client, experiment id)."""
    config = TrainConfig(dataset="synthetic", model_size="micro")
    attrs = {schema.CONFIG_HASH: config.config_hash(), schema.SEED: 0, schema.GROUP: "lr=0.001",
             schema.ROLE: schema.ROLE_MODEL}
    if stored is not None:
        attrs[schema.MLFLOW_RUN] = stored
    target = tracking.trial_target(study=f"s-{uuid.uuid4().hex[:8]}", number=5, trial_id=50,
                                   attrs=attrs, config=config, storage_url="sqlite:///o.db",
                                   host="h", device="cpu", tracking_uri=store)
    client = client_for(store)
    return target, client, tracking.ensure_experiment(client, target.experiment,
                                                      tracking.artifact_root(store))


def _tagged_runs(client, exp_id: str, identity: dict, n: int) -> list[str]:
    """`n` runs carrying the trial's identity tags, oldest first (start times a minute apart, so
    that the tag search, which takes the oldest, is deterministic)."""
    now = int(time.time() * 1000)
    return [client.create_run(exp_id, start_time=now - 60_000 * (n - i), tags=identity)
            .info.run_id for i in range(n)]


def _open(target, monkeypatch) -> tuple[str | None, list[str], list[dict]]:
    """Open the trial's tracker as a worker does; (run id, ids it announced for the trial,
    tag searches it made)."""
    from wno.platform.tracking import tracker as tracker_module

    searches, announced = [], []
    search = tracker_module.find_run

    def spy(client, experiment_id, identity):
        searches.append(dict(identity))
        return search(client, experiment_id, identity)

    monkeypatch.setattr(tracker_module, "find_run", spy)
    tracker = tracking.MlflowTracker(target, managed=True, on_run_id=announced.append,
                                     system_metrics=False)
    try:
        return tracker.open(), announced, searches
    finally:
        tracker.close(None)


def test_a_retried_trial_continues_the_run_whose_id_it_stored(local_store, monkeypatch):
    """Two runs carry the trial's identity tags; the tag search would take the older one. The
    trial stored the newer one's id: that run is continued, without searching.

    Catches: a tracker that ignores the stored id (the tag search usually finds the same run,
    which is why the worker tests cannot tell), or searches first and prefers what it finds."""
    target, client, exp_id = _trial_run_setup(local_store)
    older, newer = _tagged_runs(client, exp_id, target.identity, 2)
    assert tracking.find_run(client, exp_id, target.identity).info.run_id == older
    target.run_id = newer
    run_id, announced, searches = _open(target, monkeypatch)
    assert run_id == newer and announced == [newer]
    assert searches == [], "searched by tags although the trial holds a usable run id"
    assert client.get_run(older).data.tags.get("wno.attempts") is None  # left alone
    assert client.get_run(newer).data.tags["wno.attempts"] == "1"


def test_a_trial_without_a_stored_run_id_finds_its_run_by_tags(local_store, monkeypatch):
    """No run id on the trial (it died before storing it): the run is found by the identity tags
    (study, config hash), the oldest when several match, and its id is stored on the trial."""
    target, client, exp_id = _trial_run_setup(local_store)
    older, _ = _tagged_runs(client, exp_id, target.identity, 2)
    assert target.run_id is None
    run_id, announced, searches = _open(target, monkeypatch)
    assert run_id == older and announced == [older]
    assert searches == [target.identity]


def test_a_stored_run_id_of_a_deleted_run_is_not_continued(local_store, monkeypatch):
    """The trial's run was deleted in MLflow (by a user, or replaced by wno): a retry neither
    writes into it nor restores it. It continues in an active run, and the trial learns that
    run's id."""
    target, client, exp_id = _trial_run_setup(local_store)
    (gone,) = _tagged_runs(client, exp_id, target.identity, 1)
    client.delete_run(gone)
    target.run_id = gone
    run_id, announced, _ = _open(target, monkeypatch)
    assert run_id is not None and run_id != gone
    assert announced == [run_id]
    assert client.get_run(run_id).info.lifecycle_stage == "active"
    deleted = client.get_run(gone)
    assert deleted.info.lifecycle_stage == "deleted"
    assert "wno.attempts" not in deleted.data.tags


def test_a_stored_run_id_of_a_deleted_run_is_reported(local_store, monkeypatch, caplog):
    """What the worker's log says when the trial's stored run is deleted: that run's id, that it
    is deleted, and that MLflow can restore it; otherwise a user who restores the run later
    finds two runs for one trial and no word of why."""
    caplog.set_level(logging.WARNING, logger="wno.platform.tracking")
    target, client, exp_id = _trial_run_setup(local_store)
    (gone,) = _tagged_runs(client, exp_id, target.identity, 1)
    client.delete_run(gone)
    target.run_id = gone
    run_id, _, _ = _open(target, monkeypatch)
    said = [r.getMessage() for r in caplog.records if gone in r.getMessage()]
    assert said, "nothing logged about the deleted run"
    assert "deleted" in said[0] and "restore" in said[0]


# --- the background sender, with real threads ---------------------------------------------------------
def _outbox(calls, **kw):
    return sender.Outbox("t", lambda ops: calls.append([op.what for op in ops]),
                            "somewhere", backoff=(0.01, 0.05), **kw)


def test_the_sender_keeps_order_and_retries_what_failed(caplog):
    caplog.set_level(logging.WARNING, logger="wno.platform.tracking")
    calls, failures = [], {"n": 3}

    def flaky():
        if failures["n"]:
            failures["n"] -= 1
            raise ConnectionError("server away")
        calls.append(["flaky"])

    box = _outbox(calls)
    box.put(sender.Op("flaky", flaky))
    for e in (1, 2, 3):
        box.put(sender.Op(f"epoch {e}", metrics=[e], epoch=e))
    box.put(sender.Op("last", lambda: calls.append(["last"])))
    assert box.drain(10)
    # the failed op was retried until it went through, nothing overtook it, epochs went as one
    assert calls == [["flaky"], ["epoch 1", "epoch 2", "epoch 3"], ["last"]]
    assert box.failures == 3 and box.outages == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot reach somewhere (server away)" in m for m in messages)
    assert any("reachable again" in m for m in messages)


def test_the_sender_gives_up_only_on_errors_retrying_cannot_fix(caplog):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    caplog.set_level(logging.WARNING, logger="wno.platform.tracking")
    calls = []

    def refused():
        raise MlflowException("Changing param values is not allowed",
                              error_code=INVALID_PARAMETER_VALUE)

    def bug():
        raise TypeError("a bug, not an outage")

    box = _outbox(calls)
    box.put(sender.Op("params", refused))
    box.put(sender.Op("buggy", bug))
    box.put(sender.Op("after", lambda: calls.append(["after"])))
    assert box.drain(10)
    assert box.dropped == ["params", "buggy"] and calls == [["after"]] and box.failures == 0
    assert any("not retried" in r.getMessage() for r in caplog.records)


def test_a_drain_that_times_out_leaves_the_op_queued():
    gate = threading.Event()

    def blocked():
        if not gate.is_set():
            raise ConnectionError("down")

    box = _outbox([])
    box.put(sender.Op("blocked", blocked))
    assert not box.drain(0.3) and box.pending == 1
    gate.set()
    assert box.drain(10) and box.pending == 0


# --- what a run records, without training -----------------------------------------------------------
def test_params_are_the_config_without_machine_fields_and_masked():
    config = TrainConfig(data_dir="postgresql://u:hunter2@h/db", save_dir="/tmp/x")
    params = tracking.run_params(config)
    assert set(params) == set(TrainConfig.field_names()) - TrainConfig.machine_fields()
    tags = tracking.machine_tags(config)
    assert tags["wno.data_dir"] == "postgresql://u:***@h/db" and tags["wno.save_dir"] == "/tmp/x"
    assert "hunter2" not in tracking.config_yaml(config)


def test_checkpoint_policy_names_what_is_allowed(monkeypatch):
    assert tracking.checkpoint_policy() == "final"
    monkeypatch.setenv(tracking.ENV_CHECKPOINTS, "BEST")
    assert tracking.checkpoint_policy() == "best"
    monkeypatch.setenv(tracking.ENV_CHECKPOINTS, "latest")
    with pytest.raises(ValueError, match="none, final, best, both"):
        tracking.checkpoint_policy()
    with pytest.raises(ValueError, match="checkpoints='all'"):
        tracking.MlflowTracker(tracking.train_target(TrainConfig()), checkpoints="all")


def test_artifacts_of_a_local_store_live_beside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WNO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.artifact_root(f"sqlite:///{tmp_path}/m.db") == (tmp_path / "mlartifacts").as_uri()
    assert tracking.artifact_root(defaults.tracking_uri()) == \
        defaults.artifact_location()
    assert tracking.artifact_root("http://127.0.0.1:5000") is None


# --- `wno worker` processes (the CLI wires the tracker in) ---------------------------------------------
@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_one_run_with_every_epoch_once(tmp_path):
    """Worker A is SIGKILLed after its first epoch; once the trial is stale, worker B retries it
    from A's checkpoint: one MLflow run for the configuration, each epoch in it once."""
    import signal

    from platform_helpers import epochs_done, start_worker, trials, wait_for, worker_env, write_study
    from wno.platform.queue import StudyQueue, checkpoint_folder, grace
    from wno.platform.spec import load_spec

    name = f"kill-{uuid.uuid4().hex[:8]}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    spec = load_spec(write_study(tmp_path, name, base={**TINY_WAVELET, "train_size": 256,
                                                       "epochs": 4},
                                 grid={"lr": [2e-3]}, seeds=1))
    queue = StudyQueue(storage, create=True)
    queue.create(spec)
    env = worker_env(tmp_path, WNO_STORAGE=storage)
    ckpt = checkpoint_folder(tmp_path / "ckpt", name, queue.study_uid(name), spec.plan[0].key)

    a = start_worker(["--gpu", "cpu", "--heartbeat", "0.5"], env, tmp_path / "a.log")
    wait_for(lambda: epochs_done(ckpt) >= 1, 300, "worker A's first epoch")
    a.send_signal(signal.SIGKILL)
    assert a.wait(timeout=30) == -signal.SIGKILL
    killed_after = epochs_done(ckpt)
    assert killed_after < 4, "the trial finished before the kill"
    (t0,) = trials(storage, name)
    run_id = t0.user_attrs[schema.MLFLOW_RUN]  # stored before training started

    time.sleep(grace(0.5) + 1.5)  # A's heartbeat goes stale
    b = start_worker(["--gpu", "cpu", "--heartbeat", "0.5", "--exit-when-empty"], env,
                     tmp_path / "b.log")
    assert b.wait(timeout=600) == 0, (tmp_path / "b.log").read_text()
    log_b = (tmp_path / "b.log").read_text()
    assert "resumed from checkpoint" in log_b and "Traceback" not in log_b, log_b

    old, new = sorted(trials(storage, name), key=lambda t: t.number)
    assert old.state.name == "FAIL" and new.state.name == "COMPLETE"
    assert new.user_attrs[schema.MLFLOW_RUN] == run_id  # the retry continued the same run
    client = client_for(env["MLFLOW_TRACKING_URI"])
    assert [r.info.run_id for r in active_runs(client, name)] == [run_id]
    for key in schema.EPOCH_METRICS:
        assert [s for s, _ in history(client, run_id, key)] == [1, 2, 3, 4], key
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["wno.trial_numbers"] == f"{old.number},{new.number}"
    assert tags["wno.trial_number"] == str(new.number) and tags["wno.attempts"] == "2"
    assert tags["wno.retry_of"] == str(old.number) and tags["wno.retry_history"] == str(old.number)
    assert int(tags["wno.start_epoch"]) >= killed_after
    for key, value in new.user_attrs[schema.METRICS].items():
        assert history(client, run_id, key) == [(4, pytest.approx(value))], key


# --- wno train ----------------------------------------------------------------------------------------
def _train_cli(args: list, uri: str | None):
    from typer.testing import CliRunner

    from wno.cli import app

    extra = ["--tracking-uri", uri] if uri else []
    return CliRunner().invoke(app, ["train", *map(str, args), *extra])


@pytest.mark.slow
def test_wno_train_is_tracked_and_the_same_command_continues_its_run(tmp_path, local_store):
    save = tmp_path / "run"
    args = ["--dataset", "synthetic", "--model-size", "micro", "--set", "token_layout=patch",
            "--set", "token_patch=4", "--train-size", 64, "--val-size", 32, "--test-size", 32,
            "--batch-size", 32, "--epochs", 2, "--device", "cpu", "--save-dir", save,
            "--data-dir", tmp_path / "data"]
    client = client_for(local_store)

    def runs():
        return [r for r in active_runs(client, tracking.TRAIN_EXPERIMENT)
                if r.data.tags.get("wno.checkpoint_dir") == str(save.resolve())]

    first = _train_cli(args, local_store)
    assert first.exit_code == 0, first.output
    (run,) = runs()
    run_id = run.info.run_id
    assert f"mlflow: run {run_id} in {local_store} (browse: wno ui)" in first.output
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "2"
    assert [s for s, _ in history(client, run_id, "val_acc")] == [1, 2]

    again = _train_cli(args, local_store)  # finished: only evaluated again, into the same run
    assert again.exit_code == 0 and "resuming after epoch 2/2" in again.output, again.output
    assert [r.info.run_id for r in runs()] == [run_id]
    assert [s for s, _ in history(client, run_id, "val_acc")] == [1, 2]
    assert len(history(client, run_id, "test_acc")) == 1
    assert client.get_run(run_id).data.tags["wno.attempts"] == "2"

    untracked = _train_cli([*args, "--no-track"], local_store)
    assert untracked.exit_code == 0 and "mlflow:" not in untracked.output
    assert client.get_run(run_id).data.tags["wno.attempts"] == "2"

    fresh = _train_cli([*args, "--no-resume"], local_store)  # starts over: a new run
    assert fresh.exit_code == 0, fresh.output
    assert len(runs()) == 2 and client.get_run(run_id).info.lifecycle_stage == "active"
