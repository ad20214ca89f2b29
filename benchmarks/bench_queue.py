"""Queue overhead: how fast workers turn over trials when training costs nothing, and how much of
a real smoke trial the platform (not training) takes.

1. No-op trials: W worker processes (1, 4, 8) run real `Worker` loops whose `train` returns at
   once, over one enqueued grid study, on SQLite and on PostgreSQL (when WNO_BENCH_POSTGRES_URL or
   WNO_TEST_POSTGRES_URL is set). Rows: trials/s (all workers together) and the latency of one
   pop (p50, p95). Baselines, measured in the same run: for 1 worker, Optuna's own
   enqueue + ask/tell loop on the same backend (no heartbeats, no exactly-once guard); for 4 and
   8 workers, our 1-worker figure (so the ratio is the scaling).
2. A real smoke trial: the first trial of studies/smoke.yaml through an in-process worker; rows:
   the share of the trial's wall time outside `train()` (pop, config, heartbeat thread, tell),
   and the share of `train()` outside its epochs (data, model build, test evaluation).
   CIFAR-10 comes from WNO_DATA_DIR; without it the synthetic set stands in (noted in the row).
3. CPU workers sharing one machine: the same real trials (micro ViT, synthetic data) through 1
   worker process and through several, each worker either taking its share of the cores (the
   default, `wno.platform.cpu_share`) or every core (`--threads <cores>`, what each worker did
   before), the settings taking turns for a few rounds (outside load then falls on all alike).
   Rows: trials/s of all workers together and the median epoch (the slowest in the notes);
   baseline, measured in the same run: 1 worker alone. OMP_NUM_THREADS is cleared in the
   workers (it would cap them).

Run: `python -m benchmarks.bench_queue` (WNO_BENCH_QUICK=1: fewer trials, no smoke trial;
`--cpu-workers` runs only part 3).
"""

from __future__ import annotations

import contextlib
import functools
import io
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import data_dir, print_rows, row

REPO = Path(__file__).resolve().parents[1]
COMMAND = "python -m benchmarks.bench_queue"
WORKERS = (1, 4, 8)


def _noop_result(config):
    from wno.training import TrainResult

    return TrainResult(config=config, final_val_acc=0.5, best_val_acc=0.5, best_epoch=1,
                       test_acc=0.5, test_loss=1.0, params=1, flops=1, tokens=1, wall_time=0.0,
                       throughput=0.0, epochs_completed=1)


def _noop_train(config, callbacks=(), resume=True, lineage=None):
    return _noop_result(config)


def _worker_process(url: str, study: str, ckpt: str, ready, start, results) -> None:
    """One no-op worker; reports (trials, seconds in pop per claimed trial, finished at)."""
    from wno.platform.queue import StudyQueue
    from wno.platform.worker import Worker, WorkerOptions

    queue = StudyQueue(url)
    pops: list[float] = []
    pop = queue.pop

    def timed_pop(*args, **kwargs):
        t = time.perf_counter()
        claim = pop(*args, **kwargs)
        if claim is not None:
            pops.append(time.perf_counter() - t)
        return claim

    queue.pop = timed_pop
    options = WorkerOptions(studies=[study], idle_timeout=0, checkpoint_dir=ckpt,
                            heartbeat_interval=30, poll_interval=0.1)
    worker = Worker(queue, options, train_fn=_noop_train)
    queue.spec(study)  # warm: imports and the stored definition, before the clock starts
    ready.put(os.getpid())
    start.wait()
    with contextlib.redirect_stdout(io.StringIO()):
        summary = worker.run()
    results.put((summary.trials, pops, time.time()))


def _study(name: str, n_trials: int):
    from wno.platform.spec import parse_spec

    base = dict(model="vit", model_size="micro", dataset="synthetic", epochs=1, val_size=500)
    return parse_spec({"name": name, "base": base, "grid": {"lr": [1e-3 * (i + 1) for i in
                                                                     range(n_trials)]},
                       "seeds": 1})


