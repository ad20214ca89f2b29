"""A search study's report shows what Optuna users expect: Optuna's best trial, its parameter
importances, optimisation history and slices, values rounded for reading; no categorical factor
effects over sampled values. A real search study, sampled by a real worker (random sampler), with a training
function whose objective is a known function of the parameters (no model is trained here)."""

from __future__ import annotations

import json
import math
import re

import pytest

from platform_helpers import TINY
from wno.platform import report as rep
from wno.platform.queue import StudyQueue
from wno.platform.spec import parse_spec
from wno.platform.worker import Worker, WorkerOptions
from wno.training import TrainResult


def fake_train(config, callbacks, resume=True, **_) -> TrainResult:
    """Accuracy peaks at lr = 3e-3 and does not depend on dropout: lr must be the important one."""
    acc = 0.9 - 0.08 * (math.log10(config.lr) - math.log10(3e-3)) ** 2 + 1e-4 * config.dropout
    return TrainResult(config=config, final_val_acc=acc, best_val_acc=acc, best_epoch=1,
                       test_acc=acc - 0.01, test_loss=1.0, params=1000, flops=10**6, tokens=64,
                       wall_time=1.0, throughput=100.0, epochs_completed=config.epochs)


@pytest.fixture(scope="module")
def search_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    url = f"sqlite:///{tmp / 'optuna.db'}"
    spec = parse_spec({
        "name": "tune", "base": {k: v for k, v in TINY.items() if k != "lr"}, "seeds": [0],
        "search": {"n_trials": 30, "params": {"lr": {"low": 1e-4, "high": 1e-1, "log": True},
                                              "dropout": {"low": 0.0, "high": 0.3}},
                   "sampler": {"name": "random", "seed": 0}, "pruner": "none"},
        "baselines": {"vit": {}}})
    StudyQueue(url, create=True).create(spec)
    opts = WorkerOptions(device="cpu", device_label="cpu", idle_timeout=0,
                         data_dir=str(tmp / "data"), checkpoint_dir=str(tmp / "ckpt"),
                         heartbeat_interval=1.0, poll_interval=0.2)
    Worker(StudyQueue(url), opts, train_fn=fake_train).run()
    return rep.build_report("tune", url, curves=False)


def test_the_best_trial_and_importances_are_optunas(search_report):
    import optuna

    r = search_report
    assert r.kind == "search" and r.factors == [] and r.effects.empty  # no per-value "effects"
    views = r.optuna
    assert views is not None and views.trials == 30  # model trials only, not the ViT baseline
    # The best trial is the one with the highest objective among the sampled trials.
    models = r.trials[(r.trials["role"] == "model") & (r.trials["state"] == "COMPLETE")]
    best = models.loc[models["objective"].idxmax()]
    assert views.best["number"] == best["number"]
    assert views.best["value"] == pytest.approx(best["objective"])
    # Importances are Optuna's (its default evaluator): lr matters, dropout does not.
    assert set(views.importances) == {"lr", "dropout"}
    assert sum(views.importances.values()) == pytest.approx(1.0)
    assert views.params[0] == "lr" and views.importances["lr"] > views.importances["dropout"]
    assert views.evaluator == optuna.importance.PedAnovaImportanceEvaluator.__name__
    assert set(views.figures) == {"history", "slice", "importances"}


def test_values_are_rounded_for_reading(search_report):
    text = rep.render(search_report, "md")
    assert "Best trial (Optuna's best_trial" in text and "Parameter importances (Optuna)" in text
    sentence = next(line for line in text.splitlines() if "Best trial" in line)
    for number in re.findall(r"lr=([0-9.e+-]+)", sentence):
        assert len(number.replace(".", "").replace("-", "").lstrip("0").split("e")[0]) <= 4
    assert not re.search(r"\d\.\d{9,}", sentence)  # no 17-digit floats


def test_html_and_json_carry_optunas_views(search_report):
    html = rep.render(search_report, "html")
    assert "Search (Optuna)" in html and 'id="importances"' in html
    payload = json.loads(rep.render(search_report, "json"))
    assert payload["optuna"]["best"]["number"] == search_report.optuna.best["number"]
    assert set(payload["optuna"]["importances"]) == {"lr", "dropout"}


def test_a_finished_grid_study_reads_back_with_optunas_own_api(tmp_path):
    """Grid factors are Optuna params: trials_dataframe has a column per factor, Optuna's
    importances run, and the report shows them beside its own statistics."""
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    StudyQueue(url, create=True).create(parse_spec({
        "name": "g", "base": {k: v for k, v in TINY.items() if k != "lr"},
        "grid": {"dropout": [0.0, 0.1], "lr": [1e-3, 1e-2]}, "seeds": 2,
        "baselines": {"vit_p8": {"patch_size": 8}}}))
    opts = WorkerOptions(device="cpu", device_label="cpu", idle_timeout=0,
                         data_dir=str(tmp_path / "data"), checkpoint_dir=str(tmp_path / "ckpt"),
                         heartbeat_interval=1.0, poll_interval=0.2)
    Worker(StudyQueue(url), opts, train_fn=fake_train).run()
    study = optuna.load_study(study_name="g", storage=url)
    df = study.trials_dataframe()
    # 4 configurations and a baseline twin of each (it reads both factors), 2 seeds
    assert {"params_dropout", "params_lr"} <= set(df.columns) and len(df) == 16
    assert (df["state"] == "COMPLETE").all() and df["params_lr"].notna().all()
    models = df[df["user_attrs_wno_role"] == "model"]
    assert len(models) == 8 and set(models["params_lr"]) == {1e-3, 1e-2}
    importances = optuna.importance.get_param_importances(study)
    assert set(importances) == {"dropout", "lr"}
    assert sum(importances.values()) == pytest.approx(1.0)
    r = rep.build_report("g", url, curves=False)
    assert r.kind == "grid" and r.factors == ["dropout", "lr"] and not r.effects.empty
    assert r.optuna is not None and set(r.optuna.importances) == {"dropout", "lr"}
    assert "Parameters (Optuna)" in rep.render(r, "html")
