"""What the MLflow UI shows of a run beyond metrics: the data set it trained on (a dataset input,
the UI's Dataset column) and an experiment that opens on its training runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_tracking import client_for, tiny_config
from wno.platform import tracking
from wno.training import train


@pytest.fixture
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _inputs(uri: str, run_id: str) -> list:
    return client_for(uri).get_run(run_id).inputs.dataset_inputs


@pytest.mark.slow
def test_runs_log_the_data_set_they_trained_on_and_subsets_are_told_apart(tmp_path, store):
    runs = {}
    for name, train_size in (("a", 64), ("b", 48), ("c", 64)):
        cfg = tiny_config(tmp_path, name, train_size=train_size, epochs=1,
                          seed={"a": 0, "b": 0, "c": 1}[name])
        tracker = tracking.train_tracker(cfg, tracking_uri=store, experiment="ds",
                                         system_metrics=False)
        train(cfg, [tracker])
        runs[name] = tracker.run_id
    inputs = {name: _inputs(store, run) for name, run in runs.items()}
    for name, found in inputs.items():
        assert len(found) == 1, name
        d = found[0].dataset
        assert d.name == "synthetic" and d.source_type == "local"
        assert [(t.key, t.value) for t in found[0].tags] == [("mlflow.data.context", "training")]
    a, b, c = (inputs[n][0].dataset for n in "abc")
    assert a.digest != b.digest  # another subset: another digest
    assert a.digest == c.digest  # the same images (another seed trains on them too)
    import json

    assert json.loads(a.profile)["train"] == 64 and json.loads(b.profile)["train"] == 48
    # the same run again (resumed from its checkpoint) logs its input again: still one entry
    cfg = tiny_config(tmp_path, "a", train_size=64, epochs=1, seed=0)
    tracker = tracking.train_tracker(cfg, tracking_uri=store, experiment="ds",
                                     system_metrics=False)
    train(cfg, [tracker])
    assert tracker.run_id == runs["a"] and len(_inputs(store, runs["a"])) == 1


def test_experiments_are_marked_as_model_training_and_linked_to_their_runs_table(store):
    client = client_for(store)
    new = tracking.ensure_experiment(client, "fresh", None)
    assert client.get_experiment(new).tags[tracking.KIND_TAG] == tracking.KIND_TRAINING
    # an experiment made by an older wno gets the tag when a worker next opens it
    old = client.create_experiment("old")
    assert tracking.KIND_TAG not in client.get_experiment(old).tags
    assert tracking.ensure_experiment(client, "old", None) == old
    assert client.get_experiment(old).tags[tracking.KIND_TAG] == tracking.KIND_TRAINING
    url = tracking.experiment_url("http://u:secret@host:5000/", old)
    assert url == (f"http://u:***@host:5000/#/experiments/{old}/runs"
                   "?workflowType=machine_learning")


def test_wno_ui_lists_each_study_with_a_link_to_its_runs(tmp_path, store, monkeypatch):
    """Without starting anything: the function `wno ui` prints its links with."""
    from wno.cli import ui

    client = client_for(store)
    exp = tracking.ensure_experiment(client, "levels", None)
    lines = []
    monkeypatch.setattr(ui.typer, "echo", lines.append)
    ui._print_experiments(store, "http://127.0.0.1:5000")
    assert any(line.split() == ["levels", f"http://127.0.0.1:5000/#/experiments/{exp}/runs"
                                "?workflowType=machine_learning"] for line in lines), lines
    assert not any("Default" in line for line in lines)
    assert Path(store.removeprefix("sqlite:///")).is_file()
