"""`train(config, callbacks) -> TrainResult`: the one call the platform makes per trial.

Accuracies are fractions in [0, 1]; times in seconds; epochs count from 1.

What a run does, in order: validate the config; read `save_dir/last.pt` when resuming (a
checkpoint of another configuration is refused); load the data onto the device; build the model
(seeded); set the checkpoint aside when it cannot be resumed (see below); AdamW (no decay on norms, biases, embeddings and positional encodings, see
`wno.training.train_utils.no_weight_decay`) with per-step warmup + cosine; then per epoch: train, validate,
write `best.pt` (when the validation accuracy improved) and `last.pt` atomically, update
`metrics.json`, call the callbacks. At the end the final model is evaluated on the test set
(reported, never selected on; skipped when a callback stopped the run).

Which checkpoints resume: `save_dir/last.pt` of the same configuration (another configuration
raises `CheckpointMismatch`) and, when the caller names a `lineage` (the worker passes the study's
identity in its storage), of that lineage only. A checkpoint of another lineage, or one whose
weights or optimiser groups do not fit what this code builds (the model code changed), is never
resumed: its files move to `save_dir/ignored-<time>/`, a warning names the folder (logger
`wno.training`, also in `RunInfo.warnings`) and the run starts from scratch, exactly as a fresh
one would. Each checkpoint records its lineage and the code that wrote it
(`wno.base.code_version`); resuming with other code says so in a warning.

Determinism: the model is built after `torch.manual_seed(config.seed)`; data order and
augmentation depend only on (seed, epoch); `last.pt` holds every RNG state, so resuming after
epoch k gives bitwise the same weights as an uninterrupted run on a CPU.

Example:
    >>> from wno.training.config import TrainConfig
    >>> cfg = TrainConfig(model="vit", model_size="micro", dataset="synthetic", epochs=2,
    ...                   val_size=500, save_dir="/tmp/run1")
    >>> result = train(cfg)  # doctest: +SKIP
    >>> result.metrics()["best_val_acc"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wno.base.code_version import code_version, describe_code, same_code
from wno.base.utils import keep_freed_memory
from wno.training.config import TrainConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger("wno.training")

CHECKPOINT_FORMAT = 1
LAST, BEST, METRICS = "last.pt", "best.pt", "metrics.json"
IGNORED = "ignored-"  # prefix of the folder a checkpoint that cannot be resumed is moved to


@dataclass
class EpochMetrics:
    """What every callback sees at the end of each epoch (also the MLflow metric names)."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float  # learning rate of the epoch's last step
    epoch_time: float  # wall time of the epoch: training and validation
    images_per_s: float  # training images per second of training time

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class RunInfo:
    """Handed to `on_train_start`: what is being trained and where it starts from."""

    config: TrainConfig
    params: int
    flops: int  # forward FLOPs per image, attention included
    tokens: int
    device: str
    start_epoch: int  # 0 for a fresh run, k when resuming after k finished epochs
    checkpoint_dir: Path
    history: list[EpochMetrics] = field(default_factory=list)  # epochs already done (resume)
    train_images: int = 0  # images in the training split (after the validation hold-out)
    val_images: int = 0
    test_images: int = 0
    steps_per_epoch: int = 0
    data_source: str = ""
    warnings: list[str] = field(default_factory=list)  # what train() warned about (checkpoints)


@dataclass
class StepProgress:
    """Handed to `Callback.on_step` after every training step (progress bars)."""

    epoch: int
    step: int
    steps: int  # steps in this epoch
    images: int  # images trained on so far in this epoch
    loss: float | None  # running mean, every few steps only (reading it waits on the device)
    acc: float | None


@dataclass
class TrainResult:
    """The outcome of `train`. `stopped` is set when a callback ended training early."""

    config: TrainConfig
    final_val_acc: float
    best_val_acc: float
    best_epoch: int
    test_acc: float | None
    test_loss: float | None
    params: int
    flops: int
    tokens: int
    wall_time: float
    throughput: float  # training images/s over the run
    epochs_completed: int
    stopped: bool = False
    stop_reason: str | None = None
    history: list[EpochMetrics] = field(default_factory=list)
    executed_flops: int = 0  # forward FLOPs per image the device's attention path computes

    def metrics(self) -> dict[str, float]:
        """Flat final metrics (the names the platform records and reports)."""
        out = {
            "final_val_acc": self.final_val_acc,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "params": self.params,
            "flops": self.flops,
            "executed_flops": self.executed_flops,
            "tokens": self.tokens,
            "wall_time": self.wall_time,
            "throughput": self.throughput,
            "epochs_completed": self.epochs_completed,
        }
        if self.test_acc is not None:
            out["test_acc"] = self.test_acc
            out["test_loss"] = self.test_loss
        return out


