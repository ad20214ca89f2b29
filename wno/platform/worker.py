"""The worker: pull a trial from the queue, train it, record the result, repeat.

One worker per GPU (`wno worker --gpu 0`), on as many machines as share the storage. For each
trial the worker:

1. pops a WAITING trial atomically (`StudyQueue.pop`; a grid worker never creates trials), and
   for a search slot samples its parameters with the study's sampler;
2. builds the `TrainConfig` from the trial (machine fields from the worker: device, data
   directory, and a checkpoint directory keyed by (study identity, config hash), see
   `queue.checkpoint_folder`, so a retry or a handed-back trial resumes from the last checkpoint
   wherever it runs, and a study of the same name from another storage, or created again after
   a delete, never does);
3. trains with `wno.training.train(config, callbacks, resume=True, lineage=<study identity>)`
   (a checkpoint of another lineage, or whose weights do not fit, is set aside with a warning)
   while a thread heartbeats (and stops training when the trial was cancelled or failed as stale
   elsewhere);
4. tells COMPLETE with the objective metric (PRUNED for a pruned search trial), records
   `schema.METRICS`, `HOST`, `DEVICE`; an exception fails that trial with its error kept and the
   worker goes on; SIGTERM/SIGINT stop training at the next step, hand the trial back (WAITING,
   same trial and config) and exit 0.

On CPU a worker takes its share of the machine's cores (`wno.platform.cpu_share`: the CPU
workers under one WNO_HOME divide them, recounted before each trial and after each epoch) unless
`WorkerOptions.threads` says how many torch threads to use. Warnings of the training layer
(logger `wno.training`: checkpoints set aside, a resume by other code) go to the worker's log.

Tracking hooks in through `callbacks_factory(ctx) -> [Callback, ...]`: it is called once per
trial before training, with a `TrialContext` whose `set_user_attr` stores e.g. the MLflow run id
(`schema.MLFLOW_RUN`) on the trial; a retry inherits that attr, so it can resume the same run.
A returned callback may also define `on_trial_end(state, error)`: the worker calls it after the
trial's fate is recorded (state: COMPLETE, PRUNED, FAIL, WAITING when handed back, LOST).

One concern, about 600 lines: the life of a trial on a worker (pop, configure, heartbeat, train,
record, hand back) and of the worker around it (devices, signals, idle, the CPU share); the
pieces are small classes that only this loop uses.

Example (needs a study storage: WNO_STORAGE or wno-runs/optuna.db):
    >>> device, label = pin_device("cpu")
    >>> Worker(StudyQueue(), WorkerOptions(device=device, device_label=label,
    ...                                    idle_timeout=0)).run()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wno.training.config import TrainConfig
from wno.platform import defaults, schema
from wno.base.errors import UserError, one_line
from wno.platform.cpu_share import CpuShare, registry_folder
from wno.platform.queue import (DEFAULT_HEARTBEAT, STORED_ERROR_LIMIT, Claim, StudyQueue,
                                checkpoint_folder, legacy_checkpoint_folder)
from wno.platform.spec import StudySpec
from wno.training import Callback, EpochMetrics, RunInfo, TrainResult

# Outcomes of one trial.
COMPLETE, PRUNED, FAIL, HANDED_BACK, LOST = "COMPLETE", "PRUNED", "FAIL", "WAITING", "LOST"


@dataclass
class WorkerOptions:
    device: str = "cpu"  # what TrainConfig.device gets (after pin_device)
    device_label: str = "cpu"  # what the trial records as schema.DEVICE, e.g. "cuda:3 (H200)"
    studies: Sequence[str] = ()  # empty: any study with waiting trials
    max_trials: int | None = None
    idle_timeout: float | None = None  # None: wait for work forever; 0: exit when nothing waits
    data_dir: str | None = None  # default: WNO_DATA_DIR, else ./data
    checkpoint_dir: str | None = None  # default: WNO_CHECKPOINT_DIR, else wno-runs/checkpoints
    heartbeat_interval: float = DEFAULT_HEARTBEAT
    poll_interval: float = 5.0  # seconds between pops while the queue is empty
    threads: int | None = None  # torch threads; None: a share of the cores on CPU (cpu_share)
    cpu_registry: str | None = None  # default: cpu_share.registry_folder(WNO_HOME)


@dataclass
class TrialContext:
    """The trial a worker is about to train, as `callbacks_factory` sees it."""

    queue: StudyQueue
    claim: Claim
    spec: StudySpec
    config: TrainConfig  # the full config, machine fields included
    host: str
    device: str
    study_uid: str = ""  # the study's identity in its storage (keys checkpoints; schema.STUDY_UID)

    @property
    def study_name(self) -> str:
        return self.claim.study_name

    @property
    def number(self) -> int:
        return self.claim.number

    @property
    def user_attrs(self) -> dict[str, Any]:
        return self.claim.user_attrs

    def set_user_attr(self, key: str, value: Any) -> None:
        """Store an attr on the trial now (e.g. schema.MLFLOW_RUN before training starts)."""
        self.queue.set_user_attrs(self.claim.trial_id, {key: value})
        self.claim.user_attrs[key] = value


CallbacksFactory = Callable[[TrialContext], Sequence[Callback]]


@dataclass
class WorkerSummary:
    outcomes: Counter = field(default_factory=Counter)

    @property
    def trials(self) -> int:
        return sum(n for state, n in self.outcomes.items() if state in (COMPLETE, PRUNED, FAIL))


# --- devices ---------------------------------------------------------------------------------------
def physical_gpu(index: int, visible: str | None) -> str:
    """The GPU `--gpu index` names, given CUDA_VISIBLE_DEVICES (a scheduler may have set it)."""
    if visible is None or not visible.strip():
        if visible is not None:
            raise UserError("--gpu: CUDA_VISIBLE_DEVICES is set but empty, so no GPU is visible; "
                            "use --gpu cpu")
        return str(index)
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if index >= len(ids):
        raise UserError(f"--gpu {index}: CUDA_VISIBLE_DEVICES={visible} makes {len(ids)} GPU(s) "
                        f"visible (indices 0-{len(ids) - 1})")
    return ids[index]


def pin_device(gpu: str) -> tuple[str, str]:
    """Pin this process to one device: ("cuda:0", "cuda:3 (NVIDIA H200)") or ("cpu", "cpu").

    Before torch touches CUDA, `--gpu N` narrows CUDA_VISIBLE_DEVICES to that one GPU, so nothing
    in the process (data loading, other libraries) can wander onto another; afterwards it falls
    back to `torch.cuda.set_device`.
    """
    gpu = str(gpu).strip().lower()
    if gpu == "cpu":
        if "torch" not in sys.modules:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu", "cpu"
    index = gpu.removeprefix("cuda:")
    if not index.isdigit():
        raise UserError(f"--gpu must be a GPU index (0, 1, ...) or cpu, got {gpu!r}")
    physical = physical_gpu(int(index), os.environ.get("CUDA_VISIBLE_DEVICES"))
    torch_loaded = "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized()
    if not torch_loaded:
        os.environ["CUDA_VISIBLE_DEVICES"] = physical
    device = f"cuda:{index}" if torch_loaded else "cuda:0"
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"--gpu {index}: no CUDA device is visible here (torch.cuda.is_available() "
                        f"is False); use --gpu cpu")
    torch.cuda.set_device(torch.device(device))
    return device, f"cuda:{physical} ({torch.cuda.get_device_name(torch.device(device))})"


# --- callbacks the worker gives train() --------------------------------------------------------------
class _Heartbeat:
    """Heartbeats from a thread while the trial runs; notices when the trial was taken away.

    Every few beats it also sweeps the worker's studies for stale trials, so a lone busy worker
    still re-enqueues the trials of a dead one.
    """

    def __init__(self, queue: StudyQueue, trial_id: int, interval: float,
                 sweep: Callable[[], None]):
        self.queue, self.trial_id, self.interval, self.sweep = queue, trial_id, interval, sweep
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wno-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        beats = 0
        while not self._done.wait(self.interval):
            try:
                if not self.queue.heartbeat(self.trial_id):
                    self.lost.set()
                    return
                beats += 1
                if beats % GRACE_SWEEP_BEATS == 0:
                    self.sweep()
            except Exception as e:  # the storage may come back: keep beating
                _say(f"heartbeat failed ({one_line(e, 200)}); retrying")


GRACE_SWEEP_BEATS = 4


class _StopCallback(Callback):
    """Stops training at the next step on a signal, or when the trial was taken away."""

    def __init__(self, stop: threading.Event, lost: threading.Event):
        self.stop, self.lost = stop, lost

    def should_stop_now(self) -> bool:
        return self.stop.is_set() or self.lost.is_set()


class _LogCallback(Callback):
    def __init__(self, label: str):
        self.label = label
        self.start_epoch = 0

    def on_train_start(self, info: RunInfo) -> None:
        self.start_epoch = info.start_epoch
        if info.start_epoch:
            _say(f"{self.label}: resumed from checkpoint at epoch "
                 f"{info.start_epoch}/{info.config.epochs} ({info.checkpoint_dir})")
        _say(f"{self.label}: {info.params:,} params, {info.tokens} tokens, "
             f"{info.train_images} train images, device {info.device}")

    def on_epoch_end(self, m: EpochMetrics) -> None:
        _say(f"{self.label}: epoch {m.epoch} train_loss {m.train_loss:.3f} "
             f"val_acc {m.val_acc:.4f} ({m.epoch_time:.1f} s, {m.images_per_s:.0f} img/s)")


class _PruneCallback(Callback):
    """Search studies: report the per-epoch metric to Optuna and stop when it says prune."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_epoch_end(self, m: EpochMetrics) -> bool:
        value = getattr(m, self.metric)
        if not math.isfinite(value):
            return False
        self.trial.report(value, m.epoch)
        self.pruned = self.trial.should_prune()
        return self.pruned


