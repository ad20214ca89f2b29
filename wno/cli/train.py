"""`wno train`: train one configuration, with a progress bar, checkpoints and a summary.

Precedence: flags given on the command line > `--set key=value` > the `--config` YAML >
`TrainConfig`'s defaults (the data directory falls back to $WNO_DATA_DIR, then ./data).
Without `--save-dir` checkpoints go to `checkpoints/<model>-<size>-<config hash>/`, so running the
same command again resumes, and a different configuration never lands on another's checkpoint.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import typer

from wno.base.sizes import MODEL_SIZES
from wno.base.variants import MODES
from wno.cli.common import Unavailable, UserError, given, user_errors
from wno.training import Callback, TrainConfig
from wno.training.config import REGULARISATION

# Flags that only a wavelet model reads: asking for them with --model vit is an error, not a no-op.
WAVELET_ONLY = ("wavelet", "n_levels", "use_kernel", "mode")
D = TrainConfig()  # the defaults every flag shows: the original description's argument table
BEYOND = "On by default, beyond the original description's recipe."


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    ctx: typer.Context,
    config_file: Path = typer.Option(None, "--config", help="YAML file of TrainConfig fields; "
                                     "flags given explicitly override it."),
    model: str = typer.Option(D.model, help="wavelet (W-MSA Wavelet Transformer) or vit (its "
                              "ViT twin: the same blocks over 4x4 patches)."),
    model_size: str = typer.Option(D.model_size, help=f"One of {', '.join(MODEL_SIZES)}."),
    epochs: int = typer.Option(D.epochs, help="Training epochs."),
    batch_size: int = typer.Option(D.batch_size, help="Batch size."),
    lr: float = typer.Option(D.lr, help="Peak learning rate (AdamW)."),
    weight_decay: float = typer.Option(D.weight_decay, help="AdamW weight decay."),
    warmup_epochs: float = typer.Option(D.warmup_epochs, help="Linear warmup, in epochs (counted "
                                        "in steps), then cosine decay to min_lr."),
    wavelet: str = typer.Option(D.wavelet, help="Wavelet of the tokenizer (haar, db2, db4, sym4, "
                                "coif2, ...)."),
    n_levels: int = typer.Option(D.n_levels, help="Wavelet decomposition levels."),
    mode: str = typer.Option(D.mode, help=f"Wavelet boundary handling: {', '.join(MODES)}. "
                             "boundary and periodization halve exactly; periodization reaches "
                             "every depth (coif2 at 3 levels, db4 at 4)."),
    use_kernel: bool = typer.Option(D.use_kernel, "--use-kernel/--no-use-kernel",
                                    help="W-MSA's scale/orientation/space kernel."),
    label_smoothing: float = typer.Option(D.label_smoothing, help=f"Label smoothing. {BEYOND}"),
    grad_clip: float = typer.Option(D.grad_clip, help=f"Clip the global gradient norm (0: off). "
                                    f"{BEYOND}"),
    drop_path: float = typer.Option(D.drop_path, help=f"Stochastic depth of the last block, "
                                    f"ramped from 0 (W-MSA and ViT alike). {BEYOND}"),
    save_dir: str = typer.Option(None, help="Checkpoint folder.",
                                 show_default="checkpoints/<model>-<size>-<config hash>"),
    data_dir: str = typer.Option(None, help="Data folder.", show_default="$WNO_DATA_DIR or ./data"),
    seed: int = typer.Option(D.seed, help="Random seed."),
    device: str = typer.Option(D.device, help="auto, cpu, cuda or cuda:N."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue from save_dir/last.pt when it holds this configuration; "
                                "--no-resume starts afresh over it. A checkpoint of another "
                                "configuration is never overwritten."),
    dataset: str = typer.Option(D.dataset, help="cifar10 or synthetic."),
    train_size: int = typer.Option(None, help="Train on a stratified subset of this many images.",
                                   show_default="all"),
    val_size: int = typer.Option(D.val_size, help="Validation images held out of the training set."),
    test_size: int = typer.Option(None, help="Evaluate on a stratified subset of the test set.",
                                  show_default="all"),
    augment: str = typer.Option(D.augment, help="none, standard (crop + flip) or randaugment."),
    precision: str = typer.Option(D.precision, help="auto (bf16 on CUDA), fp32 or bf16."),
    compile: bool = typer.Option(D.compile, "--compile/--no-compile", help="torch.compile the model."),
    set_: list[str] = typer.Option(None, "--set", help="Any other TrainConfig field, as KEY=VALUE "
                                   "(repeatable), e.g. --set mixup_alpha=0.2."),
    track: bool = typer.Option(True, "--track/--no-track", help="Log the run to MLflow: params, "
                               "per-epoch metrics, artifacts (the same command again continues "
                               "the same MLflow run)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI.",
                                     show_default="$MLFLOW_TRACKING_URI, else "
                                     "sqlite:///wno-runs/mlflow.db"),
) -> None:
    """Train one configuration on CIFAR-10 (or the synthetic set); resumable, with checkpoints.

    The defaults are the original description's (small, db4, 3 levels, 100 epochs, batch 128,
    lr 1e-3, weight decay 0.05, warmup 5). Label smoothing, gradient clipping and stochastic depth
    are on by default beyond it; the run's summary lists them.
    """
    values = dict(
        model=model, model_size=model_size, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, wavelet=wavelet, n_levels=n_levels,
        mode=mode, use_kernel=use_kernel, label_smoothing=label_smoothing, grad_clip=grad_clip,
        drop_path=drop_path, save_dir=save_dir, data_dir=data_dir, seed=seed, device=device,
        dataset=dataset, train_size=train_size, val_size=val_size, test_size=test_size,
        augment=augment, precision=precision, compile=compile)
    # Only what the command line says overrides --set and --config; a flag's default does not.
    flags = {k: v for k, v in values.items() if given(ctx, k)}
    with user_errors():
        config = build_config(config_file, flags, set_ or [])
        tracker = make_tracker(config, tracking_uri, resume) if track else None
        try:
            result, interrupted = run(config, resume=resume,
                                      extra_callbacks=[tracker] if tracker else [])
        except BaseException as e:  # the run ends as it did; a finished one ended in train()
            if tracker is not None:
                aborted = isinstance(e, KeyboardInterrupt)  # a second Ctrl-C: do not linger
                tracker.close("KILLED" if aborted else "FAILED", timeout=10 if aborted else None)
            raise
    if interrupted:
        raise typer.Exit(130)


def build_config(config_file: Path | None, flags: dict[str, Any], sets: list[str]):
    """The TrainConfig the command line asks for, validated (raises ConfigError/UserError)."""
    from wno.platform import defaults

    base = TrainConfig.from_yaml(config_file).to_dict() if config_file else {}
    from_yaml = set(base)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r} must look like KEY=VALUE, e.g. --set mixup_alpha=0.2")
        base[key.strip().replace("-", "_")] = None if value.strip().lower() in ("none", "null") \
            else value.strip()
    base.update(flags)
    if "data_dir" not in base:
        base["data_dir"] = defaults.data_dir()
    config = TrainConfig.from_dict(base)
    if config.model == "vit":
        asked = [k for k in WAVELET_ONLY if k in flags]
        if asked:
            raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in asked)} only applies "
                            "to --model wavelet; the ViT baseline does not read it")
    config.validate()
    if "save_dir" not in flags and "save_dir" not in from_yaml:
        config = config.replace(save_dir=str(Path("checkpoints") / run_name(config)))
    return config


def make_tracker(config, tracking_uri: str | None, resume: bool):
    """The MLflow tracker of this run (`wno.platform.tracking`); it says where the run is."""
    from wno.platform import defaults, tracking
    from wno.base.utils import mask_url

    uri = defaults.tracking_uri(tracking_uri)

    def show(run_id: str) -> None:
        url = tracking.run_url(uri, tracker.experiment_id, run_id)
        typer.echo(f"mlflow: run {run_id} in " + (url or f"{mask_url(uri)} (browse: wno ui)"))

    tracker = tracking.train_tracker(config, tracking_uri=uri, resume=resume, on_run_id=show)
    return tracker


def run_name(config) -> str:
    return f"{config.model}-{config.model_size}-{config.config_hash()}"


def run(config, *, resume: bool = True, extra_callbacks: list[Callback] = ()):
    """Train with the console callbacks; returns (result, interrupted by a signal).

    The callbacks are a list so tracking (MLflow) is one more entry. Missing data becomes an
    `Unavailable` error (exit 3).
    """
    from rich.console import Console

    from wno.training.data import DataMissing
    from wno.training import train

    console = Console(highlight=False)
    with GracefulStop() as stopper:
        callbacks = [ConsoleProgress(console), stopper, *extra_callbacks]
        try:
            return train(config, callbacks, resume=resume), stopper.flag
        except DataMissing as e:
            raise Unavailable(str(e)) from None


# ------------------------------------------------------------------------------------------------
def regularisation(config) -> str:
    """The regularisation beyond the original description, as it is set in `config`."""
    return ", ".join(f"{name} {getattr(config, name)}" for name in REGULARISATION)


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or x != x:
        return "-"
    return f"{100 * x:.2f}%" if pct else f"{x:.4f}"


class ConsoleProgress(Callback):
    """A rich progress bar per epoch (loss, accuracy, images/s), a line per epoch, a summary."""

    def __init__(self, console):
        self.console = console
        self.progress = None
        self.task = None
        self.info = None

    def on_train_start(self, info) -> None:
        c = info.config
        self.info = info
        what = f"{c.model} {c.model_size}" + (f", {c.wavelet} x{c.n_levels}, kernel "
                                              f"{'on' if c.use_kernel else 'off'}"
                                              if c.model == "wavelet" else "")
        self.console.print(f"[bold]wno train[/] {what} | {info.params:,} params, "
                           f"{info.flops / 1e6:,.1f} MFLOPs/image, {info.tokens} tokens | "
                           f"{c.dataset}: {info.train_images} train / {info.val_images} val / "
                           f"{info.test_images} test | device {info.device}")
        self.console.print(f"data: {info.data_source}  checkpoints: {info.checkpoint_dir}  "
                           f"config hash: {c.config_hash()}")
        self.console.print(f"regularisation beyond the original description: {regularisation(c)}")
        if info.start_epoch:
            self.console.print(f"resuming after epoch {info.start_epoch}/{c.epochs}")

    def _start_epoch(self, epoch: int, steps: int) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[ips]} img/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, loss="-", acc="-", ips="-",
                                           epoch=f"{epoch}/{self.info.config.epochs}")
        self._t0 = time.perf_counter()

    def _stop_bar(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def on_step(self, p) -> None:
        if not self.console.is_terminal:  # logs and pipes get one line per epoch only
            return
        if self.progress is None:
            self._start_epoch(p.epoch, p.steps)
        fields = {}
        if p.loss is not None:
            elapsed = time.perf_counter() - self._t0
            fields = dict(loss=_fmt(p.loss), acc=_fmt(p.acc, pct=True),
                          ips=f"{p.images / max(elapsed, 1e-9):,.0f}")
        self.progress.update(self.task, completed=p.step, **fields)

    def on_epoch_end(self, m) -> None:
        self._stop_bar()
        self.console.print(
            f"epoch {m.epoch:>3}/{self.info.config.epochs}  train loss {_fmt(m.train_loss)} "
            f"acc {_fmt(m.train_acc, True)}  val loss {_fmt(m.val_loss)} acc {_fmt(m.val_acc, True)}"
            f"  lr {m.lr:.2e}  {m.images_per_s:,.0f} img/s  {m.epoch_time:.1f}s")

    def on_train_end(self, r) -> None:
        from rich.table import Table

        self._stop_bar()
        t = Table(title="summary", show_header=False, title_justify="left")
        rows = [("best val acc", f"{_fmt(r.best_val_acc, True)} (epoch {r.best_epoch})"),
                ("final val acc", _fmt(r.final_val_acc, True)),
                ("test acc", _fmt(r.test_acc, True) if r.test_acc is not None else "not evaluated"),
                ("epochs", f"{r.epochs_completed}/{r.config.epochs}"),
                ("regularisation", regularisation(r.config)),
                ("params", f"{r.params:,}"), ("FLOPs/image", f"{r.flops:,}"),
                ("throughput", f"{r.throughput:,.0f} img/s"), ("wall time", f"{r.wall_time:.1f}s"),
                ("checkpoints", str(self.info.checkpoint_dir)),
                ("metrics", str(Path(self.info.checkpoint_dir) / "metrics.json"))]
        for k, v in rows:
            t.add_row(k, v)
        self.console.print(t)
        if r.stopped:
            self.console.print(f"[yellow]{r.stop_reason}; run the same command to resume[/]")


class GracefulStop(Callback):
    """First Ctrl-C / SIGTERM: stop at the next step, keeping the last checkpoint; second: abort.

    Used as a context manager around `train` so the previous handlers always come back.
    """

    def __init__(self):
        self.flag = False
        self.previous = {}

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self) -> GracefulStop:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def should_stop_now(self) -> bool:
        return self.flag