def _race(target, args: tuple, n_workers: int, timeout: float) -> tuple[list, float]:
    """Start `n_workers` spawned processes of `target(*args, ready, start, results)`, release
    them together once all are ready (imported and connected), and collect one result tuple
    each, its last item the time it finished. Returns (results, seconds to the last finish)."""
    ctx = mp.get_context("spawn")
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, ready, start, results))
             for _ in range(n_workers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=600)
    time.sleep(0.5)
    t0 = time.time()
    start.set()
    outs = [results.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join()
    return outs, max(o[-1] for o in outs) - t0


def _measure_workers(url: str, n_workers: int, n_trials: int, ckpt: str) -> dict:
    from wno.platform.queue import StudyQueue

    name = f"bench-{n_workers}w-{os.getpid()}-{time.time_ns() % 10**8}"
    queue = StudyQueue(url, create=True)
    queue.create(_study(name, n_trials))
    outs, elapsed = _race(_worker_process, (url, name, ckpt), n_workers, timeout=1800)
    done = sum(o[0] for o in outs)
    pops = [x for o in outs for x in o[1]]
    assert done == n_trials, f"{done} of {n_trials} trials ran"
    states = {t.state.name for t in queue.storage.get_all_trials(queue.study_id(name))}
    assert states == {"COMPLETE"}, states
    queue.delete(name)
    return {"trials_per_s": done / elapsed, "pop_p50": statistics.median(pops),
            "pop_p95": _quantile(pops, 0.95)}


def _optuna_baseline(url: str, n_trials: int) -> dict:
    """Optuna's own queue on the same backend: enqueue_trial, then ask/tell in one process."""
    import optuna

    from wno.platform.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, create=True)
    name = f"optuna-baseline-{os.getpid()}-{time.time_ns() % 10**8}"
    study = optuna.create_study(study_name=name, storage=storage)
    for i in range(n_trials):
        study.enqueue_trial({}, user_attrs={"i": i})
    asks = []
    t0 = time.perf_counter()
    for _ in range(n_trials):
        t = time.perf_counter()
        trial = study.ask()
        asks.append(time.perf_counter() - t)
        study.tell(trial, 0.5)
    elapsed = time.perf_counter() - t0
    optuna.delete_study(study_name=name, storage=storage)
    return {"trials_per_s": n_trials / elapsed, "pop_p50": statistics.median(asks),
            "pop_p95": _quantile(asks, 0.95)}


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _backends(tmp: Path) -> list[tuple[str, str]]:
    out = [("sqlite", f"sqlite:///{tmp / 'bench.db'}")]
    pg = os.environ.get("WNO_BENCH_POSTGRES_URL") or os.environ.get("WNO_TEST_POSTGRES_URL")
    if pg:
        out.append(("postgresql", pg))
    return out


def queue_rows(quick: bool = False) -> list[dict]:
    rows = []
    n = 24 if quick else 64
    with tempfile.TemporaryDirectory() as tmp:
        for backend, url in _backends(Path(tmp)):
            base = _optuna_baseline(url, n)
            rows.append(_row(f"optuna_ask_tell_{backend}_1w", base["trials_per_s"], "trials/s",
                             None, f"Optuna enqueue_trial + ask/tell, one process, {n} trials "
                                   f"(baseline)"))
            ours = {}
            for w in WORKERS:
                ours[w] = m = _measure_workers(url, w, n, str(Path(tmp) / "ckpt"))
                ref = base["trials_per_s"] if w == 1 else ours[1]["trials_per_s"]
                what = "Optuna ask/tell" if w == 1 else "our 1 worker"
                rows.append(_row(f"queue_{backend}_{w}w_trials_per_s", m["trials_per_s"],
                                 "trials/s", ref, f"{w} worker process(es), no-op train, {n} "
                                                  f"trials; baseline: {what}"))
                for q in ("p50", "p95"):
                    ref = base[f"pop_{q}"] if w == 1 else ours[1][f"pop_{q}"]
                    rows.append(_row(f"queue_{backend}_{w}w_pickup_{q}", m[f"pop_{q}"] * 1e3, "ms",
                                     ref * 1e3, f"one pop (exactly-once claim + first heartbeat) "
                                                f"with {w} worker(s); baseline: {what}"))
    return rows


