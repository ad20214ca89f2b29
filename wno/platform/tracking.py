"""MLflow tracking: one experiment per study, one run per configuration and seed.

A worker trains each trial with an `MlflowTracker` among its callbacks (`worker_callbacks(ctx)`:
the run exists, and its id is stored in the trial, before training starts); `wno train` does the
same for a single run (experiment `wno-train`). What a run holds (names in `wno.platform.schema`):

- params: the flattened `TrainConfig` without the machine fields (they are the configuration's
  identity, the same wherever it runs); the machine fields are tags (`wno.device`, ...), since a
  resumed run may continue on another machine and MLflow params cannot change;
- metrics: `EPOCH_METRICS` at step=epoch, in one batch per epoch; `FINAL_METRICS` at the end (at
  step = epochs completed); MLflow's own system metrics (`system/...`: CPU, memory, disk, network,
  and GPUs when `nvidia-ml-py` is installed);
- tags: study, trial number and id, every trial number that trained into the run (retries),
  Optuna's retry history, config hash, seed, group, role, host, device, the masked storage URL,
  git commit; the Optuna trial keeps the run id in `schema.MLFLOW_RUN`;
- artifacts: `config.yaml` (the resolved config), `environment.json` (package versions, git
  commit), `metrics.json`, and the final and/or best model weights per `checkpoints=`
  (none | final | best | both; default final: the final weights, without optimizer state).

One run per configuration and seed: a retried or resumed trial continues the same run
(the trial's stored run id, else the run tagged with the study and config hash). Epochs up to
`RunInfo.start_epoch` that MLflow lacks (the process died before sending them) are filled in from
the checkpoint's history, later ones are logged as they finish, so every epoch appears once. When
MLflow holds more epochs than the checkpoint (the checkpoint was lost and training restarts), the
run is replaced by a new one and the old one is deleted (restorable in MLflow), so the curve shown
is the one of the training that produced the result.

Nothing here may break training: every MLflow call happens on one background thread, in order.
What fails is kept and retried with backoff (a warning says so, another when MLflow is back); a
new epoch wakes the retry. `close()` waits for the queue to drain (`drain_timeout`), and leaves it
retrying in the background if MLflow is still away. `metrics.json` in the checkpoint folder holds
everything in any case.

Settings: MLFLOW_TRACKING_URI (else a SQLite store in WNO_HOME), WNO_MLFLOW_CHECKPOINTS
(none | final | best | both), MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false to skip system metrics,
MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL (s), WNO_GIT_COMMIT (images built without .git).

Example:
    >>> tracker = train_tracker(config)                      # doctest: +SKIP
    >>> result = train(config, [tracker])  # ends the run and waits for MLflow  # doctest: +SKIP
    >>> client.get_run(tracker.run_id).info.status           # doctest: +SKIP
    'FINISHED'
"""

from __future__ import annotations

import atexit
import collections
import functools
import getpass
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wno.config import TrainConfig
from wno.platform import defaults, schema
from wno.training import Callback, EpochMetrics, RunInfo, TrainResult
from wno.utils import mask_secrets, mask_url

if TYPE_CHECKING:
    from wno.platform.worker import TrialContext

log = logging.getLogger(__name__)

TAG = "wno."  # prefix of every tag we set
TRAIN_EXPERIMENT = "wno-train"  # the experiment of `wno train` runs
CHECKPOINT_POLICIES = ("none", "final", "best", "both")
ENV_CHECKPOINTS = "WNO_MLFLOW_CHECKPOINTS"  # the worker's checkpoint policy (default: final)
ENV_GIT_COMMIT = "WNO_GIT_COMMIT"  # the commit of an image built without .git
PACKAGES = ("wno", "torch", "torchvision", "ptwt", "PyWavelets", "numpy", "optuna", "mlflow",
            "SQLAlchemy", "psycopg", "pandas", "scipy", "pydantic", "psutil", "nvidia-ml-py")
# What the worker's trial outcomes make of the MLflow run (LOST: left alone, a retry owns it).
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED", "WAITING": "KILLED"}
# MLflow errors that retrying cannot fix (anything else, e.g. a refused connection, is retried).
_PERMANENT = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
              "INVALID_STATE", "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED",
              "FEATURE_DISABLED", "ENDPOINT_NOT_FOUND", "MALFORMED_REQUEST"}
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


# --- quiet, fail-fast MLflow ---------------------------------------------------------------------
_quieted = False


