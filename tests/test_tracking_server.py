"""MLflow tracking through a real `mlflow server` process on loopback (SQLite backend and an
artifacts destination in a temporary folder): a training is one complete run with proxied
artifacts; the server killed after epoch 1 and started again on the same port and backend: the
training completes and every metric arrives. And `wno ui` as a real subprocess: it serves the
project's store, stops everything it started on Ctrl-C, refuses a busy port."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from platform_helpers import pg_database, storage_url, wait_for, wno_argv  # noqa: F401
from test_tracking import (StopAfterEpoch, active_runs, assert_complete_run, client_for,
                           free_port, history, tiny_config)
from wno.platform import tracking
from wno.training import Callback, train

LOOPBACK_HOSTS = "127.0.0.1,127.0.0.1:*,localhost,localhost:*"


class Server:
    """A real `mlflow server` on 127.0.0.1 that a test can kill and start again (same port,
    same backend store, same artifacts)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend = f"sqlite:///{folder / 'mlflow.db'}"
        self.artifacts = folder / "artifacts"
        self.log = folder / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = tracking.start_server(self.backend, port=self.port, artifacts=self.artifacts,
                                          log_path=self.log, allowed_hosts=LOOPBACK_HOSTS)
        if not tracking.wait_healthy(self.uri, self.proc, timeout=300):
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            self.stop()
            pytest.fail(f"mlflow server did not start on {self.uri}:\n{tail}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, the whole process group: a crash, not a shutdown."""
        tracking.stop_server(self.proc, sig=signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            tracking.stop_server(self.proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow-server"))
    tracking.quiet_mlflow()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def live_server(server):
    """The module's server, started again if a test left it down."""
    if not server.running():
        server.start()
    return server


# --- trainings through the server -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_training_through_the_server_is_one_complete_run(tmp_path, live_server):
    config = tiny_config(tmp_path)
    experiment = f"e-{uuid.uuid4().hex[:8]}"
    tracker = tracking.train_tracker(config, tracking_uri=live_server.uri, experiment=experiment,
                                     system_metrics_interval=0.2)
    result = train(config, [tracker])
    client = client_for(live_server.uri)
    runs = active_runs(client, experiment)
    assert [r.info.run_id for r in runs] == [tracker.run_id]
    assert_complete_run(client, tracker.run_id, config, result, tmp_path)
    assert any(k.startswith("system/") for k in runs[0].data.metrics)
    # artifacts went through the server into its artifacts destination
    assert runs[0].info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = {p.name for p in live_server.artifacts.rglob("*") if p.is_file()}
    assert {"config.yaml", "environment.json", "metrics.json", "final.pt"} <= stored
    assert tracker.outbox.failures == 0


class KillServerAfterEpoch1(Callback):
    """Epoch 1 reaches MLflow; then the server is SIGKILLed; after epoch 2 (once the tracker
    has seen the outage) it is started again on the same port and backend."""

    def __init__(self, server: Server, tracker: tracking.MlflowTracker):
        self.server, self.tracker = server, tracker
        self.restarted_at = None

    def on_epoch_end(self, m):
        if m.epoch == 1:
            assert self.tracker.outbox.drain(60), "epoch 1 did not reach the server"
            self.server.kill()
        elif m.epoch == 2:
            wait_for(lambda: self.tracker.outbox.failures > 0, 60, "the tracker to hit the outage")
            assert self.tracker.outbox.pending > 0  # epoch 2 is kept, not lost
            self.server.start()
            self.restarted_at = time.time()
            # give the restarted system-metrics monitor a few samples before training ends
            assert self.tracker.outbox.drain(60), "epoch 2 never arrived"
            time.sleep(1.0)


@pytest.mark.slow
def test_server_killed_mid_training_and_restarted_loses_nothing(tmp_path, live_server, caplog):
    caplog.set_level(logging.WARNING, logger="wno.platform.tracking")
    config = tiny_config(tmp_path)
    experiment = f"e-{uuid.uuid4().hex[:8]}"
    tracker = tracking.train_tracker(config, tracking_uri=live_server.uri, experiment=experiment,
                                     system_metrics_interval=0.2, backoff=(0.2, 1.0))
    killer = KillServerAfterEpoch1(live_server, tracker)
    result = train(config, [tracker, killer])

    assert not result.stopped and result.test_acc is not None  # training never noticed
    assert killer.restarted_at is not None and tracker.outbox.outages == 1
    client = client_for(live_server.uri)
    assert [r.info.run_id for r in active_runs(client, experiment)] == [tracker.run_id]
    assert_complete_run(client, tracker.run_id, config, result, tmp_path)
    messages = [r.getMessage() for r in caplog.records]
    assert any("cannot reach" in m and "connection refused" in m for m in messages)
    assert any("reachable again" in m for m in messages)
    # MLflow's system-metrics monitor gave up during the outage and was started again
    points = client.get_metric_history(tracker.run_id, "system/cpu_utilization_percentage")
    assert any(p.timestamp / 1000 > killer.restarted_at for p in points)


@pytest.mark.slow
def test_a_stopped_training_resumes_into_the_same_server_run(tmp_path, live_server):
    config = tiny_config(tmp_path)
    experiment = f"e-{uuid.uuid4().hex[:8]}"
    first = tracking.train_tracker(config, tracking_uri=live_server.uri, experiment=experiment,
                                   system_metrics=False)
    train(config, [first, StopAfterEpoch(2)])
    second = tracking.train_tracker(config, tracking_uri=live_server.uri, experiment=experiment,
                                    system_metrics=False)
    result = train(config, [second])
    client = client_for(live_server.uri)
    assert second.run_id == first.run_id
    assert [s for s, _ in history(client, first.run_id, "train_loss")] == [1, 2, 3]
    assert_complete_run(client, first.run_id, config, result, tmp_path)


# --- wno ui ------------------------------------------------------------------------------------------------
def _ui(args: list[str], env_home: Path, **kw) -> subprocess.Popen:
    import os

    env = dict(os.environ, WNO_HOME=str(env_home), PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(wno_argv() + ["ui", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


@pytest.mark.slow
def test_wno_ui_serves_the_store_and_stops_everything_on_ctrl_c(tmp_path):
    import json

    # a local store with one run and an artifact, as a worker would leave it
    store = tmp_path / "home" / "mlflow.db"
    uri = f"sqlite:///{store}"
    tracking.quiet_mlflow()
    client = tracking.client_for(uri)
    exp = tracking.ensure_experiment(client, "smoke", tracking.artifact_root(uri))
    run_id = client.create_run(exp, run_name="use_kernel=True, seed=0").info.run_id
    client.log_text(run_id, "model: wavelet\n", "config.yaml")

    port = free_port()
    lines: list[str] = []
    proc = _ui(["--port", str(port), "--no-dashboard"], tmp_path / "home")
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        def ready():
            assert proc.poll() is None, "".join(lines)
            return any("Ctrl-C" in line for line in lines)

        wait_for(ready, 300, "wno ui to print its address", every=0.2)
        assert f"MLflow UI         http://127.0.0.1:{port}" in "".join(lines)
        base = f"http://127.0.0.1:{port}"
        found = json.loads(_get(f"{base}/api/2.0/mlflow/experiments/get-by-name?"
                                f"experiment_name=smoke"))
        assert found["experiment"]["experiment_id"] == exp
        listed = json.loads(_get(f"{base}/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}"))
        assert [f["path"] for f in listed["files"]] == ["config.yaml"]
        query = urllib.parse.urlencode({"path": "config.yaml", "run_uuid": run_id})
        assert _get(f"{base}/get-artifact?{query}") == b"model: wavelet\n"
        family = psutil.Process(proc.pid).children(recursive=True)
        assert family, "wno ui started no process"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        reader.join(10)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "stopping" in out
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"left running: {alive}"
    with socket.socket() as s:  # nothing listens there any more
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_wno_ui_refuses_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _ui(["--port", str(port), "--no-dashboard",
                    "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"], tmp_path / "home")
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert f"port {port} on 127.0.0.1 is in use" in out and "--port" in out
    assert not (tmp_path / "m.db").exists()  # nothing was started or created


def test_wno_ui_on_a_tracking_server_starts_nothing_and_hides_its_password(tmp_path):
    proc = _ui(["--no-dashboard", "--tracking-uri", "http://alice:s3cret@127.0.0.1:9/"],
               tmp_path / "home")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "http://alice:***@127.0.0.1:9/" in out and "nothing to start" in out
    assert "s3cret" not in out


# --- `wno worker` against the server ----------------------------------------------------------------------
@pytest.mark.slow
def test_a_study_run_by_wno_worker_is_tracked_on_the_server(tmp_path, live_server, storage_url):
    """A real `wno worker` process, the study storage on SQLite or PostgreSQL, MLflow on the
    server: one run per trial, linked both ways, and the storage password nowhere in MLflow."""
    import json

    from platform_helpers import run_wno, unique, worker_env
    from test_tracking import assert_trial_runs, study_spec
    from wno.platform.queue import StudyQueue
    from wno.base.utils import mask_url

    name = unique("tracked")
    StudyQueue(storage_url, create=True).create(study_spec(name))
    env = worker_env(tmp_path, WNO_STORAGE=storage_url, MLFLOW_TRACKING_URI=live_server.uri)
    done = run_wno(["worker", "--gpu", "cpu", "--exit-when-empty", "--heartbeat", "1"], env,
                   timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    client = client_for(live_server.uri)
    run_ids = assert_trial_runs(client, storage_url, name, tmp_path)
    assert len(run_ids) == 3

    # the storage URL is in MLflow only masked; its password (if any) nowhere
    from sqlalchemy.engine import make_url

    url = make_url(storage_url)
    secret = f"{url.username}:{url.password}@" if url.password else None
    texts = [json.dumps(client.get_experiment_by_name(name).tags), done.stdout, done.stderr]
    for run_id in run_ids.values():
        run = client.get_run(run_id)
        assert run.data.tags["wno.storage"] == mask_url(storage_url)
        texts += [json.dumps(run.data.params), json.dumps(run.data.tags),
                  json.dumps(sorted(run.data.metrics))]
        folder = Path(client.download_artifacts(run_id, "", str(tmp_path / run_id)))
        texts += [p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file()]
    if secret:
        assert not any(secret in text for text in texts)


def test_doctor_reaches_a_server_whose_uri_carries_credentials(live_server):
    # The URI form a server behind basic auth is given in: every health check (doctor, report,
    # wait_healthy) goes through tracking.server_health, which sends them as MLflow's client does.
    from wno.platform.doctor import check_tracking

    uri = live_server.uri.replace("http://", "http://wno:s3cret@")
    (check,) = check_tracking(uri)
    assert check.status == "ok", check.detail
    assert "wno:***@" in check.detail and "s3cret" not in check.detail
    (down,) = check_tracking("http://wno:s3cret@127.0.0.1:1")  # nothing listens on port 1
    assert down.status == "fail" and "s3cret" not in down.detail