class Callback:
    """Hooks into `train`. Override what you need; every method is optional."""

    def on_train_start(self, info: RunInfo) -> None:
        """Called once, after the model is built and any checkpoint is loaded."""

    def on_epoch_end(self, metrics: EpochMetrics) -> bool | None:
        """Called after each epoch's validation and checkpoint. Return True to stop training."""

    def should_stop_now(self) -> bool:
        """Polled every step; True abandons the current epoch (resume restarts it)."""
        return False

    def on_step(self, progress: StepProgress) -> None:
        """Called after every training step (keep it cheap: it runs in the training loop)."""

    def on_train_end(self, result: TrainResult) -> None:
        """Called once with the result (also when stopped early)."""


class CheckpointMismatch(ValueError):
    """`save_dir` holds a checkpoint of a different configuration."""


# ------------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """'auto' -> the first CUDA device when there is one, else the CPU; others are checked."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} asked for, but this machine has no CUDA device; "
                             "use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={name!r}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r} asked for, but MPS is not available here")
    return device


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast for precision=bf16, or precision=auto on CUDA; None means float32."""
    import torch

    if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _build_model(config: TrainConfig):
    from wno.model import build_model

    return build_model(config)


def _model_cost(model, config: TrainConfig):
    from wno.training.measure import model_cost

    return model_cost(model, config)


def read_resume_checkpoint(config: TrainConfig, lineage: str | None = None
                           ) -> tuple[dict[str, Any] | None, str | None]:
    """`save_dir/last.pt` to resume, or None; and why an existing one is not resumed, or None.

    A checkpoint of another configuration raises `CheckpointMismatch` (whatever the lineage: the
    folder was asked for). With a `lineage`, a checkpoint of another lineage (or one that
    recorded none) is not resumed; without one, any lineage is.
    """
    from wno.training.train_utils import load_checkpoint

    path = Path(config.save_dir) / LAST
    if not path.is_file():
        return None, None
    try:
        ckpt = load_checkpoint(path)
    except Exception as e:
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); move it "
                         "away to start afresh") from None
    check_same_config(ckpt, config, path)  # first: another configuration is refused, never set aside
    if lineage is not None and ckpt.get("lineage") != lineage:
        theirs = ckpt.get("lineage")
        return None, ("it belongs to another study (lineage "
                      + (f"{theirs}" if theirs else "not recorded: written before checkpoints "
                         "carried their study's identity") + f", this trial's is {lineage})")
    return ckpt, None


def check_same_config(ckpt: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse a checkpoint of another configuration: its hash differs from `config`'s and so do
    their canonical fields (equal fields under another hash: an older wno's checkpoint, accepted)."""
    if ckpt.get("config_hash") == config.config_hash():
        return
    saved = ckpt.get("config", {})
    try:
        old = TrainConfig.from_dict(saved).canonical().to_dict(machine=False)
    except ValueError:
        old = {}
    new = config.canonical().to_dict(machine=False)
    diff = [f"{k}: {old.get(k)!r} in the checkpoint, {v!r} asked" for k, v in new.items()
            if old.get(k) != v]
    if old and not diff:  # the same model, hashed by a version whose canonical() merged less
        return
    raise CheckpointMismatch(
        f"{path} belongs to a different configuration (hash {ckpt.get('config_hash')} vs "
        f"{config.config_hash()}): " + ("; ".join(diff) or "unknown differences")
        + ". Use another save_dir (--save-dir) or move the old checkpoint away.")


def checkpoint_misfit(ckpt: dict[str, Any], model, optimizer) -> str | None:
    """Why `ckpt` cannot be loaded into `model` and `optimizer`, or None when it fits.

    Checked before anything is loaded: `load_state_dict` copies the tensors that fit before it
    raises about the others, which would leave a half-loaded model to train "from scratch".
    """
    saved, mine = ckpt.get("model", {}), model.state_dict()
    problems = []
    missing = [k for k in mine if k not in saved]
    unexpected = [k for k in saved if k not in mine]
    if missing:
        problems.append(f"missing keys {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_some(unexpected)}")
    shape = lambda x: tuple(getattr(x, "shape", ()))  # noqa: E731 (extra states have none)
    shapes = [f"{k} {shape(saved[k])} in the checkpoint, {shape(v)} here"
              for k, v in mine.items() if k in saved and shape(saved[k]) != shape(v)]
    if shapes:
        problems.append(f"shapes differ: {_some(shapes)}")
    if not problems:  # the same weights, grouped differently for weight decay
        theirs = [len(g["params"]) for g in ckpt.get("optimizer", {}).get("param_groups", [])]
        ours = [len(g["params"]) for g in optimizer.param_groups]
        if theirs != ours:
            problems.append(f"optimiser groups of {theirs} parameters in the checkpoint, "
                            f"{ours} here")
    return "; ".join(problems) or None