def quiet_mlflow() -> None:
    """No URL banners, progress bars or INFO chatter from MLflow in worker logs, and HTTP calls
    that fail at once (our own queue retries them, saying so) instead of after MLflow's ~4
    minutes of silent retries. Settings the user made in the environment are kept."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    for key, value in (("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"),
                       ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
                       ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
                       ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
        os.environ.setdefault(key, value)
    import mlflow  # noqa: F401 - configures its loggers on import: quiet them afterwards

    for name in ("mlflow", "alembic"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def _reason(e: BaseException) -> str:
    """One short line about an MLflow failure, secrets masked."""
    text = str(e)
    if "NewConnectionError" in text or "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    lines = text.strip().splitlines()
    first = lines[0] if lines else type(e).__name__
    return mask_secrets(first if len(first) <= 200 else first[:197] + "...")


def _permanent(e: BaseException) -> bool:
    """An error that retrying cannot fix (a refused request, a bug); anything that may pass
    (MLflow unreachable, overloaded, a locked database, a full disk) is retried."""
    import requests
    import sqlalchemy
    from mlflow.exceptions import MlflowException

    if isinstance(e, MlflowException):
        return e.error_code in _PERMANENT
    if isinstance(e, (FileNotFoundError, NotADirectoryError, PermissionError)):
        return True
    return not isinstance(e, (OSError, requests.exceptions.RequestException,
                              sqlalchemy.exc.OperationalError))


# --- what a run records ---------------------------------------------------------------------------
def run_params(config: TrainConfig) -> dict[str, str]:
    """MLflow params: every TrainConfig field except the machine ones, as strings (masked)."""
    return {k: mask_secrets(str(v)) for k, v in config.to_dict(machine=False).items()}


def machine_tags(config: TrainConfig) -> dict[str, str]:
    return {f"{TAG}{k}": mask_secrets(str(getattr(config, k)))
            for k in sorted(TrainConfig.machine_fields())}


def describe(config: TrainConfig) -> str:
    """A readable run name for a configuration, e.g. 'wavelet micro, haar x3, kernel on, seed=0'."""
    if config.model == "vit":
        what = f"vit {config.model_size}, patch {config.patch_size}"
    else:
        what = (f"wavelet {config.model_size}, {config.wavelet} x{config.n_levels}, kernel "
                f"{'on' if config.use_kernel else 'off'}, {config.token_layout} tokens")
    return f"{what}, seed={config.seed}"


def config_yaml(config: TrainConfig) -> str:
    """The resolved configuration (machine fields included), secrets masked."""
    import yaml

    data = {k: mask_secrets(v) if isinstance(v, str) else v for k, v in config.to_dict().items()}
    return (f"# config hash {config.config_hash()} (machine fields excluded from it)\n"
            + yaml.safe_dump(data, sort_keys=False))


@functools.lru_cache(maxsize=4)
def git_info(path: str | None = None) -> dict[str, Any] | None:
    """{'commit': sha, 'dirty': bool} of the checkout wno runs from ($WNO_GIT_COMMIT in images
    built without .git), or None. Read once per process."""
    if os.environ.get(ENV_GIT_COMMIT):
        return {"commit": os.environ[ENV_GIT_COMMIT], "dirty": None}
    where = path or str(Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", where, "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"commit": head.stdout.strip(), "dirty": dirty}


def environment_info(device: str | None = None) -> dict[str, Any]:
    """Python, platform, package versions, git commit and accelerator: what reproduces a run.
    No environment variables (they may hold credentials)."""
    import platform
    from importlib import metadata

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "host": socket.gethostname(), "packages": packages, "git": git_info(),
                           "device": device}
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = {"cuda": torch.version.cuda, "threads": torch.get_num_threads()}
        if device and device.startswith("cuda") and torch.cuda.is_available():
            env["torch"]["gpu"] = torch.cuda.get_device_name(torch.device(device))
            env["torch"]["cudnn"] = torch.backends.cudnn.version()
    return env


def artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment of a local store keeps artifacts: beside its SQLite file (for the
    default store, `defaults.artifact_location()`); None lets a tracking server decide."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        return (path.parent / "mlartifacts").resolve().as_uri()
    return defaults.artifact_location()


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, when the tracking URI is a server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{mask_url(tracking_uri.rstrip('/'))}/#/experiments/{experiment_id}/runs/{run_id}"


_prepared: set[str] = set()


def prepare_store(tracking_uri: str) -> None:
    """Create (or migrate) a local SQLite store once, under a file lock.

    MLflow lays out a new SQLite store with a few dozen schema migrations; two processes doing it
    at once (four workers starting on a fresh wno-runs/) break it for good ("table
    _alembic_tmp_tags already exists"). The first one through the lock lays it out, the others
    then find it ready.
    """
    if not tracking_uri.startswith("sqlite:///") or tracking_uri in _prepared:
        return
    import fcntl

    from mlflow.tracking import MlflowClient

    quiet_mlflow()
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f".{db.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _prepared.add(tracking_uri)


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    prepare_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(client, name: str, artifact_location: str | None,
                      tags: dict[str, str] | None = None) -> str:
    """The id of experiment `name`, created (or restored, when deleted) if need be."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags=tags or None)
        except MlflowException as e:  # another worker created it meanwhile
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _quote(value: str) -> str | None:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def find_run(client, experiment_id: str, identity: dict[str, str]):
    """The oldest active run of the experiment carrying every `identity` tag, or None."""
    from mlflow.entities import ViewType

    terms = []
    for key, value in identity.items():
        quoted = _quote(value)
        if quoted is None:
            return None
        terms.append(f"tags.`{key}` = {quoted}")
    runs = client.search_runs([experiment_id], " and ".join(terms),
                              run_view_type=ViewType.ACTIVE_ONLY, max_results=10,
                              order_by=["attributes.start_time ASC"])
    return runs[0] if runs else None


def epoch_steps(client, run_id: str) -> set[int]:
    """The epochs for which the run already holds per-epoch metrics."""
    steps: set[int] = set()
    for key in schema.EPOCH_METRICS:
        steps.update(m.step for m in client.get_metric_history(run_id, key))
    return steps


# --- where a run goes ------------------------------------------------------------------------------
@dataclass
class RunTarget:
    """Which MLflow run a training belongs to, and what to tag it with."""

    tracking_uri: str
    experiment: str
    run_name: str
    config: TrainConfig
    tags: dict[str, str]  # set on every attempt (later attempts overwrite)
    identity: dict[str, str]  # tags that find the run again (e.g. study and config hash)
    run_id: str | None = None  # a run to continue (e.g. the trial's schema.MLFLOW_RUN)
    find: bool = True  # look for an existing run by `identity` when `run_id` does not do
    experiment_tags: dict[str, str] = field(default_factory=dict)
    trial_number: int | None = None  # appended to the run's `wno.trial_numbers`


def trial_target(*, study: str, number: int, trial_id: int, attrs: dict[str, Any],
                 config: TrainConfig, storage_url: str, host: str, device: str,
                 retry_history: Iterable[int] = (), tracking_uri: str | None = None,
                 description: str = "") -> RunTarget:
    """The run of an Optuna trial: experiment = study, identity = (study, config hash)."""
    config_hash = attrs.get(schema.CONFIG_HASH) or config.config_hash()
    seed = attrs.get(schema.SEED, config.seed)
    group = attrs.get(schema.GROUP) or describe(config).rsplit(", seed=", 1)[0]
    tags = {
        f"{TAG}study": study, f"{TAG}trial_number": str(number), f"{TAG}trial_id": str(trial_id),
        f"{TAG}config_hash": config_hash, f"{TAG}seed": str(seed), f"{TAG}group": group,
        f"{TAG}role": str(attrs.get(schema.ROLE, "")),
        f"{TAG}factors": json.dumps(attrs.get(schema.FACTORS, {}), sort_keys=True, default=str),
        f"{TAG}storage": mask_url(storage_url), f"{TAG}host": host, f"{TAG}device_label": device,
        f"{TAG}retry_of": str(attrs.get(schema.RETRY_OF, "")),
        f"{TAG}retry_history": ",".join(str(n) for n in retry_history),
        f"{TAG}source": "worker", "mlflow.source.name": "wno worker", "mlflow.source.type": "JOB",
    }
    exp_tags = {f"{TAG}study": study, f"{TAG}storage": mask_url(storage_url)}
    if description:
        exp_tags["mlflow.note.content"] = description
    return RunTarget(
        tracking_uri=defaults.tracking_uri(tracking_uri), experiment=study,
        run_name=mask_secrets(f"{group}, seed={seed}"), config=config,
        tags={k: mask_secrets(v) for k, v in tags.items()},
        identity={f"{TAG}study": study, f"{TAG}config_hash": config_hash},
        run_id=attrs.get(schema.MLFLOW_RUN), trial_number=number,
        experiment_tags={k: mask_secrets(v) for k, v in exp_tags.items()})


def train_target(config: TrainConfig, *, tracking_uri: str | None = None,
                 experiment: str | None = None, resume: bool = True) -> RunTarget:
    """The run of a `wno train` run: identity = (config hash, checkpoint folder), so running the
    same command again continues it; `resume=False` starts a new run."""
    save_dir = str(Path(config.save_dir).resolve())
    tags = {f"{TAG}config_hash": config.config_hash(), f"{TAG}seed": str(config.seed),
            f"{TAG}checkpoint_dir": save_dir, f"{TAG}source": "train",
            f"{TAG}host": socket.gethostname(), "mlflow.source.name": "wno train",
            "mlflow.source.type": "LOCAL"}
    return RunTarget(
        tracking_uri=defaults.tracking_uri(tracking_uri), experiment=experiment or TRAIN_EXPERIMENT,
        run_name=describe(config), config=config,
        tags={k: mask_secrets(v) for k, v in tags.items()},
        identity={f"{TAG}config_hash": config.config_hash(), f"{TAG}checkpoint_dir": save_dir},
        find=resume)


# --- the background sender ------------------------------------------------------------------------
@dataclass
class _Op:
    what: str  # for messages, e.g. "epoch 3"
    fn: Callable[[], None] | None = None
    metrics: list | None = None  # Metric objects: merged with neighbouring metric ops
    epoch: int | None = None  # per-epoch metrics of this epoch (skipped when already logged)


class _Outbox:
    """Runs ops in order on one daemon thread; a failed op stays at the head and is retried with
    exponential backoff (a new op wakes the retry at once). Consecutive metric ops go out in one
    batch."""

    def __init__(self, name: str, send_metrics: Callable[[list[_Op]], None],
                 where: str, backoff: tuple[float, float] = (1.0, 30.0)):
        self.name, self.where = name, where  # `where`: the masked tracking URI
        self.send_metrics = send_metrics
        self.backoff = backoff
        self.ops: collections.deque[_Op] = collections.deque()
        self.cond = threading.Condition()
        self.failures = 0  # failed attempts, all outages together
        self.outages = 0
        self.dropped: list[str] = []  # ops given up on (errors retrying cannot fix)
        self.timings: collections.deque = collections.deque(maxlen=10_000)  # (what, seconds)
        self.down_since: float | None = None
        self._running = False  # a sender thread is alive (it ends after a few idle seconds)

    def put(self, op: _Op) -> None:
        with self.cond:
            self.ops.append(op)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="wno-mlflow", daemon=True).start()
            self.cond.notify_all()

    @property
    def pending(self) -> int:
        with self.cond:
            return len(self.ops)

    def drain(self, timeout: float | None) -> bool:
        """Wait until every op went out (True) or `timeout` s passed (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.ops:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(left if left is None else min(left, 1.0))
            return True

    def _head(self) -> list[_Op]:
        first = self.ops[0]
        if first.metrics is None:
            return [first]
        batch, count = [], 0
        for op in self.ops:
            if op.metrics is None or (batch and count + len(op.metrics) > MAX_METRICS_PER_BATCH):
                break
            batch.append(op)
            count += len(op.metrics)
        return batch

    def _run(self) -> None:
        delay = self.backoff[0]
        last_note = 0.0
        while True:
            with self.cond:
                if not self.ops:
                    self.cond.wait(5.0)
                if not self.ops:  # idle: let the thread end; put() starts another
                    self._running = False
                    return
                batch = self._head()
            started = time.perf_counter()
            try:
                if batch[0].metrics is not None:
                    self.send_metrics(batch)
                else:
                    batch[0].fn()
                took = time.perf_counter() - started
                self.timings.extend((op.what, took / len(batch)) for op in batch)
                log.debug("mlflow: %s took %.3f s", ", ".join(op.what for op in batch), took)
            except _Disabled:
                pass
            except Exception as e:  # noqa: BLE001 - nothing may escape into training
                if _permanent(e):
                    what = ", ".join(op.what for op in batch)
                    self.dropped.append(what)
                    log.warning("mlflow: %s: %s failed and is not retried: %s", self.name, what,
                                _reason(e))
                else:
                    self.failures += 1
                    now = time.monotonic()
                    _unreachable.setdefault(self.where, now)
                    if self.down_since is None:
                        self.down_since, last_note = now, now
                        self.outages += 1
                        log.warning("mlflow: %s: cannot reach %s (%s); keeping %d item(s) and "
                                    "retrying with backoff, training goes on", self.name,
                                    self.where, _reason(e), self.pending)
                    elif now - last_note > 60:
                        last_note = now
                        log.warning("mlflow: %s: %s still unreachable after %.0f s (%s); %d "
                                    "item(s) kept", self.name, self.where, now - self.down_since,
                                    _reason(e), self.pending)
                    with self.cond:  # a new op (an epoch ending) wakes the retry early
                        n = len(self.ops)
                        self.cond.wait_for(lambda: len(self.ops) != n, timeout=delay)
                    delay = min(delay * 2, self.backoff[1])
                    continue
            with self.cond:
                for _ in batch:
                    self.ops.popleft()
                self.cond.notify_all()
            delay = self.backoff[0]
            _unreachable.pop(self.where, None)
            if self.down_since is not None:
                log.warning("mlflow: %s: %s reachable again after %.0f s; sent what was kept",
                            self.name, self.where, time.monotonic() - self.down_since)
                self.down_since = None



# Tracking URIs (masked) that a sender failed to reach, and since when; cleared by any success.
# A tracker on such a URI waits seconds, not minutes, for its run to open and its queue to drain:
# its sender keeps retrying in the background while the worker goes on with its trials.
_unreachable: dict[str, float] = {}
SHORT_WAIT = 2.0


class _Disabled(Exception):
    """The run could not be opened (an error retrying cannot fix): later ops are skipped."""


_unfinished: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _drain_at_exit() -> None:
    """At exit, give runs still waiting for MLflow one more chance (one `drain_timeout` for all
    of them together), then say what is lost and where it is kept."""
    pending = [t for t in list(_unfinished) if t.outbox.pending]
    if not pending:
        return
    deadline = time.monotonic() + max(t.drain_timeout for t in pending)
    for tracker in pending:
        if not tracker.outbox.drain(max(0.0, deadline - time.monotonic())):
            log.warning("mlflow: run %s: %d item(s) never reached %s; %s holds the metrics",
                        tracker.run_id, tracker.outbox.pending, tracker.outbox.where,
                        Path(tracker.target.config.save_dir) / "metrics.json")


# --- the callback ------------------------------------------------------------------------------------
class MlflowTracker(Callback):
    """Logs one training to one MLflow run (see the module docstring).

    `managed=True` (the worker): `on_train_end` does not end the run; the worker calls
    `on_trial_end(state, error)` once the trial's fate is recorded. Otherwise `on_train_end` ends
    it (FINISHED, or KILLED when stopped early: running it again resumes), and `close()` ends it
    after an exception.
    """

    def __init__(self, target: RunTarget, *, checkpoints: str = "final",
                 system_metrics: bool = True, system_metrics_interval: float = 10.0,
                 managed: bool = False, on_run_id: Callable[[str], None] | None = None,
                 open_timeout: float = 30.0, drain_timeout: float = 120.0,
                 backoff: tuple[float, float] = (1.0, 30.0)):
        if checkpoints not in CHECKPOINT_POLICIES:
            raise ValueError(f"checkpoints={checkpoints!r} is not one of "
                             f"{', '.join(CHECKPOINT_POLICIES)}")
        quiet_mlflow()
        self.target = target
        self.checkpoints = checkpoints
        self.system_metrics, self.system_metrics_interval = system_metrics, system_metrics_interval
        self.managed, self.on_run_id = managed, on_run_id
        self.open_timeout, self.drain_timeout = open_timeout, drain_timeout
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.opened = threading.Event()
        self.outbox = _Outbox(target.run_name, self._send_metrics, mask_url(target.tracking_uri),
                              backoff)
        self._client_obj = None
        self._logged: set[int] = set()  # epochs MLflow holds
        self._final_epochs: float | None = None  # `epochs_completed` MLflow holds, if any
        self._monitor = None
        self._open_queued = False
        self._ended = False  # the end of the run is queued
        self._run_ending = False  # ... and being sent (no system metrics monitor after this)
        self._result: TrainResult | None = None
        self._replaced: str | None = None
        # Time the training thread spent here (benchmarks): waiting for the run to open,
        # in on_epoch_end, and waiting at the end for MLflow to have everything.
        self.open_seconds = self.epoch_hook_seconds = self.drain_seconds = 0.0

    # --- opening the run ---------------------------------------------------------------------
    @property
    def client(self):
        if self._client_obj is None:
            self._client_obj = _client(self.target.tracking_uri)
        return self._client_obj

    def open(self, timeout: float | None = None) -> str | None:
        """Get or create the run now; its id, or None when MLflow did not answer within `timeout`
        (default `open_timeout`) s: it keeps trying in the background, and `on_run_id` is called
        when it succeeds."""
        if not self._open_queued:
            self._open_queued = True
            self.outbox.put(_Op("opening the run", self._open))
        self.opened.wait(self._wait(self.open_timeout if timeout is None else timeout))
        return self.run_id

    def _wait(self, timeout: float) -> float:
        """`timeout`, or a few seconds when MLflow is known to be away (no use waiting)."""
        return min(timeout, SHORT_WAIT) if self.outbox.where in _unreachable else timeout

    def _open(self) -> None:
        try:
            self._open_run()
        except Exception as e:
            if _permanent(e):  # no run, ever: stop waiting for one
                self.opened.set()
            raise

    def _open_run(self) -> None:
        t = self.target
        client = self.client
        self.experiment_id = ensure_experiment(client, t.experiment, artifact_root(t.tracking_uri),
                                               t.experiment_tags)
        run = self._existing_run()
        if run is None:
            run = client.create_run(self.experiment_id, run_name=t.run_name,
                                    tags=self._attempt_tags({}))
        else:
            client.update_run(run.info.run_id, status="RUNNING")
            self._set_tags(run.info.run_id, self._attempt_tags(run.data.tags))
        run_id = run.info.run_id
        self._log_params(run_id, run.data.params)
        self._logged = epoch_steps(client, run_id) if run.data.metrics else set()
        self._final_epochs = run.data.metrics.get("epochs_completed")
        self.run_id = run_id
        self.opened.set()
        self._announce(run_id)

    def _existing_run(self):
        from mlflow.exceptions import MlflowException

        t, client = self.target, self.client
        if t.run_id:
            try:
                run = client.get_run(t.run_id)
            except MlflowException as e:
                if not _permanent(e):
                    raise
                run = None
            if (run is not None and run.info.lifecycle_stage == "active"
                    and run.data.tags.get(f"{TAG}config_hash") == t.identity.get(
                        f"{TAG}config_hash")):
                return run
        return find_run(client, self.experiment_id, t.identity) if t.find else None

    def _attempt_tags(self, existing: dict[str, str]) -> dict[str, str]:
        tags = dict(self.target.tags)
        tags.update(machine_tags(self.target.config))
        tags["mlflow.user"] = _user()
        git = git_info()
        if git:
            tags["mlflow.source.git.commit"] = git["commit"]
        attempts = int(existing.get(f"{TAG}attempts", "0") or 0) + 1
        tags[f"{TAG}attempts"] = str(attempts)
        if self.target.trial_number is not None:
            numbers = [n for n in existing.get(f"{TAG}trial_numbers", "").split(",") if n]
            if str(self.target.trial_number) not in numbers:
                numbers.append(str(self.target.trial_number))
            tags[f"{TAG}trial_numbers"] = ",".join(numbers)
        return tags

    def _set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, mask_secrets(str(v))) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, tags=items[i:i + 100])

    def _log_params(self, run_id: str, existing: dict[str, str]) -> None:
        from mlflow.entities import Param

        params = run_params(self.target.config)
        changed = {k for k, v in params.items() if k in existing and existing[k] != v}
        if changed:  # same config hash, other text (an older wno wrote it): keep the first
            log.warning("mlflow: run %s: params %s differ from this attempt's; kept as they were",
                        run_id, ", ".join(sorted(changed)))
        new = [Param(k, v) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i:i + 100])

    def _announce(self, run_id: str) -> None:
        if self.on_run_id is None:
            return
        try:
            self.on_run_id(run_id)
        except Exception as e:  # noqa: BLE001 - the run is there; only the link is missing
            log.warning("mlflow: could not record run id %s: %s", run_id, mask_secrets(str(e)))

    # --- the training's hooks ---------------------------------------------------------------------
    def _put(self, what: str, fn: Callable[[], None] | None = None, **kw) -> None:
        self.outbox.put(_Op(what, fn, **kw))
        _unfinished.add(self)

    def _guard(self, hook: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - tracking never stops training
            log.warning("mlflow: %s failed: %s", hook, mask_secrets(str(e)))

    def on_train_start(self, info: RunInfo) -> None:
        if not self.opened.is_set():  # the run should exist before training starts
            start = time.perf_counter()
            self._guard("opening the run", self.open)
            self.open_seconds += time.perf_counter() - start

        def start():
            self._put("checking the run's epochs", lambda: self._reconcile(info))
            self._put("config and environment", lambda: self._log_start(info))
            if self.system_metrics and _system_metrics_enabled():
                self._put("system metrics", self._start_monitor)

        self._guard("on_train_start", start)

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        start = time.perf_counter()
        self._guard("on_epoch_end", lambda: self._put(
            f"epoch {metrics.epoch}", metrics=_epoch_metrics(metrics), epoch=metrics.epoch))
        self.epoch_hook_seconds += time.perf_counter() - start
        return None  # never stops training

    def on_train_end(self, result: TrainResult) -> None:
        def end():
            self._result = result
            if not result.stopped:
                self._finish_logging(result)
            if not self.managed:
                self._end("KILLED" if result.stopped else "FINISHED")

        self._guard("on_train_end", end)
        if not self.managed:
            self.close(None)  # ended above; wait for MLflow to have everything

    def on_trial_end(self, state: str, error: str | None) -> None:
        """The worker's hook, after the trial's fate is recorded in Optuna."""
        def end():
            r = self._result
            if state == "PRUNED" and r is not None and r.stopped:
                self._finish_logging(r)
            tags = {f"{TAG}state": state}
            if error:
                tags[f"{TAG}error"] = mask_secrets(error)[:4000]
            self._put("trial state", lambda: self._set_tags(self._run_id(), tags))
            self.close(RUN_STATUS.get(state))

        self._guard("on_trial_end", end)

    def close(self, status: str | None = "FINISHED", timeout: float | None = None) -> bool:
        """End the run with `status` (FINISHED, FAILED, KILLED; None leaves it as it is) unless it
        was ended already, then wait up to `timeout` (default `drain_timeout`) s for everything
        to reach MLflow. False when something is still waiting (it keeps being retried)."""
        if not self._open_queued:
            return True
        self._end(status)
        start = time.perf_counter()
        done = self.outbox.drain(self._wait(self.drain_timeout if timeout is None else timeout))
        self.drain_seconds += time.perf_counter() - start
        if not done:
            log.warning("mlflow: run %s: %d item(s) still waiting for %s; retrying in the "
                        "background", self.run_id, self.outbox.pending, self.outbox.where)
        return done

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("FAILED" if exc_type is not None else "FINISHED")

    # --- what the ops do --------------------------------------------------------------------------
    def _run_id(self) -> str:
        if self.run_id is None:
            raise _Disabled()
        return self.run_id

    def _reconcile(self, info: RunInfo) -> None:
        """Fill in the epochs up to `start_epoch` MLflow lacks; replace a run that holds epochs
        after it (training restarts from an earlier checkpoint than MLflow has seen)."""
        run_id = self._run_id()
        later = sorted(e for e in self._logged if e > info.start_epoch)
        if later:
            self._replace(run_id, info, later[-1])
        missing = [m for m in info.history
                   if m.epoch <= info.start_epoch and m.epoch not in self._logged]
        if missing:
            self._send_metrics([_Op(f"epoch {m.epoch}", metrics=_epoch_metrics(m), epoch=m.epoch)
                                for m in missing])
        self._set_tags(self._run_id(), {f"{TAG}start_epoch": str(info.start_epoch),
                                     f"{TAG}device": info.device, f"{TAG}params": str(info.params),
                                     f"{TAG}tokens": str(info.tokens)})

    def _replace(self, old: str, info: RunInfo, last: int) -> None:
        from mlflow.entities import RunStatus

        client = self.client
        if self._replaced is None:
            tags = self._attempt_tags({})
            tags[f"{TAG}replaces"] = old
            self._replaced = client.create_run(self.experiment_id, run_name=self.target.run_name,
                                               tags=tags).info.run_id
            self._log_params(self._replaced, {})
        client.set_tag(old, f"{TAG}replaced_by", self._replaced)
        client.set_terminated(old, RunStatus.to_string(RunStatus.KILLED))
        client.delete_run(old)
        log.warning("mlflow: run %s holds epochs up to %d, but training %s; continuing in a new "
                    "run %s (the old one is deleted; MLflow can restore it)", old, last,
                    f"resumes after epoch {info.start_epoch}" if info.start_epoch else
                    "starts afresh (its checkpoint is gone)", self._replaced)
        self.run_id, self._logged, self._final_epochs = self._replaced, set(), None
        self._announce(self._replaced)

    def _log_start(self, info: RunInfo) -> None:
        run_id = self._run_id()
        self.client.log_text(run_id, config_yaml(info.config), "config.yaml")
        env = environment_info(info.device)
        self.client.log_text(run_id, mask_secrets(json.dumps(env, indent=2)), "environment.json")

    def _send_metrics(self, ops: list[_Op]) -> None:
        run_id = self._run_id()
        metrics = [m for op in ops if op.epoch is None or op.epoch not in self._logged
                   for m in op.metrics]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
        self._logged.update(op.epoch for op in ops if op.epoch is not None)
        try:
            self._restart_monitor_if_dead()
        except Exception as e:  # noqa: BLE001 - the metrics went out; only system metrics lag
            log.warning("mlflow: system metrics monitor did not restart: %s", _reason(e))

    def _finish_logging(self, result: TrainResult) -> None:
        """Queue the final metrics (once per result) and the end-of-run artifacts."""
        from mlflow.entities import Metric

        done = float(result.epochs_completed)
        now = int(time.time() * 1000)
        metrics = [Metric(k, _num(v), now, result.epochs_completed)
                   for k, v in result.metrics().items() if v is not None]

        def final():
            if self._final_epochs == done:  # already there (a finished run evaluated again)
                return
            self._send_metrics([_Op("final metrics", metrics=metrics)])
            self._final_epochs = done

        self._put("final metrics", final)
        save_dir = Path(result.config.save_dir)
        self._put("metrics.json", lambda: self._log_file(save_dir / "metrics.json", None))
        if self.checkpoints in ("best", "both"):
            self._put("best checkpoint", lambda: self._log_file(save_dir / "best.pt",
                                                                "checkpoints"))
        if self.checkpoints in ("final", "both"):
            self._put("final checkpoint", lambda: self._log_final_weights(save_dir / "last.pt"))

    def _log_file(self, path: Path, artifact_path: str | None) -> None:
        run_id = self._run_id()
        if path.is_file():
            self.client.log_artifact(run_id, str(path), artifact_path)

    def _log_final_weights(self, last: Path) -> None:
        """The final model weights and config (no optimizer state: a third of last.pt)."""
        import torch

        run_id = self._run_id()
        if not last.is_file():
            return
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        slim = {k: ckpt[k] for k in ("format", "epoch", "config", "config_hash", "model")
                if k in ckpt}
        slim["config"] = {k: mask_secrets(v) if isinstance(v, str) else v
                          for k, v in slim.get("config", {}).items()}
        with tempfile.TemporaryDirectory(prefix="wno-final-") as tmp:
            path = Path(tmp) / "final.pt"
            torch.save(slim, path)
            self.client.log_artifact(run_id, str(path), "checkpoints")

    def _start_monitor(self) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        run_id = self._run_id()
        if self._run_ending:
            return
        monitor = SystemMetricsMonitor(run_id, sampling_interval=self.system_metrics_interval,
                                       resume_logging=True, tracking_uri=self.target.tracking_uri)
        monitor.start()
        self._monitor = monitor

    def _restart_monitor_if_dead(self) -> None:
        """MLflow's monitor gives up when MLflow is away; start it again once it is back."""
        m = self._monitor
        if m is not None and not self._run_ending and (m._process is None
                                                       or not m._process.is_alive()):
            log.debug("mlflow: restarting the system metrics monitor")
            self._monitor = None
            self._start_monitor()

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None

    def _end(self, status: str | None) -> None:
        if self._ended:
            return
        self._ended = True

        def end():
            self._run_ending = True
            self._stop_monitor()
            if status is not None:
                self.client.set_terminated(self._run_id(), status)

        self._put(f"ending the run ({status or 'status unchanged'})", end)