# --- a real smoke trial ------------------------------------------------------------------------------
def smoke_rows() -> list[dict]:
    import optuna  # noqa: F401  (imported before the clock: every worker has it loaded)

    from wno.platform.queue import StudyQueue
    from wno.platform.spec import load_spec, parse_spec
    from wno.platform.worker import Worker, WorkerOptions
    from wno.training import train

    spec = load_spec(REPO / "studies" / "smoke.yaml")
    cifar = data_dir()
    note = "CIFAR-10 subset"
    if cifar is None:
        spec = parse_spec({**spec.to_dict(), "base": {**spec.base, "dataset": "synthetic"}})
        note = "synthetic data (no CIFAR-10 found: set WNO_DATA_DIR)"
    first = spec.plan[0] if spec.plan[0].role == "model" else next(
        t for t in spec.plan if t.role == "model")
    spec = parse_spec({**spec.to_dict(), "grid": {"use_kernel": [first.config.use_kernel]},
                       "seeds": [first.seed], "baselines": {}})
    inside: dict[str, float] = {}

    def timed_train(config, callbacks=(), resume=True, lineage=None):
        t = time.perf_counter()
        result = train(config, callbacks, resume=resume, lineage=lineage)
        inside["train"] = time.perf_counter() - t
        inside["epochs"] = sum(m.epoch_time for m in result.history)
        return result

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'smoke.db'}"
        queue = StudyQueue(url, create=True)
        queue.create(spec)
        options = WorkerOptions(idle_timeout=0, checkpoint_dir=str(Path(tmp) / "ckpt"),
                                data_dir=str(cifar) if cifar else None, heartbeat_interval=15)
        worker = Worker(queue, options, train_fn=timed_train)
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            claim = queue.pop(host="bench", device="cpu")
            outcome = worker.run_trial(claim)
        total = time.perf_counter() - t
    assert outcome == "COMPLETE", outcome
    outside = total - inside["train"]
    setup = inside["train"] - inside["epochs"]
    label = f"{first.group}, {first.config.train_size} images x {first.config.epochs} epochs"
    return [
        _row("smoke_trial_wall_s", total, "s", None, f"one smoke trial ({label}; {note})"),
        _row("smoke_trial_outside_train_share", 100 * outside / total, "%", None,
             f"pop, config, heartbeat thread and tell: {outside:.2f} s of {total:.1f} s"),
        _row("smoke_train_outside_epochs_share", 100 * setup / inside["train"], "%", None,
             f"data loading, model build, cost count, test evaluation: {setup:.1f} s of "
             f"{inside['train']:.1f} s in train()"),
    ]


# --- CPU workers sharing the machine ---------------------------------------------------------------------
CPU_TRIAL = dict(model="vit", model_size="micro", dataset="synthetic", train_size=512,
                 val_size=256, test_size=256, batch_size=64, epochs=2, warmup_epochs=0.0)


def _cpu_worker_process(url: str, study: str, ckpt: str, registry: str, threads: int | None,
                        ready, start, results) -> None:
    """One real CPU worker; reports (trials, epoch times, finished at)."""
    os.environ.pop("OMP_NUM_THREADS", None)  # before torch: the share, not the shell, decides
    import torch  # noqa: F401  (loaded before the clock, as in a worker that has trained once)

    from wno.platform.queue import StudyQueue
    from wno.platform.worker import Worker, WorkerOptions
    from wno.training import train

    epochs: list[float] = []

    def timed_train(config, callbacks=(), resume=True, lineage=None):
        result = train(config, callbacks, resume=resume, lineage=lineage)
        epochs.extend(m.epoch_time for m in result.history)
        return result

    queue = StudyQueue(url)
    options = WorkerOptions(studies=[study], idle_timeout=0, checkpoint_dir=ckpt,
                            cpu_registry=registry, threads=threads, heartbeat_interval=30,
                            poll_interval=0.1)
    worker = Worker(queue, options, train_fn=timed_train)
    queue.spec(study)
    ready.put(os.getpid())
    start.wait()
    with contextlib.redirect_stdout(io.StringIO()):
        summary = worker.run()
    results.put((summary.trials, epochs, time.time()))


