"""The tracker: one training logged to one MLflow run, and the factories the CLI and the worker use.

A worker trains each trial with an `MlflowTracker` among its callbacks (`trial_callbacks(ctx)`:
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

`MlflowTracker` is one state machine (open or find the run, reconcile its epochs, send, end),
which is why this module runs past 500 lines; the factories below it only build one.

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

import getpass
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wno.base.utils import mask_secrets, mask_url
from wno.platform import schema
from wno.platform.tracking.records import (TAG, RunTarget, config_yaml, dataset_input,
                                           environment_info, git_info, machine_tags, run_params,
                                           train_target, trial_target)
from wno.platform.tracking.sender import (MAX_METRICS_PER_BATCH, SHORT_WAIT, Disabled, Op, Outbox,
                                          unfinished, unreachable)
from wno.platform.tracking.store import (artifact_root, client_for, ensure_experiment, epoch_steps,
                                         find_run, permanent, quiet_mlflow, reason, run_url)
from wno.training.config import TrainConfig
from wno.training.loop import Callback, EpochMetrics, RunInfo, TrainResult

log = logging.getLogger(__name__)

CHECKPOINT_POLICIES = ("none", "final", "best", "both")
ENV_CHECKPOINTS = "WNO_MLFLOW_CHECKPOINTS"  # the worker's checkpoint policy (default: final)
# What the worker's trial outcomes make of the MLflow run (LOST: left alone, a retry owns it).
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED", "WAITING": "KILLED"}


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
        self.outbox = Outbox(target.run_name, self._send_metrics, mask_url(target.tracking_uri),
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
            self._client_obj = client_for(self.target.tracking_uri)
        return self._client_obj

    def open(self, timeout: float | None = None) -> str | None:
        """Get or create the run now; its id, or None when MLflow did not answer within `timeout`
        (default `open_timeout`) s: it keeps trying in the background, and `on_run_id` is called
        when it succeeds."""
        if not self._open_queued:
            self._open_queued = True
            self.outbox.put(Op("opening the run", self._open))
        self.opened.wait(self._wait(self.open_timeout if timeout is None else timeout))
        return self.run_id

    def _wait(self, timeout: float) -> float:
        """`timeout`, or a few seconds when MLflow is known to be away (no use waiting)."""
        return min(timeout, SHORT_WAIT) if self.outbox.where in unreachable else timeout

    def _open(self) -> None:
        try:
            self._open_run()
        except Exception as e:
            if permanent(e):  # no run, ever: stop waiting for one
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
                if not permanent(e):
                    raise
                run = None
            why = _not_continued(run, t)
            if why is None:
                return run
            log.warning("mlflow: run %s, stored on the trial, %s; %s", t.run_id, why,
                        "continuing in the run the trial's tags find, else a new one" if t.find
                        else "starting a new run")
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
        self.outbox.put(Op(what, fn, **kw))
        unfinished.add(self)

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
            raise Disabled()
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
            self._send_metrics([Op(f"epoch {m.epoch}", metrics=_epoch_metrics(m), epoch=m.epoch)
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
        # MLflow keeps one input per (name, digest) and run: a resumed run logs it again harmlessly.
        self.client.log_inputs(run_id, datasets=[dataset_input(info)])

    def _send_metrics(self, ops: list[Op]) -> None:
        run_id = self._run_id()
        metrics = [m for op in ops if op.epoch is None or op.epoch not in self._logged
                   for m in op.metrics]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
        self._logged.update(op.epoch for op in ops if op.epoch is not None)
        try:
            self._restart_monitor_if_dead()
        except Exception as e:  # noqa: BLE001 - the metrics went out; only system metrics lag
            log.warning("mlflow: system metrics monitor did not restart: %s", reason(e))

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
            self._send_metrics([Op("final metrics", metrics=metrics)])
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


def _not_continued(run, target: RunTarget) -> str | None:
    """Why the run stored on a trial cannot be continued (None: it can)."""
    if run is None:
        return f"is not in {mask_url(target.tracking_uri)}"
    if run.info.lifecycle_stage != "active":
        successor = run.data.tags.get(f"{TAG}replaced_by")
        if successor:
            return f"was replaced by run {successor} and deleted (its checkpoint was gone)"
        return (f"is deleted in MLflow (`mlflow runs restore --run-id {run.info.run_id}` "
                f"brings it back)")
    if run.data.tags.get(f"{TAG}config_hash") != target.identity.get(f"{TAG}config_hash"):
        return "belongs to another configuration"
    return None


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


def trial_tracker(ctx, *, tracking_uri: str | None = None,
                  **options: Any) -> MlflowTracker:
    """The tracker of a worker's trial (`ctx`: the worker's `TrialContext`); it stores the run id
    in the trial (schema.MLFLOW_RUN)."""
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
                          description=getattr(ctx.spec, "description", "") or "",
                          study_uid=ctx.study_uid or "")

    def store(run_id: str) -> None:
        if ctx.user_attrs.get(schema.MLFLOW_RUN) != run_id:
            ctx.set_user_attr(schema.MLFLOW_RUN, run_id)

    options.setdefault("checkpoints", checkpoint_policy())
    return MlflowTracker(target, managed=True, on_run_id=store, **options)


def trial_callbacks(ctx) -> list[Callback]:
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