def _epoch_metrics(m: EpochMetrics) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = m.to_dict()
    return [Metric(k, _num(values[k]), now, m.epoch) for k in schema.EPOCH_METRICS]


def _num(v: Any) -> float:
    v = float(v)
    return v if not math.isinf(v) else math.copysign(sys.float_info.max, v)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


def _system_metrics_enabled() -> bool:
    value = os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING")
    return value is None or value.strip().lower() not in ("false", "0", "no", "off")


# --- the factories the CLI and the worker use --------------------------------------------------------
def checkpoint_policy(explicit: str | None = None) -> str:
    policy = (explicit or os.environ.get(ENV_CHECKPOINTS) or "final").strip().lower()
    if policy not in CHECKPOINT_POLICIES:
        raise ValueError(f"{ENV_CHECKPOINTS}={policy!r} is not one of "
                         f"{', '.join(CHECKPOINT_POLICIES)}")
    return policy


def train_tracker(config: TrainConfig, *, tracking_uri: str | None = None,
                  experiment: str | None = None, resume: bool = True,
                  **options: Any) -> MlflowTracker:
    """The tracker of a `wno train` run (see `train_target`)."""
    options.setdefault("checkpoints", checkpoint_policy())
    return MlflowTracker(train_target(config, tracking_uri=tracking_uri, experiment=experiment,
                                      resume=resume), **options)


