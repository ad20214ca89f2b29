"""MLflow tracking's cost: per-epoch overhead on the smoke study's training, run creation and
finish, and one batch per epoch against a call per metric.

- Overhead: the smoke study's configuration (studies/smoke.yaml: micro W-MSA, 2,000 CIFAR-10
  images, 2 epochs; the synthetic set of the same size when CIFAR-10 is not found) trained with
  and without an `MlflowTracker` on a local SQLite store (system metrics on, as a worker runs).
  Rounds alternate the two so a busy machine slows both alike; medians of the epoch times. Since
  that difference drowns in the noise of a shared machine, the tracker's own time is reported as
  well: what the training thread spends in `on_epoch_end`, and what the background sender spends
  per epoch (it runs beside training). Target: <= 1% of the epoch time.
- Run creation (experiment lookup, run, params, tags) and finish (final metrics, metrics.json,
  final weights, end of run; the wait for all of it), on the local store and on a real
  `mlflow server` on loopback (skipped when it does not start).
- One `log_batch` of the 7 per-epoch metrics against 7 `log_metric` calls.

    python -m benchmarks.bench_tracking
    python -m benchmarks.bench_tracking --rounds 5 --no-server
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import data_dir, print_rows, row

COMMAND = "python -m benchmarks.bench_tracking"
TARGET = 0.01
REPO = Path(__file__).resolve().parents[1]


_row = functools.partial(row, command=COMMAND)


def smoke_config(folder: Path):
    """The smoke study's base configuration (kernel on), on CIFAR-10 when it is found."""
    import yaml

    from wno.training.config import TrainConfig

    base = dict(yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text())["base"])
    cifar = data_dir()
    if cifar is None:
        base["dataset"] = "synthetic"
    return TrainConfig.from_dict({**base, "device": "cpu",
                                  "data_dir": str(cifar or folder / "data"),
                                  "save_dir": str(folder / "run")})


def _train(config, tracker, save_dir: Path):
    from wno.training import train

    cfg = config.replace(save_dir=str(save_dir))
    return train(cfg, [tracker] if tracker is not None else [], resume=False)


def overhead(rounds: int, folder: Path) -> list[dict]:
    from wno.platform import tracking

    config = smoke_config(folder)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracking.quiet_mlflow()
    tracking.client_for(uri).search_experiments()  # lay out the store outside the timings
    plain, tracked, hooks, sender, epochs = [], [], [], [], 0
    opens, drains, runs = [], [], []  # per tracked run; runs: untracked epoch-time per run
    _train(config.replace(epochs=1), None, folder / "warmup")  # decode, caches, first-call costs
    for i in range(rounds):
        for with_tracking in (i % 2 == 0, i % 2 == 1):  # alternate which goes first
            if with_tracking:
                tracker = tracking.train_tracker(config.replace(save_dir=str(folder / f"t{i}")),
                                                 tracking_uri=uri, experiment="bench",
                                                 resume=False)
                result = _train(config, tracker, folder / f"t{i}")
                tracked += [m.epoch_time for m in result.history]
                hooks.append(tracker.epoch_hook_seconds / len(result.history))
                opens.append(tracker.open_seconds)
                drains.append(tracker.drain_seconds)
                sender += [d for what, d in tracker.outbox.timings if what.startswith("epoch")]
                epochs += len(result.history)
            else:
                result = _train(config, None, folder / f"p{i}")
                plain += [m.epoch_time for m in result.history]
                runs.append(sum(m.epoch_time for m in result.history))
    base = statistics.median(plain)
    run_base = statistics.median(runs)
    data = f"{config.dataset} {config.train_size}+{config.val_size} images"
    return [
        _row("smoke epoch, tracked vs untracked", statistics.median(tracked), "s/epoch", base,
             f"median of {len(tracked)} epochs each, {data}; target ratio <= {1 + TARGET:.2f} "
             f"(noise on a shared machine is larger than the effect)"),
        _row("training-thread time in on_epoch_end", statistics.median(hooks), "s/epoch", base,
             f"queues one batch; target <= {TARGET:.0%} of the epoch"),
        _row("background sender per epoch (one log_batch)", statistics.median(sender), "s/epoch",
             base, f"local SQLite, runs beside training; {epochs} epochs"),
        _row("training-thread wait for the run to open", statistics.median(opens), "s/run",
             run_base, f"baseline: an untracked run's {config.epochs} epochs; median of "
             f"{len(opens)} runs"),
        _row("training-thread wait at the end for MLflow to hold everything",
             statistics.median(drains), "s/run", run_base,
             f"final metrics, checkpoint policy {tracking.checkpoint_policy()}, end of run; "
             f"baseline: an untracked run's {config.epochs} epochs"),
    ]


