"""`wno report`: aggregation checked against numpy/scipy on a study with known numbers, every
format, honest reports of empty/partial studies, unknown studies, and MLflow curves and links.

The studies are real Optuna SQLite storages and real MLflow stores written by
`fake_study` (the attribute names the queue and workers write).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import scipy.stats
from typer.testing import CliRunner

from wno.cli import app
from wno.cli.common import UserError
import fake_study as fs
from wno.platform import report as rep
from wno.platform.tracking import history

optuna.logging.set_verbosity(optuna.logging.WARNING)
FORMATS = ("html", "md", "csv", "latex", "json")


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A storage with the known study (+ MLflow runs), an empty study and a queued-only study."""
    d = tmp_path_factory.mktemp("report")
    url, tracking = f"sqlite:///{d / 'optuna.db'}", f"sqlite:///{d / 'mlflow.db'}"
    spec, trials = fs.known_trials("known")
    fs.write_study(url, spec, trials, tracking_uri=tracking)
    fs.write_study(url, fs.study_spec("empty", grid={"wavelet": ["haar", "db2"]}, seeds=[0, 1]), [])
    queued = [fs.FakeTrial("model", {"wavelet": w}, s, state="WAITING", host=None, device=None)
              for w in ("haar", "db2") for s in (0, 1)]
    fs.write_study(url, fs.study_spec("queued", grid={"wavelet": ["haar", "db2"]}, seeds=[0, 1]),
                   queued)
    return {"dir": d, "url": url, "tracking": tracking, "spec": spec, "trials": trials}


@pytest.fixture(scope="module")
def known(stores):
    return rep.build_report("known", stores["url"], stores["tracking"])


def counted(trials: list[fs.FakeTrial], group: str, metric: str) -> list[float]:
    """What should count for `group`: completed trials, the later one per seed."""
    per_seed = {}
    for t in trials:
        if t.group == group and t.state == "COMPLETE":
            per_seed[t.seed] = t.metrics[metric]
    return [per_seed[s] for s in sorted(per_seed)]


def row(report: rep.Report, group: str) -> pd.Series:
    rows = report.configs[report.configs["group"] == group]
    assert len(rows) == 1, group
    return rows.iloc[0]


# --- statistics ---------------------------------------------------------------------------------

def test_summarize_equals_numpy_and_scipy_t_interval():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 17):
        x = rng.normal(0.7, 0.02, n)
        s = rep.summarize(x)
        low, high = scipy.stats.t.interval(0.95, n - 1, loc=x.mean(), scale=scipy.stats.sem(x))
        assert (s.n, s.mean, s.std) == (n, pytest.approx(x.mean()), pytest.approx(x.std(ddof=1)))
        assert (s.ci_low, s.ci_high) == (pytest.approx(low), pytest.approx(high))
    one = rep.summarize([0.5, None, math.nan])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert rep.summarize([]).n == 0