class _ThreadsCallback(Callback):
    """Applies the worker's thread count when training starts (torch is loaded by then) and
    after each epoch (CPU workers may have come or gone)."""

    def __init__(self, apply: Callable[[], None]):
        self.apply = apply

    def on_train_start(self, info: RunInfo) -> None:
        self.apply()

    def on_epoch_end(self, m: EpochMetrics) -> None:
        self.apply()


def _say(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} [worker {socket.gethostname()}:{os.getpid()}] {message}", flush=True)


class _SayHandler(logging.Handler):
    """The training layer's warnings, as lines of the worker's log."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _say(f"warning: {record.getMessage()}")
        except Exception:  # a log line must never cost the trial
            self.handleError(record)


_TRAINING_LOG = logging.getLogger("wno.training")
_SAY_HANDLER = _SayHandler(logging.WARNING)


@contextlib.contextmanager
def _training_warnings_in_log():
    added = _SAY_HANDLER not in _TRAINING_LOG.handlers  # several workers in one process: once
    if added:
        _TRAINING_LOG.addHandler(_SAY_HANDLER)
    try:
        yield
    finally:
        if added:
            _TRAINING_LOG.removeHandler(_SAY_HANDLER)


# --- the worker ----------------------------------------------------------------------------------------
class Worker:
    """Pull and train trials until told to stop, idle for too long, or `max_trials` are done."""

    def __init__(self, queue: StudyQueue, options: WorkerOptions, *,
                 callbacks_factory: CallbacksFactory | None = None,
                 train_fn: Callable[..., TrainResult] | None = None):
        self.queue, self.options = queue, options
        self.callbacks_factory = callbacks_factory
        self.train_fn = train_fn
        self.host = socket.gethostname()
        self.stop = threading.Event()
        self.summary = WorkerSummary()
        self._last_sweep = 0.0
        self._share: CpuShare | None = None
        self._threads: int | None = None  # torch threads this worker set last
        self._said: int | None = None  # ... and last told its log

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> WorkerSummary:
        opts = self.options
        if opts.studies:
            for name in opts.studies:  # an unknown study name is an error, not an idle worker
                self.queue.study_id(name)
        where = ", ".join(opts.studies) if opts.studies else "any study"
        restore = self._install_signal_handlers()
        idle_since = time.monotonic()
        try:
            with self._cpu_share(), _training_warnings_in_log():
                _say(f"pulling from {where} in {self.queue.shown_url} on {opts.device_label}"
                     + self._threads_text())
                self._loop(idle_since)
        finally:
            restore()
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.summary.outcomes.items()))
        _say(f"exiting ({counts or 'no trials'})")
        return self.summary

    def _loop(self, idle_since: float) -> None:
        opts = self.options
        while not self.stop.is_set():
            if opts.max_trials is not None and self.summary.trials >= opts.max_trials:
                _say(f"done: {opts.max_trials} trial(s)")
                break
            claim = self._next_claim()
            if claim is None:
                idle = time.monotonic() - idle_since
                if opts.idle_timeout is not None and idle >= opts.idle_timeout:
                    _say("no waiting trials" + (f" for {idle:.0f} s" if idle >= 1 else "")
                         + "; exiting")
                    break
                wait = opts.poll_interval
                if opts.idle_timeout is not None:
                    wait = min(wait, max(0.1, opts.idle_timeout - idle))
                self.stop.wait(wait)
                continue
            if self.stop.is_set():  # a signal arrived while popping: give it straight back
                self.queue.hand_back(claim.trial_id)
                break
            outcome = self.run_trial(claim)
            self.summary.outcomes[outcome] += 1
            idle_since = time.monotonic()

    # --- threads -------------------------------------------------------------------------------
    def _cpu_share(self):
        """Register among this machine's CPU workers for the run (a CPU worker without
        `threads`); a no-op context otherwise."""
        opts = self.options
        if opts.threads is not None or not str(opts.device).startswith("cpu"):
            return contextlib.nullcontext()
        folder = opts.cpu_registry or registry_folder(defaults.home())
        self._share = CpuShare(folder)
        return self._share

    def _wanted_threads(self) -> int | None:
        if self.options.threads is not None:
            return self.options.threads
        return self._share.threads() if self._share is not None else None

    def _threads_text(self) -> str:
        n = self._said = self._wanted_threads()
        if n is None:
            return ""
        if self._share is None:
            return f", {n} torch thread(s) (--threads)"
        return f", {n} torch thread(s){self._share_text()}"

    def _share_text(self) -> str:
        if self._share is None:
            return ""
        return (f": {len(self._share.workers())} CPU worker(s) share {self._share.cores} core(s) "
                "here")

    def _apply_threads(self) -> None:
        """Set torch's thread count to this worker's (changed) share; called by training."""
        n = self._wanted_threads()
        if n is None or n == self._threads:
            return
        import torch

        torch.set_num_threads(n)
        self._threads = n
        if n != self._said:
            _say(f"now {n} torch thread(s){self._share_text()}")
            self._said = n

    def _next_claim(self) -> Claim | None:
        try:
            self._sweep(force=False)
            return self.queue.pop(self.options.studies or None, host=self.host,
                                  device=self.options.device_label,
                                  heartbeat_interval=self.options.heartbeat_interval)
        except Exception as e:  # storage briefly unreachable: wait and try again
            if isinstance(e, UserError):
                raise
            _say(f"cannot pop from {self.queue.shown_url}: {one_line(e, 300)}; retrying")
            return None

    def _sweep(self, force: bool = True) -> None:
        """Fail and re-enqueue stale trials (rate-limited to once per heartbeat interval)."""
        now = time.monotonic()
        if not force and now - self._last_sweep < self.options.heartbeat_interval:
            return
        self._last_sweep = now
        try:
            for failed, retry in self.queue.sweep_stale(self.options.studies or None):
                _say(f"trial #{failed} lost its worker; "
                     + (f"re-enqueued as #{retry}" if retry is not None else "not retried again"))
        except Exception as e:
            _say(f"stale-trial sweep failed: {one_line(e, 300)}")

    def _install_signal_handlers(self) -> Callable[[], None]:
        """First SIGTERM/SIGINT: finish gracefully (hand the trial back); a second one is the
        default behaviour again (the trial is then retried from its checkpoint)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum, frame):
            _say(f"{signal.Signals(signum).name}: stopping after handing the current trial back")
            self.stop.set()
            for s, h in previous.items():
                signal.signal(s, h)

        for s in previous:
            signal.signal(s, handler)

        def restore():
            for s, h in previous.items():
                signal.signal(s, h)

        return restore

    # --- one trial -----------------------------------------------------------------------------
    def run_trial(self, claim: Claim) -> str:
        """Train one claimed trial and record its fate; returns the outcome."""
        label = f"{claim.study_name}#{claim.number}"
        group = claim.user_attrs.get(schema.GROUP) or "search slot"
        retry = claim.user_attrs.get(schema.RETRY_OF)
        _say(f"trial {label} started ({group}, seed {claim.user_attrs.get(schema.SEED)}"
             + (f", retry of #{retry}" if retry is not None else "") + ")")
        extra: list[Callback] = []
        with _Heartbeat(self.queue, claim.trial_id, self.options.heartbeat_interval,
                        self._sweep) as beat:
            try:
                outcome, error = self._train(claim, label, beat, extra)
            except BaseException as e:  # noqa: BLE001 (interrupts: hand back, then re-raise)
                if not isinstance(e, Exception):
                    self.queue.hand_back(claim.trial_id)
                    _say(f"trial {label}: interrupted; handed back")
                    raise
                error = one_line(f"{type(e).__name__}: {e}", STORED_ERROR_LIMIT)
                _say(f"trial {label} failed: {error}\n" + _masked_traceback())
                try:
                    outcome = FAIL if self.queue.fail(claim.trial_id, error) else LOST
                except Exception as storage_error:  # the trial goes stale and is retried
                    _say(f"trial {label}: cannot record the failure "
                         f"({one_line(storage_error, 300)}); it will be retried")
                    outcome = LOST
        for cb in extra:
            hook = getattr(cb, "on_trial_end", None)
            if hook is not None:
                try:
                    hook(outcome, error)
                except Exception as e:
                    _say(f"trial {label}: on_trial_end of {type(cb).__name__} failed: {e}")
        return outcome

    def _train(self, claim: Claim, label: str, beat: _Heartbeat, extra: list[Callback]
               ) -> tuple[str, str | None]:
        from wno.training import train

        spec = self.queue.spec(claim.study_name)
        study = self.queue.load_study(claim.study_name, spec, sampler_seed=claim.number)
        optuna_trial = None
        if spec.search is not None:
            import optuna

            # Optuna's storage cache learns of trials when it reads them; ours was popped by SQL.
            study.get_trials(deepcopy=False)
            optuna_trial = optuna.Trial(study, claim.trial_id)
        uid = self.queue.study_uid(claim.study_name)
        config = self._config(claim, spec, optuna_trial, uid)
        ctx = TrialContext(self.queue, claim, spec, config, self.host, self.options.device_label,
                           uid)
        pruner = None
        callbacks: list[Callback] = [_StopCallback(self.stop, beat.lost), _LogCallback(label),
                                     _ThreadsCallback(self._apply_threads)]
        if optuna_trial is not None and spec.epoch_metric():
            pruner = _PruneCallback(optuna_trial, spec.epoch_metric())
            callbacks.append(pruner)
        if self.callbacks_factory is not None:
            try:
                extra += list(self.callbacks_factory(ctx))
            except Exception as e:  # tracking is extra: its failure never costs the trial
                _say(f"trial {label}: callbacks (tracking) not set up: {one_line(e, 300)}")
        result = (self.train_fn or train)(config, callbacks + extra, resume=True, lineage=uid)

        if beat.lost.is_set() or self.queue.state(claim.trial_id) != "RUNNING":
            _say(f"trial {label}: taken away while running (cancelled, or failed as stale); "
                 f"result discarded")
            return LOST, None
        metrics = _clean(result.metrics())
        if result.stopped and pruner is not None and pruner.pruned:
            self.queue.finish(study, claim, value=None, metrics=metrics, pruned=True)
            _say(f"trial {label} pruned after epoch {result.epochs_completed}")
            return PRUNED, None
        if result.stopped:
            back = self.queue.hand_back(claim.trial_id)
            _say(f"trial {label}: stopped ({result.stop_reason}); "
                 + ("handed back to the queue" if back else "it was no longer ours"))
            return (HANDED_BACK if back else LOST), None
        value = metrics.get(spec.objective.metric)
        if value is None or not math.isfinite(value):
            raise ValueError(f"the objective {spec.objective.metric} is {value} (needs a finite "
                             f"number; e.g. val_size > 0 for validation metrics)")
        ok = self.queue.finish(study, claim, value=float(value), metrics=metrics)
        _say(f"trial {label} " + (f"complete: {spec.objective.metric} = {value:.4f} "
                                  f"({result.wall_time:.0f} s)" if ok else
                                  "finished, but it was taken away meanwhile; result discarded"))
        return (COMPLETE, None) if ok else (LOST, None)

    def _config(self, claim: Claim, spec: StudySpec, optuna_trial, uid: str):
        """The trial's TrainConfig with this machine's fields; a search slot is sampled first."""
        attrs = claim.user_attrs
        if schema.CONFIG not in attrs:
            if optuna_trial is None:
                raise ValueError(f"trial #{claim.number} has no configuration ({schema.CONFIG})")
            attrs.update(_sample(optuna_trial, spec, attrs.get(schema.SEED, spec.seeds[0])))
            self.queue.set_user_attrs(claim.trial_id, {k: attrs[k] for k in (
                schema.CONFIG, schema.CONFIG_HASH, schema.FACTORS, schema.GROUP)})
        config = TrainConfig.from_dict(attrs[schema.CONFIG])
        enqueued = attrs.get(schema.CONFIG_HASH)
        # Never train a different configuration than the one enqueued (e.g. after a change of
        # TrainConfig's defaults between `study create` and now). A hash of the fields as stored
        # is the same configuration, enqueued by a version whose canonical() merged less.
        if enqueued not in (config.config_hash(), config.config_hash(canonical=False)):
            raise ValueError(f"the stored configuration hashes to {config.config_hash()}, not the "
                             f"enqueued {enqueued}: this wno version reads the trial differently; "
                             f"recreate the study")
        root = defaults.checkpoint_dir(self.options.checkpoint_dir)
        folder = checkpoint_folder(root, claim.study_name, uid, enqueued)
        legacy = legacy_checkpoint_folder(root, claim.study_name, enqueued)
        if (legacy / "last.pt").is_file() and not (folder / "last.pt").is_file():
            _say(f"warning: trial {claim.study_name}#{claim.number}: checkpoint in {legacy} "
                 f"ignored: written before checkpoints carried their study's identity, it may "
                 f"be another study's of the same name; training from scratch in {folder}")
        return config.replace(
            device=self.options.device, data_dir=defaults.data_dir(self.options.data_dir),
            save_dir=str(folder)).validate()


def _sample(trial, spec: StudySpec, seed: int) -> dict[str, Any]:
    """Sample a search slot's parameters; its canonical config and attrs."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    params = {}
    for name, dist in spec.search.distributions().items():
        if isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            params[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step,
                                               log=dist.log)
    config = TrainConfig.from_dict({**spec.config_base(), **params, "seed": seed}).canonical(
        spec.canonical_defaults())
    return {schema.CONFIG: config.to_dict(machine=False),
            schema.CONFIG_HASH: config.config_hash(canonical=False),
            schema.FACTORS: params,
            schema.GROUP: schema.group_label({k: _fmt(v) for k, v in params.items()})}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe metrics (NaN/inf become None)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in metrics.items()}


def _masked_traceback() -> str:
    from wno.base.utils import mask_secrets

    return mask_secrets(traceback.format_exc()).rstrip()