def trial_tracker(ctx: TrialContext, *, tracking_uri: str | None = None,
                  **options: Any) -> MlflowTracker:
    """The tracker of a worker's trial: it stores the run id in the trial (schema.MLFLOW_RUN)."""
    history: list[int] = []
    try:
        history = list(ctx.queue.storage.get_trial(ctx.claim.trial_id).system_attrs.get(
            "retry_history", []))
    except Exception as e:  # noqa: BLE001 - only a tag is missing
        log.warning("mlflow: cannot read the retry history of trial #%d: %s", ctx.number,
                    mask_secrets(str(e)))
    target = trial_target(study=ctx.study_name, number=ctx.number, trial_id=ctx.claim.trial_id,
                          attrs=ctx.user_attrs, config=ctx.config, storage_url=ctx.queue.url,
                          host=ctx.host, device=ctx.device, retry_history=history,
                          tracking_uri=tracking_uri,
                          description=getattr(ctx.spec, "description", "") or "")

    def store(run_id: str) -> None:
        if ctx.user_attrs.get(schema.MLFLOW_RUN) != run_id:
            ctx.set_user_attr(schema.MLFLOW_RUN, run_id)

    options.setdefault("checkpoints", checkpoint_policy())
    return MlflowTracker(target, managed=True, on_run_id=store, **options)