def test_welch_equals_scipy_ttest_ind():
    rng = np.random.default_rng(1)
    for na, nb in ((2, 3), (3, 3), (5, 9)):
        a, b = rng.normal(0.72, 0.01, na), rng.normal(0.70, 0.03, nb)
        d = rep.welch(a, b)
        res = scipy.stats.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(0.95)
        assert d.diff == pytest.approx(a.mean() - b.mean())
        assert d.p == pytest.approx(res.pvalue, rel=1e-9)
        assert (d.ci_low, d.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
        assert d.dof == pytest.approx(res.df)
    no_test = rep.welch([0.7], [0.6, 0.65])
    assert no_test.diff == pytest.approx(0.075) and math.isnan(no_test.p)
    assert math.isnan(rep.welch([0.7, 0.7], [0.6, 0.6]).p)  # no spread: no test


def holm_reference(p: list[float]) -> list[float]:
    """Holm written as its definition: adj(p_i) = max over p_j <= p_i of min(1, (m-rank_j) p_j)."""
    m = len(p)
    ranked = sorted(p)
    return [max(min(1.0, (m - r) * ranked[r]) for r in range(m) if ranked[r] <= pi) for pi in p]


def test_holm_equals_its_definition():
    rng = random.Random(2)
    for _ in range(20):
        p = [rng.random() ** 3 for _ in range(rng.randint(1, 9))]
        assert rep.holm(p) == pytest.approx(holm_reference(p))
    assert math.isnan(rep.holm([0.01, math.nan])[1])


def test_pareto_front_equals_brute_force():
    rng = random.Random(3)
    for _ in range(50):
        cost = [rng.choice([1.0, 2.0, 3.0, 4.0]) for _ in range(8)]
        value = [rng.random() for _ in range(8)]
        dominated = {i for i in range(8) for j in range(8)
                     if cost[j] <= cost[i] and value[j] >= value[i]
                     and (cost[j], value[j]) != (cost[i], value[i])}
        ties = {i for i in range(8) for j in range(i) if (cost[j], value[j]) == (cost[i], value[i])}
        assert sorted(rep.pareto_front(cost, value)) == sorted(set(range(8)) - dominated - ties)


# --- aggregation on the known study ---------------------------------------------------------------

def test_configuration_stats_equal_independent_computation(known, stores):
    trials = stores["trials"]
    assert len(known.configs) == 6
    for _, r in known.configs.iterrows():
        for prefix, metric in (("obj", "best_val_acc"), ("test", "test_acc")):
            x = np.array(counted(trials, r["group"], metric))
            low, high = scipy.stats.t.interval(0.95, len(x) - 1, loc=x.mean(),
                                               scale=scipy.stats.sem(x))
            assert r[f"{prefix}_n"] == len(x)
            assert r[f"{prefix}_mean"] == pytest.approx(x.mean(), abs=1e-12)
            assert r[f"{prefix}_std"] == pytest.approx(x.std(ddof=1), abs=1e-12)
            assert (r[f"{prefix}_ci_low"], r[f"{prefix}_ci_high"]) == (
                pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    # The duplicate: haar/micro seed 1 completed with 0.63 and later 0.65; the later counts.
    haar_micro = row(known, "wavelet=haar, model_size=micro")
    assert haar_micro["obj_mean"] == pytest.approx((0.61 + 0.65 + 0.62) / 3)
    assert any("completed more than once" in n for n in known.notes)
    assert row(known, "wavelet=db2, model_size=tiny")["obj_n"] == 2
    assert row(known, "baseline=vit, model_size=tiny")["obj_n"] == 2


def test_differences_to_vit_at_the_same_size_equal_scipy(known, stores):
    trials = stores["trials"]
    ps = {"objective": [], "test_acc": []}
    for _, r in known.models.iterrows():
        size = r["factors"]["model_size"]
        ref = f"baseline=vit, model_size={size}"
        assert r["ref_group"] == ref  # matched on the shared factor model_size
        for prefix, metric in (("d_obj", "best_val_acc"), ("d_test", "test_acc")):
            a, b = counted(trials, r["group"], metric), counted(trials, ref, metric)
            res = scipy.stats.ttest_ind(a, b, equal_var=False)
            ci = res.confidence_interval(0.95)
            assert r[prefix] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
            assert r[f"{prefix}_p"] == pytest.approx(res.pvalue, rel=1e-9)
            assert (r[f"{prefix}_low"], r[f"{prefix}_high"]) == (
                pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))
            ps["objective" if prefix == "d_obj" else "test_acc"].append(
                (r[f"{prefix}_p"], r[f"{prefix}_p_holm"]))
    for pairs in ps.values():
        raw, adjusted = zip(*pairs, strict=True)
        assert list(adjusted) == pytest.approx(holm_reference(list(raw)))


def test_factor_effects_pool_the_completed_trials(known, stores):
    trials = stores["trials"]
    for level in ("haar", "db2"):
        values = [v for size in ("micro", "tiny")
                  for v in counted(trials, f"wavelet={level}, model_size={size}", "best_val_acc")]
        effects = known.effects
        e = effects[(effects["factor"] == "wavelet") & (effects["level"] == level)]
        assert e.iloc[0]["mean"] == pytest.approx(np.mean(values))
        assert e.iloc[0]["n"] == len(values)
    assert known.factors == ["wavelet", "model_size"]
    best = known.best()
    assert best["group"] == "wavelet=haar, model_size=tiny"  # mean 0.7033, the highest


def test_baseline_matching_needs_the_same_budget(known):
    model = row(known, "wavelet=haar, model_size=micro").to_dict()
    vit = row(known, "baseline=vit, model_size=micro").to_dict()
    assert rep.matches(model, vit)
    assert not rep.matches(model, row(known, "baseline=vit, model_size=tiny").to_dict())
    longer = {**vit, "config": {**vit["config"], "epochs": vit["config"]["epochs"] * 2}}
    assert not rep.matches(model, longer)


def test_missing_failed_and_running_are_shown(known, stores):
    assert known.in_progress
    db2_tiny = row(known, "wavelet=db2, model_size=tiny")
    assert (db2_tiny["seeds_missing"], db2_tiny["fail"], db2_tiny["waiting"]) == ([2], 1, 1)
    vit_tiny = row(known, "baseline=vit, model_size=tiny")
    assert (vit_tiny["seeds_missing"], vit_tiny["running"]) == ([2], 1)
    md = rep.render(known, "md")
    assert md.startswith("# Study `known`") and "**In progress: 17 of 20 trials complete" in md
    assert "wavelet=db2, model_size=tiny: 2 of 3 seeds complete (missing 2; 1 waiting" in md
    assert "trial #11 failed (wavelet=db2, model_size=tiny, seed 2)" in md
    for fmt in FORMATS:  # the failure's error is shown (where trials are), its password is not
        text = rep.render(known, fmt)
        assert "hunter2" not in text
        assert ("wno:***@db" in text) == (fmt in ("html", "md", "json"))


# --- formats and the command line ----------------------------------------------------------------

def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, ["report", *args], env=env, catch_exceptions=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_through_the_cli(fmt, stores, known, tmp_path):
    out = tmp_path / f"known.{fmt}"
    result = cli("--study", "known", "--storage", stores["url"], "--tracking-uri",
                 stores["tracking"], "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    text = out.read_text()
    best = known.best()
    if fmt == "html":
        assert text.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in text
        assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(https?:)?//", text)
        assert 'id="comparison"' in text and 'id="trials"' in text
        assert "Hand-picked numbers &lt;b&gt;for tests&lt;/b&gt;" in text  # escaped
    elif fmt == "md":
        assert "| Model | wavelet | model_size | Seeds |" in text
        assert f"**{100 * best['obj_mean']:.2f}% ± " in text  # the best value in bold
    elif fmt == "csv":
        table = pd.read_csv(out)
        assert len(table) == 6 and list(table.columns[:5]) == ["group", "role", "baseline",
                                                               "wavelet", "model_size"]
        merged = table.set_index("group")["obj_mean"]
        for _, r in known.configs.iterrows():
            assert merged[r["group"]] == pytest.approx(r["obj_mean"])
    elif fmt == "latex":
        body = [ln for ln in text.splitlines() if ln.endswith(r"\\")]
        assert len(body) == 1 + 6  # header and one row per configuration
        assert len({ln.count(" & ") for ln in body}) == 1  # every row has every column
        assert r"\begin{tabular}" in text and r"\textbf{" in text
        assert not re.search(r"(?<!\\)[_%&#]", "\n".join(
            ln for ln in text.splitlines() if not ln.startswith("%")).replace(" & ", ""))
    else:
        data = json.loads(text)
        assert data["in_progress"] is True and data["best"] == best["group"]
        got = {c["group"]: c["obj_mean"] for c in data["configurations"]}
        assert got[best["group"]] == pytest.approx(best["obj_mean"])
        assert len(data["trials"]) == 20 and data["curves"]


def test_default_output_path_is_under_wno_home(stores, tmp_path):
    result = cli("--study", "known", "--storage", stores["url"], "--no-curves",
                 env={"WNO_HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path == tmp_path / "home" / "reports" / "known.html" and path.stat().st_size > 1e6
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def test_out_dash_writes_to_stdout(stores):
    result = cli("--study", "known", "--storage", stores["url"], "--no-curves", "--format", "csv",
                 "--out", "-")
    assert result.exit_code == 0 and result.stdout.startswith("group,role,baseline,wavelet")


def test_unknown_study_lists_the_known_ones(stores):
    with pytest.raises(UserError, match=r"known studies: empty, known, queued"):
        rep.build_report("nope", stores["url"])
    result = cli("--study", "knwon", "--storage", stores["url"])
    assert result.exit_code == 2
    assert "did you mean 'known'?" in result.output and "empty, known, queued" in result.output
    proc = subprocess.run([sys.executable, "-m", "wno", "report", "--study", "nope", "--storage",
                           stores["url"]], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "known studies: empty, known, queued" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_database_that_is_not_optuna_is_refused_untouched(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (x)")
    before = path.read_bytes()
    result = cli("--study", "x", "--storage", f"sqlite:///{path}")
    assert result.exit_code == 2 and "holds no Optuna studies" in result.output
    assert path.read_bytes() == before


def test_bad_inputs_are_clear(stores, tmp_path):
    missing = tmp_path / "none" / "optuna.db"
    result = cli("--study", "x", "--storage", f"sqlite:///{missing}")  # as `wno study`: exit 3
    assert result.exit_code == 3 and "no study storage at" in result.output
    assert not missing.exists()  # nothing was created
    result = cli("--study", "known", "--storage", stores["url"], "--format", "pdf")
    assert result.exit_code == 2 and "html, md, csv, latex, json" in result.output
    result = cli("--storage", stores["url"])
    assert result.exit_code == 2 and "--study NAME is required; known studies:" in result.output
    result = cli("--study", "known", "--storage", stores["url"], "--no-curves", "--out",
                 str(tmp_path))  # a directory
    assert result.exit_code == 2 and "cannot write the report to" in result.output
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    # A PostgreSQL server that is not there: exit 3, and the password stays hidden.
    port = _free_port()
    result = cli("--study", "x", "--storage", f"postgresql+psycopg://wno:s3cret@127.0.0.1:{port}/x")
    assert result.exit_code == 3 and "s3cret" not in result.output and "wno:***@" in result.output


def test_report_does_not_modify_the_storage(stores):
    path = Path(stores["url"].removeprefix("sqlite:///"))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    rep.build_report("known", stores["url"], curves=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@pytest.mark.postgres
def test_the_same_report_from_postgresql(known):
    url = os.environ.get("WNO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("WNO_TEST_POSTGRES_URL is not set (.ci/run starts PostgreSQL and sets it)")
    name = f"report-test-{uuid.uuid4().hex[:10]}"
    spec, trials = fs.known_trials(name)
    fs.write_study(url, spec, trials)
    try:
        pg = rep.build_report(name, url, curves=False)
        assert name in rep.study_names(url)
        columns = ["group", "obj_n", "obj_mean", "obj_ci_low", "test_mean", "d_obj", "d_obj_p",
                   "d_obj_p_holm", "seeds_missing", "fail", "waiting", "running"]
        pd.testing.assert_frame_equal(pg.configs[columns], known.configs[columns])
        assert "hunter2" not in rep.render(pg, "html")
    finally:
        optuna.delete_study(study_name=name, storage=url)


# --- empty and partial studies --------------------------------------------------------------------

@pytest.mark.parametrize("study,status", [
    ("empty", "This study has no trials yet"),
    ("queued", "In progress: 0 of 4 trials complete (4 waiting)"),
])
def test_empty_and_queued_studies_give_honest_reports(study, status, stores):
    report = rep.build_report(study, stores["url"], stores["tracking"])
    assert report.best() is None and report.factors == ["wavelet"]
    for fmt in FORMATS:
        text = rep.render(report, fmt)
        assert text
        if fmt in ("html", "md", "json"):
            assert status in text
    md = rep.render(report, "md")
    assert "No configuration has a result yet." in md
    assert "wavelet: no completed trials yet." in md
    html = rep.render(report, "html")
    assert 'class="plot"' not in html.split("<body>")[1]  # nothing to draw, no empty charts
    if study == "queued":
        assert "4 trial(s) are waiting in the queue" in html
        assert "0/2" in html and json.loads(rep.render(report, "json"))["in_progress"]


def test_a_study_without_wno_attributes_still_reports(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(study_name="plain", storage=url, direction="minimize")
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.2) ** 2, n_trials=5)
    report = rep.build_report("plain", url, curves=False)
    assert report.direction == "minimize" and len(report.configs) == 5
    assert report.best()["obj_mean"] == pytest.approx(study.best_value)
    for fmt in FORMATS:
        assert rep.render(report, fmt)


# --- MLflow: curves, links, unreachable ---------------------------------------------------------

def test_learning_curves_from_a_real_mlflow_store(known, stores):
    assert known.curves_note is None and known.run_links == {}  # no server address: no links
    trials, epochs = stores["trials"], stores["spec"]["base"]["epochs"]
    for group, metrics in known.curves.items():
        finals = counted(trials, group, "final_val_acc")
        expected = np.array([fs.learning_curve(f, epochs) for f in finals])  # (seeds, epochs)
        curve = metrics["val_acc"]
        assert list(curve["step"]) == list(range(epochs))
        assert list(curve["mean"]) == pytest.approx(list(expected.mean(axis=0)))
        assert list(curve["std"]) == pytest.approx(list(expected.std(axis=0, ddof=1)))
        assert set(curve["n"]) == {len(finals)}
    assert set(known.curves) == set(known.configs["group"])


def test_the_database_fast_path_equals_the_mlflow_client(known, stores):
    """Curves from a tracking database come from one query of MLflow's `metrics` table; this
    guards that shortcut against MLflow changing its schema: it must equal the public API."""
    from mlflow.tracking import MlflowClient

    store = Path(stores["tracking"].removeprefix("sqlite:///"))
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    runs = [r for r in known.trials["mlflow_run"] if isinstance(r, str)]
    fast = history._histories_sql(stores["tracking"], runs, list(rep.CURVE_METRICS))
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before  # read-only
    api, failed = history._histories_api(MlflowClient(stores["tracking"]), runs,
                                         list(rep.CURVE_METRICS))
    assert failed == 0 and len(fast) == 2 * len(runs) and fast == api


def test_unreachable_or_missing_mlflow_still_reports(stores, tmp_path):
    port = _free_port()
    report = rep.build_report("known", stores["url"], f"http://127.0.0.1:{port}")
    assert report.curves == {} and "unreachable" in report.curves_note
    assert "learning curves unavailable" in rep.render(report, "html")
    store = tmp_path / "missing" / "mlflow.db"
    report = rep.build_report("known", stores["url"], f"sqlite:///{store}")
    assert "no MLflow store" in report.curves_note and not store.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback (one worker); stopped (its process group) after."""
    d = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(d / "server.log", "w")  # noqa: SIM115 - the server writes it until the end
    proc = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
         "--artifacts-destination", str(d / "artifacts"), "--host", "127.0.0.1", "--port",
         str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"mlflow server did not start:\n{(d / 'server.log').read_text()}")
                time.sleep(1)
        yield uri, proc
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.slow
def test_links_and_curves_through_a_real_tracking_server(mlflow_server, tmp_path):
    uri, proc = mlflow_server
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    spec, trials = fs.known_trials("served")
    fs.write_study(url, spec, trials, tracking_uri=uri)
    report = rep.build_report("served", url, uri)
    with_runs = report.trials[report.trials["mlflow_run"].notna()]
    assert len(with_runs) == 18 and set(report.run_links) == set(with_runs["mlflow_run"])
    html = rep.render(report, "html")
    for run_id, link in report.run_links.items():
        m = re.fullmatch(rf"{re.escape(uri)}/#/experiments/(\d+)/runs/{run_id}", link)
        assert m, link
        with urllib.request.urlopen(f"{uri}/api/2.0/mlflow/runs/get?run_id={run_id}") as r:
            assert json.load(r)["run"]["info"]["experiment_id"] == m.group(1)
        assert f'href="{link}"' in html
    assert set(report.curves) == set(report.configs["group"])
    # Credentials in the tracking URI never reach the report's links (nor anything it writes).
    secret_uri = uri.replace("http://", "http://wno:s3cret@")
    report = rep.build_report("served", url, secret_uri)
    assert len(report.run_links) == 18
    assert not any("s3cret" in link for link in report.run_links.values())
    assert "s3cret" not in rep.render(report, "html") + rep.render(report, "json")
    # The server goes away: the report still renders from Optuna alone and says why.
    _stop(proc)
    report = rep.build_report("served", url, uri)
    assert report.curves == {} and report.run_links == {} and "unreachable" in report.curves_note
    assert report.configs.equals(rep.build_report("served", url, curves=False).configs)