def lifecycle(uri: str, label: str, folder: Path, repeats: int = 3) -> list[dict]:
    """Seconds to open a run (before training) and to finish it (final metrics, artifacts,
    end), through a tracker, on a small real training's checkpoint."""
    from wno.training.config import TrainConfig
    from wno.platform import tracking
    from wno.training import train

    config = TrainConfig(dataset="synthetic", model_size="micro", token_layout="patch",
                         token_patch=4, train_size=64, val_size=32, test_size=32, epochs=1,
                         batch_size=32, device="cpu", data_dir=str(folder / "data"),
                         save_dir=str(folder / f"life-{label}"))
    result = train(config, resume=False)
    opens, finishes = [], []
    for i in range(repeats):
        cfg = config.replace(seed=i)  # a new configuration: a new run each time
        tracker = tracking.MlflowTracker(tracking.train_target(cfg, tracking_uri=uri,
                                                               experiment=f"bench-{label}"),
                                         system_metrics=False)
        start = time.perf_counter()
        assert tracker.open() is not None, f"no run on {label}"
        opens.append(time.perf_counter() - start)
        start = time.perf_counter()
        tracker.on_train_end(result)  # final metrics, metrics.json, final weights, end, drain
        finishes.append(time.perf_counter() - start)
        assert tracker.outbox.pending == 0
    return [_row(f"run creation, {label}", statistics.median(opens), "s", None,
                 f"median of {repeats}: experiment lookup, run, params, tags"),
            _row(f"run finish, {label}", statistics.median(finishes), "s", None,
                 f"median of {repeats}: final metrics, metrics.json, final weights "
                 f"({_size(config.save_dir)}), end of run")]


def _size(save_dir: str) -> str:
    last = Path(save_dir) / "last.pt"
    return f"last.pt {last.stat().st_size / 1e6:.1f} MB" if last.exists() else "no checkpoint"


def batch_vs_calls(uri: str, repeats: int = 20) -> list[dict]:
    from mlflow.entities import Metric

    from wno.platform import schema, tracking

    client = tracking.client_for(uri)
    exp = tracking.ensure_experiment(client, "bench-batch", tracking.artifact_root(uri))
    run = client.create_run(exp).info.run_id
    batch, calls = [], []
    for step in range(repeats):
        now = int(time.time() * 1000)
        start = time.perf_counter()
        client.log_batch(run, metrics=[Metric(k, 0.5, now, 2 * step) for k in schema.EPOCH_METRICS])
        batch.append(time.perf_counter() - start)
        start = time.perf_counter()
        for k in schema.EPOCH_METRICS:
            client.log_metric(run, k, 0.5, now, 2 * step + 1)
        calls.append(time.perf_counter() - start)
    return [_row("7 epoch metrics: one log_batch vs 7 log_metric calls",
                 statistics.median(batch), "s", statistics.median(calls),
                 f"local SQLite, median of {repeats}")]


def run(rounds: int = 3, server: bool = True) -> list[dict]:
    from wno.platform import tracking

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="wno-bench-tracking-") as tmp:
        folder = Path(tmp)
        os.environ.setdefault("WNO_CACHE_DIR", str(folder / "cache"))
        rows += overhead(rounds, folder)
        local = f"sqlite:///{folder / 'mlflow.db'}"
        rows += lifecycle(local, "local SQLite", folder)
        rows += batch_vs_calls(local)
        if server:
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            proc = tracking.start_server(f"sqlite:///{folder / 'server.db'}", port=port,
                                         artifacts=folder / "server-artifacts",
                                         log_path=folder / "server.log")
            try:
                uri = f"http://127.0.0.1:{port}"
                if tracking.wait_healthy(uri, proc, 300):
                    rows += lifecycle(uri, "mlflow server (loopback)", folder)
                else:
                    rows.append(_row("run creation, mlflow server", float("nan"), "s", None,
                                     "the server did not start; not measured"))
            finally:
                tracking.stop_server(proc)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="tracked/untracked training pairs")
    parser.add_argument("--no-server", action="store_true", help="skip the mlflow server rows")
    args = parser.parse_args()
    print_rows(run(args.rounds, server=not args.no_server))


if __name__ == "__main__":
    main()
