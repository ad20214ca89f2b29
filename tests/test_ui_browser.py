"""The tools researchers already use, tried for real on a finished study: `wno ui` starts the
MLflow UI and optuna-dashboard; each is checked through its own HTTP API (the dashboard lists the
study with its parameters, MLflow one run per trial with its data set), then the MLflow UI is
opened in headless Chromium on the study's runs table and on a comparison of runs.

The screenshots land in test-artifacts/ (or $WNO_TEST_ARTIFACTS); with WNO_UPDATE_SCREENSHOTS=1
they replace the README's (docs/images/).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from platform_helpers import REPO, wait_for, wno_argv
from test_tracking import free_port
from wno.platform import schema, tracking
from wno.platform.queue import StudyQueue
from wno.platform.spec import parse_spec
from wno.platform.worker import Worker, WorkerOptions

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("WNO_TEST_ARTIFACTS", REPO / "test-artifacts"))
README_IMAGES = REPO / "docs" / "images"
STUDY = {"name": "ui-demo", "description": "kernel on and off against ViT (micro, synthetic)",
         "base": {"model_size": "micro", "dataset": "synthetic", "token_layout": "patch",
                  "token_patch": 4, "train_size": 64, "val_size": 32, "test_size": 32,
                  "epochs": 2, "batch_size": 32, "warmup_epochs": 0.5},
         "grid": {"kernel": [True, False], "lr": [1e-3, 3e-3]}, "seeds": 2,
         "baselines": {"vit": {}}}


def _get(url: str, data: dict | None = None) -> dict:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A grid study trained by a real worker, every trial tracked in a local MLflow store."""
    d = tmp_path_factory.mktemp("ui")
    storage, store = f"sqlite:///{d / 'optuna.db'}", f"sqlite:///{d / 'home' / 'mlflow.db'}"
    StudyQueue(storage, create=True).create(parse_spec(STUDY))
    os.environ["MLFLOW_TRACKING_URI"] = store
    try:
        opts = WorkerOptions(device="cpu", device_label="cpu", idle_timeout=0,
                             data_dir=str(d / "data"), checkpoint_dir=str(d / "ckpt"),
                             heartbeat_interval=2.0, poll_interval=0.2)
        summary = Worker(StudyQueue(storage), opts,
                         callbacks_factory=tracking.trial_callbacks).run()
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
    assert summary.outcomes == {"COMPLETE": 12}  # 8 W-MSA + a ViT per lr, 2 seeds
    return d, storage, store