def trial_callbacks(ctx: TrialContext) -> list[Callback]:
    """The worker's `callbacks_factory`: a tracker whose run exists (and whose id is stored in
    the trial) before training starts, when MLflow answers within `open_timeout`. Never raises:
    a tracking problem costs the tracking, never the trial."""
    try:
        tracker = trial_tracker(ctx)
        run_id = tracker.open()
        if run_id is None:
            log.warning("mlflow: trial #%d: no MLflow run yet (%s does not answer); training "
                        "starts, the run follows when it does", ctx.number, tracker.outbox.where)
        else:  # in the worker's log, next to its own lines
            url = run_url(tracker.target.tracking_uri, tracker.experiment_id, run_id)
            print(f"{time.strftime('%H:%M:%S')} [mlflow] {ctx.study_name}#{ctx.number}: run "
                  f"{run_id} in {url or tracker.outbox.where}", flush=True)
        return [tracker]
    except Exception as e:  # noqa: BLE001
        log.warning("mlflow: trial #%d is not tracked: %s", ctx.number, mask_secrets(str(e)))
        return []


worker_callbacks = trial_callbacks  # what `wno worker` looks up (wno/cli/worker.py)


# --- the MLflow server (`wno ui`, tests) ----------------------------------------------------------------
def server_env(backend_uri: str, allowed_hosts: str | None = None) -> dict[str, str]:
    """The environment of an `mlflow server`: the backend URI passed through it (not argv, where
    `ps` shows passwords), MLflow's job runner off (GenAI jobs: seven extra processes)."""
    env = dict(os.environ)
    env["MLFLOW_BACKEND_STORE_URI"] = backend_uri
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if allowed_hosts:
        env["MLFLOW_SERVER_ALLOWED_HOSTS"] = allowed_hosts
    return env


