"""`wno worker --gpu N`: pull trials from the study queue and train them, one GPU per worker."""

from __future__ import annotations

import typer

from wno.cli.common import UserError, user_errors


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        gpu: str = typer.Option(None, "--gpu", help="Device to pin this worker to (required): a "
                                "GPU index (0, 1, ...; within CUDA_VISIBLE_DEVICES when set) or "
                                "cpu."),
        study: list[str] = typer.Option(None, "--study", help="Only this study (repeatable; "
                                        "default: any study with waiting trials)."),
        max_trials: int = typer.Option(None, "--max-trials", min=1,
                                       help="Exit after this many trials."),
        idle_timeout: float = typer.Option(None, "--idle-timeout", min=0,
                                           help="Exit after this many seconds without a waiting "
                                                "trial (default: wait forever)."),
        exit_when_empty: bool = typer.Option(False, "--exit-when-empty",
                                             help="Exit as soon as no trial is waiting."),
        storage: str = typer.Option(None, "--storage", help="Optuna storage URL (default: "
                                    "$WNO_STORAGE, else sqlite:///wno-runs/optuna.db)."),
        data_dir: str = typer.Option(None, "--data-dir", help="Data sets folder (default: "
                                     "$WNO_DATA_DIR, else ./data)."),
        checkpoint_dir: str = typer.Option(None, "--checkpoint-dir", help="Checkpoint root "
                                           "(default: $WNO_CHECKPOINT_DIR, else "
                                           "wno-runs/checkpoints)."),
        heartbeat: float = typer.Option(15.0, "--heartbeat", min=0.5, help="Seconds between "
                                        "heartbeats; a trial silent for 4 of them is retried."),
        tracking: bool = typer.Option(True, "--tracking/--no-tracking",
                                      help="Log each trial to MLflow (when tracking is set up)."),
        threads: int = typer.Option(None, "--threads", min=1, help="torch threads for training. "
                                    "Default with --gpu cpu: this machine's cores divided among "
                                    "the CPU workers running here (each holds a lock file in "
                                    "$WNO_HOME/cpu-workers/<host>/ while it runs; shares are "
                                    "recounted before each trial and after each epoch; at most "
                                    "$OMP_NUM_THREADS when set). Workers with another WNO_HOME "
                                    "are not counted: give them the same one, or --threads. "
                                    "Default with a GPU: torch's own."),
    ) -> None:
        """Pull trials from the study queue and train them (SIGTERM hands the running one back)."""
        with user_errors():
            if gpu is None:  # one device per worker, named: never a silent guess
                raise UserError("wno worker needs --gpu: a GPU index (--gpu 0, --gpu 1, ...) to "
                                "pin this worker to, or --gpu cpu on a machine without one")
            if exit_when_empty and idle_timeout is not None:
                raise UserError("give --idle-timeout or --exit-when-empty, not both")
            from wno.platform.queue import StudyQueue
            from wno.platform.tracking import trial_callbacks
            from wno.platform.worker import Worker, WorkerOptions, pin_device

            device, label = pin_device(gpu)  # before anything initialises CUDA
            queue = StudyQueue(storage)
            options = WorkerOptions(
                device=device, device_label=label, studies=list(study or ()),
                max_trials=max_trials, idle_timeout=0.0 if exit_when_empty else idle_timeout,
                data_dir=data_dir, checkpoint_dir=checkpoint_dir, heartbeat_interval=heartbeat,
                poll_interval=min(5.0, heartbeat), threads=threads)
            # Each trial gets an MLflow run through this factory (wno.platform.tracking).
            factory = trial_callbacks if tracking else None
            Worker(queue, options, callbacks_factory=factory).run()