@pytest.fixture(scope="module")
def ui(finished):
    """`wno ui` on the study's storage and store; its output lines and the two addresses."""
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard (the ui extra) is missing")
    d, storage, store = finished
    port, dash = free_port(), free_port()
    env = {**os.environ, "WNO_HOME": str(d / "home"), "MLFLOW_TRACKING_URI": store,
           "WNO_STORAGE": storage, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(wno_argv() + ["ui", "--port", str(port), "--dashboard-port",
                                          str(dash)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        def ready():
            assert proc.poll() is None, "".join(lines)
            return any("Ctrl-C" in line for line in lines)

        wait_for(ready, 300, "wno ui to start both services", every=0.2)
        yield lines, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)


def test_the_dashboard_lists_the_study_with_its_parameters(ui, finished):
    _, storage, _ = finished
    lines, _, dashboard = ui
    studies = _get(f"{dashboard}/api/studies")["study_summaries"]
    (study,) = [s for s in studies if s["study_name"] == "ui-demo"]
    detail = _get(f"{dashboard}/api/studies/{study['study_id']}?after=0")
    trials = detail["trials"]
    assert len(trials) == 12 and {t["state"] for t in trials} == {"Complete"}
    models = [t for t in trials if {p["name"] for p in t["params"]} >= {"use_kernel", "lr"}]
    assert len(models) == 8  # every W-MSA trial shows its factors as Optuna params
    values = {(p["name"], p["param_external_value"]) for t in models for p in t["params"]}
    assert {("use_kernel", "True"), ("use_kernel", "False"), ("lr", "0.001"),
            ("lr", "0.003")} <= values
    baselines = [t for t in trials if t not in models]
    assert all("use_kernel" not in {p["name"] for p in t["params"]} for t in baselines)
    importances = _get(f"{dashboard}/api/studies/{study['study_id']}/param_importances")
    assert {i["name"] for i in importances["param_importances"][0]} >= {"use_kernel", "lr"}


def test_mlflow_lists_one_run_per_trial_with_its_data_set(ui, finished):
    _, storage, _ = finished
    lines, mlflow_ui, _ = ui
    exp = _get(f"{mlflow_ui}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-demo")
    exp_id = exp["experiment"]["experiment_id"]
    tags = {t["key"]: t["value"] for t in exp["experiment"]["tags"]}
    assert tags[tracking.KIND_TAG] == tracking.KIND_TRAINING
    runs = _get(f"{mlflow_ui}/api/2.0/mlflow/runs/search",
                {"experiment_ids": [exp_id], "max_results": 100})["runs"]
    trial_runs = {t.user_attrs[schema.MLFLOW_RUN] for t in StudyQueue(storage).load_study(
        "ui-demo").get_trials(deepcopy=False)}
    assert {r["info"]["run_id"] for r in runs} == trial_runs and len(runs) == 12
    for r in runs:
        (ds,) = r["inputs"]["dataset_inputs"]
        assert ds["dataset"]["name"] == "synthetic"
    assert any(f"ui-demo" in line and f"#/experiments/{exp_id}/runs?workflowType=machine_learning"
               in line for line in lines)  # wno ui's link to the runs table


def test_the_mlflow_ui_shows_the_runs_table_and_a_comparison(ui, finished):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    _, storage, _ = finished
    lines, mlflow_ui, _ = ui
    exp_id = _get(f"{mlflow_ui}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-demo"
                  )["experiment"]["experiment_id"]
    runs = _get(f"{mlflow_ui}/api/2.0/mlflow/runs/search",
                {"experiment_ids": [exp_id], "max_results": 100})["runs"]
    names = [r["info"]["run_name"] for r in runs]
    shots = README_IMAGES if os.environ.get("WNO_UPDATE_SCREENSHOTS") else ARTIFACTS
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1800, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(tracking.experiment_url(mlflow_ui, exp_id))
        # The runs table, not the GenAI overview: every run's name is on the page.
        page.get_by_text(names[0], exact=True).first.wait_for(timeout=120_000)
        page.wait_for_timeout(1500)  # let the table's columns settle before the picture
        text = page.inner_text("body")
        assert sum(name in text for name in names) >= 8, text[:2000]
        assert "synthetic" in text  # the Dataset column
        page.screenshot(path=str(shots / "mlflow-runs.png"), clip=_without_assistant(page))
        ids = [r["info"]["run_id"] for r in runs if r["info"]["run_name"].startswith("use_kernel")]
        query = urllib.parse.urlencode({"runs": json.dumps(ids[:4]),
                                        "experiments": json.dumps([exp_id]),
                                        "workflowType": "machine_learning"})
        page.goto(f"{mlflow_ui}/#/compare-runs?{query}")
        page.get_by_text("best_val_acc").first.wait_for(timeout=120_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(shots / "mlflow-compare.png"), clip=_without_assistant(page))
        browser.close()
    assert (shots / "mlflow-runs.png").stat().st_size > 20_000
    assert (shots / "mlflow-compare.png").stat().st_size > 20_000


def _without_assistant(page) -> dict:
    """The page left of MLflow 3's chat panel (empty here, and half the picture otherwise)."""
    size = page.viewport_size
    box = None
    panel = page.get_by_text("MLflow Assistant").first
    if panel.count():
        box = panel.bounding_box()
    width = int(box["x"]) - 30 if box and box["x"] > size["width"] / 2 else size["width"]
    return {"x": 0, "y": 0, "width": width, "height": size["height"]}