def start_server(backend_uri: str, *, host: str = "127.0.0.1", port: int = 5000,
                 artifacts: str | Path | None = None, log_path: str | Path | None = None,
                 workers: int = 1, allowed_hosts: str | None = None) -> subprocess.Popen:
    """Start `mlflow server` in its own process group (stop it with `stop_server`)."""
    if backend_uri.startswith("sqlite:///"):
        Path(backend_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    argv = ([str(mlflow_exe)] if mlflow_exe.exists() else [sys.executable, "-m", "mlflow"])
    argv += ["server", "--host", host, "--port", str(port), "--workers", str(workers)]
    if artifacts is not None:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        argv += ["--artifacts-destination", str(artifacts)]
    out = subprocess.DEVNULL
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(argv, env=server_env(backend_uri, allowed_hosts), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if out is not subprocess.DEVNULL:
            out.close()


def server_health(url: str, timeout: float = 3.0) -> str:
    """The body of the tracking server's `url`/health when it answers 200; raises otherwise
    (`requests.RequestException`). Credentials in the URL (https://user:pw@host) go as basic
    auth, as MLflow's own client sends them (urllib would refuse such a URL)."""
    import requests

    response = requests.get(url.rstrip("/") + "/health", timeout=timeout)
    response.raise_for_status()
    return response.text


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0) -> bool:
    """Poll `url`/health until it answers OK (True), the process exits or `timeout` s pass."""
    import requests

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            server_health(url, timeout=2)
            return True
        except requests.RequestException:
            pass
        time.sleep(0.25)
    return False


def stop_server(proc: subprocess.Popen, *, sig: int | None = None, timeout: float = 20.0) -> None:
    """Stop a process started with `start_new_session` and every process it started (SIGTERM,
    then SIGKILL after `timeout` s; `sig=SIGKILL` kills at once, like a crash)."""
    import signal

    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGTERM if sig is None else sig)
    except (ProcessLookupError, PermissionError):
        pass
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:  # children that left the group, or ignored SIGTERM
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