def _some(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def set_aside(save_dir: Path) -> Path:
    """Move a run's files (last.pt, best.pt, metrics.json) into a new `ignored-<time>` folder
    inside `save_dir`, so that a fresh run neither resumes nor overwrites them."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = save_dir / f"{IGNORED}{stamp}"
    n = 1
    while aside.exists():
        n += 1
        aside = save_dir / f"{IGNORED}{stamp}-{n}"
    aside.mkdir(parents=True)
    for name in (LAST, BEST, METRICS):
        if (save_dir / name).exists():
            (save_dir / name).replace(aside / name)
    return aside


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_metrics_json(save_dir: Path, config: TrainConfig, history: list[EpochMetrics],
                       result: TrainResult | None, status: str) -> None:
    from wno.base.utils import atomic_write_text

    doc = {"status": status, "config_hash": config.config_hash(), "config": config.to_dict(),
           "history": [m.to_dict() for m in history]}
    if result is not None:
        doc["final"] = result.metrics()
        doc["stopped"] = result.stopped
        doc["stop_reason"] = result.stop_reason
    atomic_write_text(save_dir / METRICS, json.dumps(_json_safe(doc), indent=2) + "\n")


def _better(acc: float, best: float) -> bool:
    return math.isfinite(acc) and (not math.isfinite(best) or acc > best)


def _throughput(history: list[EpochMetrics], images_per_epoch: int) -> float:
    """Training images/s over all epochs: total images over total training time."""
    times = [images_per_epoch / m.images_per_s for m in history if m.images_per_s > 0]
    return images_per_epoch * len(times) / sum(times) if times else 0.0


# ------------------------------------------------------------------------------------------------
def train(config: TrainConfig, callbacks: tuple[Callback, ...] | list[Callback] = (),
          *, resume: bool = True, lineage: str | None = None) -> TrainResult:
    """Train `config` to completion (or until a callback stops it) and evaluate on the test set.

    With `resume=True` a `save_dir/last.pt` of the same configuration is continued (a finished
    one is only evaluated); one of another configuration raises `CheckpointMismatch`. With
    `resume=False` an existing checkpoint of the same configuration is overwritten, one of
    another configuration is still refused (nothing is lost by accident).

    `lineage` names whose checkpoints these are (the worker passes the study's identity): a
    checkpoint of another lineage is never resumed, nor one whose weights do not fit the model;
    either is set aside with a warning and the run starts from scratch (see the module's notes).
    """
    import torch

    from wno.training.data import load_data
    from wno.training.train_utils import (CosineAnnealingWarmupRestarts, param_groups,
                                          remove_stale_temps, rng_state, save_checkpoint,
                                          set_rng_state, train_epoch, validate)

    started = time.perf_counter()
    config.validate()
    callbacks = list(callbacks)
    device = resolve_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()
    save_dir = Path(config.save_dir)
    ckpt, ignore = read_resume_checkpoint(config, lineage)
    if not resume:
        ckpt, ignore = None, None

    data = load_data(config, device)
    if len(data.train) == 0:
        raise ValueError("the training split is empty")
    torch.manual_seed(config.seed)
    model = _build_model(config).to(device)
    cost = _model_cost(model, config)
    step_model = torch.compile(model) if config.compile else model

    train_loader = data.loader("train", batch_size=config.batch_size, augment=config.augment,
                               seed=config.seed, mixup_alpha=config.mixup_alpha,
                               cutmix_alpha=config.cutmix_alpha)
    # evaluation keeps the training batch size: what fits with gradients fits without them
    val_loader = data.loader("val", batch_size=config.batch_size)
    test_loader = data.loader("test", batch_size=config.batch_size)
    steps = len(train_loader)
    total_steps = steps * config.epochs
    warmup = min(round(config.warmup_epochs * steps), total_steps - 1)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = CosineAnnealingWarmupRestarts(optimizer, total_steps, max_lr=config.lr,
                                              min_lr=config.min_lr, warmup_steps=warmup)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    eval_criterion = torch.nn.CrossEntropyLoss()  # val/test loss: plain cross-entropy
    amp = autocast_dtype(config, device)

    history: list[EpochMetrics] = []
    best_acc, best_epoch, start_epoch, wall_before = float("nan"), 0, 0, 0.0
    warned: list[str] = []
    if ckpt is not None:
        misfit = checkpoint_misfit(ckpt, model, optimizer)
        if misfit:
            ckpt, ignore = None, ("its weights do not fit the model this code builds (the model "
                                  f"code changed?): {misfit}")
    if ignore:
        aside = set_aside(save_dir)
        warned.append(f"checkpoint in {save_dir} ignored: {ignore}; training from scratch "
                        f"(its files are kept in {aside})")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        history = [EpochMetrics(**m) for m in ckpt["history"]]
        best_acc, best_epoch = ckpt["best_val_acc"], ckpt["best_epoch"]
        start_epoch = ckpt["epoch"]
        wall_before = ckpt.get("wall_time", 0.0)
        if not same_code(ckpt.get("code"), code_version()):
            warned.append(f"resuming {save_dir} after epoch {start_epoch}: it was written by "
                            f"{describe_code(ckpt.get('code'))}, this is "
                            f"{describe_code(code_version())}")
    for message in warned:
        log.warning(message)
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the checkpoint folder {save_dir}: {e}") from None
    remove_stale_temps(save_dir)  # left by a run killed while writing a checkpoint

    info = RunInfo(config, cost.params, cost.flops, cost.tokens, str(device), start_epoch,
                   save_dir, list(history), len(data.train), len(data.val), len(data.test),
                   steps, data.source, warned)
    for cb in callbacks:
        cb.on_train_start(info)

    def should_stop() -> bool:
        return any(cb.should_stop_now() for cb in callbacks)

    stopped, reason = False, None
    # Only callbacks that watch steps get them: each report costs the loop a device sync.
    step_callbacks = [cb for cb in callbacks if type(cb).on_step is not Callback.on_step]
    for epoch in range(start_epoch + 1, config.epochs + 1):
        epoch_start = time.perf_counter()

        def progress(step, images, loss, acc, _epoch=epoch):
            p = StepProgress(_epoch, step, steps, images, loss, acc)
            for cb in step_callbacks:
                cb.on_step(p)

        stats = train_epoch(step_model, train_loader, criterion, optimizer, device, epoch,
                            scheduler=scheduler, grad_clip=config.grad_clip, autocast_dtype=amp,
                            should_stop=should_stop,
                            progress=progress if step_callbacks else None)
        if stats.stopped:
            stopped, reason = True, f"stopped during epoch {epoch} (resume restarts it)"
            break
        val = validate(step_model, val_loader, eval_criterion, device, autocast_dtype=amp)
        lr = scheduler.lr_at(max(scheduler.last_epoch - 1, 0))  # of the epoch's last step
        metrics = EpochMetrics(epoch, stats.loss, stats.acc, val.loss, val.acc, lr,
                               time.perf_counter() - epoch_start, stats.images_per_s)
        history.append(metrics)
        if _better(val.acc, best_acc) or not math.isfinite(val.acc):  # no val split: latest
            best_acc, best_epoch = val.acc, epoch
            save_checkpoint(save_dir / BEST, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch, "val_acc": val.acc,
                "config": config.to_dict(), "config_hash": config.config_hash(),
                "lineage": lineage, "code": code_version(), "model": model.state_dict()})
        save_checkpoint(save_dir / LAST, {
            "format": CHECKPOINT_FORMAT, "epoch": epoch,
            "config": config.to_dict(), "config_hash": config.config_hash(),
            "lineage": lineage, "code": code_version(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": None,  # bf16 autocast needs no loss scaling; fp16 is not offered
            "rng": rng_state(), "history": [m.to_dict() for m in history],
            "best_val_acc": best_acc, "best_epoch": best_epoch,
            "wall_time": wall_before + time.perf_counter() - started})
        write_metrics_json(save_dir, config, history, None, "running")
        if any([bool(cb.on_epoch_end(metrics)) for cb in callbacks]):  # every callback sees it
            stopped, reason = epoch < config.epochs, f"stopped by a callback after epoch {epoch}"
            if stopped:
                break

    test = None
    if not stopped:
        test = validate(step_model, test_loader, eval_criterion, device, autocast_dtype=amp)
    result = TrainResult(
        config=config,
        final_val_acc=history[-1].val_acc if history else float("nan"),
        best_val_acc=best_acc, best_epoch=best_epoch,
        test_acc=test.acc if test else None, test_loss=test.loss if test else None,
        params=cost.params, flops=cost.flops, tokens=cost.tokens,
        wall_time=wall_before + time.perf_counter() - started,
        throughput=_throughput(history, train_loader.num_images),
        epochs_completed=len(history), stopped=stopped, stop_reason=reason, history=history,
        executed_flops=cost.executed_flops)
    write_metrics_json(save_dir, config, history, result, "stopped" if stopped else "finished")
    for cb in callbacks:
        cb.on_train_end(result)
    return result


__all__ = ["Callback", "CheckpointMismatch", "EpochMetrics", "RunInfo", "StepProgress",
           "TrainResult", "train"]