def _measure_cpu_workers(url: str, n_workers: int, n_trials: int, tmp: Path,
                         threads: int | None) -> tuple[int, float, list[float]]:
    """(trials run, seconds from the start signal to the last worker's exit, epoch times)."""
    from wno.platform.queue import StudyQueue
    from wno.platform.spec import parse_spec

    name = f"cpu-{n_workers}w-{threads or 'share'}-{time.time_ns() % 10**8}"
    queue = StudyQueue(url, create=True)
    queue.create(parse_spec({"name": name, "base": CPU_TRIAL, "seeds": 1,
                             "grid": {"lr": [1e-3 * (i + 1) for i in range(n_trials)]}}))
    args = (url, name, str(tmp / "ckpt"), str(tmp / f"registry-{name}"), threads)
    outs, elapsed = _race(_cpu_worker_process, args, n_workers, timeout=3600)
    done = sum(o[0] for o in outs)
    assert done == n_trials, f"{done} of {n_trials} trials ran"
    return done, elapsed, [e for o in outs for e in o[1]]


def cpu_worker_rows(quick: bool = False) -> list[dict]:
    """Rows of part 3. The settings take turns, round after round, so that load from outside
    (other jobs on a shared machine) falls on each of them alike."""
    from wno.platform.cpu_share import machine_cores

    cores = machine_cores()
    counts = sorted({2, min(4, cores)})
    rounds, per_round = (1, 4) if quick else (3, 4)
    settings = [(1, "shared", None)] + [(w, label, threads) for w in counts for label, threads in
                                        (("shared", None), ("all_cores", cores))]
    totals = {key: [0, 0.0, []] for key in settings}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'cpu.db'}"
        for _ in range(rounds):
            for key in settings:
                done, seconds, epochs = _measure_cpu_workers(url, key[0], per_round, Path(tmp),
                                                             key[2])
                totals[key][0] += done
                totals[key][1] += seconds
                totals[key][2] += epochs
    what = (f"{rounds} rounds x {per_round} trials of micro ViT, {CPU_TRIAL['train_size']} "
            f"synthetic images x {CPU_TRIAL['epochs']} epochs, {cores} cores, load average "
            f"{load:.1f} before")

    def figures(key):
        done, seconds, epochs = totals[key]
        return done / seconds, max(epochs), statistics.median(epochs)

    alone, alone_max, alone_p50 = figures(settings[0])
    rows = [_row("cpu_1w_trials_per_s", alone, "trials/s", None,
                 f"1 CPU worker, its share = every core; {what} (baseline)"),
            _row("cpu_1w_epoch_p50_s", alone_p50, "s", None,
                 f"median epoch, 1 CPU worker (baseline; slowest {alone_max:.2f} s)")]
    for key in settings[1:]:
        w, label, threads = key
        how = ("each its share of the cores (default)" if threads is None else
               f"each --threads {cores} (before issue 16)")
        rate, slowest, median = figures(key)
        rows.append(_row(f"cpu_{w}w_{label}_trials_per_s", rate, "trials/s", alone,
                         f"{w} CPU workers, {how}; baseline: 1 worker"))
        rows.append(_row(f"cpu_{w}w_{label}_epoch_p50_s", median, "s", alone_p50,
                         f"median epoch, {w} CPU workers, {how} (slowest {slowest:.2f} s); "
                         f"baseline: 1 worker's median"))
    return rows


_row = functools.partial(row, command=COMMAND)


def run() -> list[dict]:
    quick = os.environ.get("WNO_BENCH_QUICK") == "1"
    rows = queue_rows(quick)
    if not quick:
        rows += smoke_rows()
    rows += cpu_worker_rows(quick)
    return rows


def main() -> None:
    if "--cpu-workers" in sys.argv[1:]:
        print_rows(cpu_worker_rows(os.environ.get("WNO_BENCH_QUICK") == "1"))
        return
    print_rows(run())


if __name__ == "__main__":
    main()
