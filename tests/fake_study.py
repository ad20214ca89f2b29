"""Synthetic studies with known numbers, written into a real Optuna storage (and MLflow).

The report's tests and benchmark need studies whose every number is known in advance: this module
writes them the way the queue and workers would (the attribute names of `wno.platform.schema`,
real Optuna trials in any storage URL, optionally one real MLflow run per trial with per-epoch
metrics), without training anything.

Example:
    >>> trials = [FakeTrial("model", {"wavelet": "haar"}, seed=s, metrics={"best_val_acc": v})
    ...           for s, v in enumerate([0.70, 0.72])]
    >>> spec = study_spec("demo", grid={"wavelet": ["haar"]}, seeds=[0, 1])
    >>> write_study("sqlite:///demo.db", spec, trials)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wno.platform import schema

OBJECTIVE = {"metric": "best_val_acc", "direction": "maximize"}


@dataclass
class FakeTrial:
    """One trial as a worker would leave it. `metrics` are the final ones (schema.FINAL_METRICS)."""

    role: str  # schema.ROLE_MODEL or schema.ROLE_BASELINE
    factors: dict[str, Any]  # a baseline carries {"baseline": name, <shared factors>}
    seed: int
    state: str = "COMPLETE"
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    retry_of: int | None = None
    host: str | None = "fake-host"
    device: str | None = "cpu"

    @property
    def group(self) -> str:
        return schema.group_label(self.factors)


def study_spec(name: str, *, grid: dict[str, list], seeds: Sequence[int],
               baselines: dict[str, dict] | None = None, objective: dict | None = None,
               base: dict | None = None, description: str = "") -> dict:
    """A study definition as a plain dict (what the queue keeps in the study's user attrs)."""
    return {
        "name": name,
        "description": description,
        "base": dict(base or {"model_size": "micro", "epochs": 3}),
        "grid": {k: list(v) for k, v in grid.items()},
        "seeds": list(seeds),
        "baselines": dict(baselines if baselines is not None else {"vit": {"model": "vit"}}),
        "objective": dict(objective or OBJECTIVE),
    }


def write_study(storage: str, spec: dict, trials: Sequence[FakeTrial], *,
                tracking_uri: str | None = None, epochs: int | None = None) -> list[int]:
    """Create study `spec["name"]` in `storage` holding `trials`; return their trial numbers.

    With `tracking_uri`, every COMPLETE or RUNNING trial also gets a real MLflow run in the
    experiment named after the study, with per-epoch curves that end at its final metrics.
    """
    import optuna

    direction = spec.get("objective", OBJECTIVE).get("direction", "maximize")
    study = optuna.create_study(study_name=spec["name"], storage=storage, direction=direction)
    study.set_user_attr(schema.SPEC, spec)
    study.set_user_attr(schema.KIND, "grid")
    epochs = epochs or int(spec.get("base", {}).get("epochs", 3))
    run_ids = _mlflow_runs(tracking_uri, spec["name"], trials, epochs) if tracking_uri else {}
    metric = spec.get("objective", OBJECTIVE)["metric"]
    frozen = [_frozen_trial(t, spec, metric, run_ids.get(i)) for i, t in enumerate(trials)]
    study.add_trials(frozen)
    return [t.number for t in study.get_trials(deepcopy=False)]


def _frozen_trial(t: FakeTrial, spec: dict, metric: str, run_id: str | None):
    import optuna
    from optuna.trial import TrialState

    from wno.training.config import TrainConfig

    overrides = {k: v for k, v in t.factors.items() if k != "baseline"}
    if t.role == schema.ROLE_BASELINE:
        overrides.update(spec.get("baselines", {}).get(t.factors.get("baseline"), {}))
    config = TrainConfig.from_dict({**spec.get("base", {}), **overrides, "seed": t.seed})
    attrs = {
        schema.CONFIG: config.to_dict(machine=False),
        schema.CONFIG_HASH: config.config_hash(),
        schema.ROLE: t.role,
        schema.FACTORS: dict(t.factors),
        schema.GROUP: t.group,
        schema.SEED: t.seed,
    }
    if t.state != "WAITING":
        attrs.update({schema.HOST: t.host, schema.DEVICE: t.device})
    if t.state == "COMPLETE":
        attrs[schema.METRICS] = dict(t.metrics)
    if t.error is not None:
        attrs[schema.ERROR] = t.error
    if t.retry_of is not None:
        attrs[schema.RETRY_OF] = t.retry_of
    if run_id is not None:
        attrs[schema.MLFLOW_RUN] = run_id
    value = t.metrics[metric] if t.state == "COMPLETE" else None
    return optuna.trial.create_trial(state=TrialState[t.state], value=value, user_attrs=attrs)


def learning_curve(final: float, epochs: int, *, start: float = 0.1) -> list[float]:
    """A saturating curve from about `start` to exactly `final` at the last epoch."""
    shape = [1 - math.exp(-3 * (e + 1) / epochs) for e in range(epochs)]
    return [start + (final - start) * s / shape[-1] for s in shape]


def _mlflow_runs(tracking_uri: str, study: str, trials: Sequence[FakeTrial],
                 epochs: int) -> dict[int, str]:
    """One MLflow run per COMPLETE/RUNNING trial; returns {index in trials: run id}."""
    from mlflow.entities import Metric, RunStatus
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(study)
    experiment = found.experiment_id if found else client.create_experiment(study)
    run_ids = {}
    for i, t in enumerate(trials):
        if t.state not in ("COMPLETE", "RUNNING"):
            continue
        run = client.create_run(experiment, run_name=f"{t.group}, seed={t.seed}",
                                tags={"wno.study": study, "wno.seed": str(t.seed)})
        final = t.metrics.get("final_val_acc", t.metrics.get("best_val_acc", 0.5))
        done = epochs if t.state == "COMPLETE" else max(1, epochs // 2)
        val = learning_curve(final, epochs)[:done]
        loss = [2.3 * (1 - 0.6 * v) for v in val]
        ts = 1_700_000_000_000
        batch = [Metric("val_acc", v, ts + e, e) for e, v in enumerate(val)]
        batch += [Metric("train_loss", v, ts + e, e) for e, v in enumerate(loss)]
        if t.state == "COMPLETE":
            batch += [Metric(k, float(v), ts + epochs, epochs) for k, v in t.metrics.items()]
        client.log_batch(run.info.run_id, metrics=batch)
        if t.state == "COMPLETE":
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
        run_ids[i] = run.info.run_id
    return run_ids


# --- a generated study of any size, for the benchmark and for rendering tests ------------------

SIZES = {"micro": (0.6e6, 45e6), "tiny": (2.4e6, 180e6), "small": (9.5e6, 700e6)}


def synthetic_trials(n_trials: int, *, seeds: int = 5, fail_every: int = 50,
                     running: int = 0, waiting: int = 0, rng_seed: int = 0,
                     grid: dict[str, list] | None = None) -> tuple[dict, list[FakeTrial]]:
    """`n_trials` trials of a kernel x wavelet x levels x size grid with ViT twins per size.

    Accuracies follow a known additive model plus seed noise; every `fail_every`-th trial
    failed, and the last `running` + `waiting` trials are still in the queue. Configurations are
    filled seed by seed (seeds 0 .. seeds-1), so a count that is not a multiple of the number of
    configurations leaves some with fewer seeds. Returns (grid, trials).
    """
    rng = random.Random(rng_seed)
    grid = grid or {"use_kernel": [True, False], "wavelet": ["haar", "db2", "db4", "sym4"],
                    "n_levels": [1, 2, 3], "model_size": ["micro", "tiny", "small"]}
    configs = [(schema.ROLE_MODEL, dict(zip(grid, combo, strict=True)))
               for combo in itertools.product(*grid.values())]
    sizes = grid.get("model_size", ["micro"])
    configs += [(schema.ROLE_BASELINE, {"baseline": "vit", "model_size": s}) for s in sizes]
    if n_trials > seeds * len(configs):
        raise ValueError(f"{n_trials} trials need more than {seeds} seeds of {len(configs)} "
                         "configurations; raise seeds")
    trials: list[FakeTrial] = []
    for seed, (role, factors) in itertools.product(range(seeds), configs):
        if len(trials) == n_trials:
            break
        trials.append(FakeTrial(role, factors, seed, metrics=_known_metrics(role, factors, rng)))
    for i, t in enumerate(trials):
        if fail_every and i % fail_every == fail_every - 1:
            t.state, t.metrics, t.error = "FAIL", {}, "RuntimeError: CUDA out of memory (fake)"
    for t in trials[len(trials) - running - waiting:len(trials) - waiting]:
        t.state, t.metrics = "RUNNING", {}
    for t in trials[len(trials) - waiting:]:
        t.state, t.metrics, t.host, t.device = "WAITING", {}, None, None
    return grid, trials


def _known_metrics(role: str, factors: dict, rng: random.Random) -> dict[str, float]:
    size = factors.get("model_size", "micro")
    params, flops = SIZES.get(size, SIZES["micro"])
    acc = 0.60 + 0.05 * list(SIZES).index(size) if size in SIZES else 0.6
    if role == schema.ROLE_MODEL:
        acc += 0.02 * bool(factors.get("use_kernel")) + 0.005 * factors.get("n_levels", 0)
        acc -= 0.003 * ["haar", "db2", "db4", "sym4"].index(factors.get("wavelet", "haar"))
        flops *= 1.0 + 0.5 * factors.get("n_levels", 0)
    acc += rng.gauss(0, 0.01)
    return {"final_val_acc": acc - 0.002, "best_val_acc": acc, "test_acc": acc - 0.01,
            "params": params, "flops": flops, "tokens": 1329 if role == "model" else 65,
            "wall_time": 60 + 10 * rng.random(), "throughput": 5000 * (45e6 / flops)}


# --- a small study with hand-picked numbers, for the tests -------------------------------------

KNOWN_VALUES = {  # (wavelet, model_size) -> best_val_acc per seed 0, 1, 2
    ("haar", "micro"): [0.61, 0.63, 0.62],
    ("db2", "micro"): [0.60, 0.64, 0.59],
    ("haar", "tiny"): [0.70, 0.72, 0.69],
    ("db2", "tiny"): [0.68, 0.71, "FAIL"],  # its retry waits in the queue
    ("vit", "micro"): [0.55, 0.58, 0.56],
    ("vit", "tiny"): [0.66, 0.65, "RUNNING"],
}
LEAKY_ERROR = ("OperationalError: could not connect to "
               "postgresql+psycopg://wno:hunter2@db:5432/wno")


def known_trials(name: str = "known") -> tuple[dict, list[FakeTrial]]:
    """A 2 x 2 grid (wavelet x model_size) with ViT twins per size and three seeds, numbers in
    KNOWN_VALUES; test accuracy = value - 0.012 + 0.003 * seed. It is in progress: a failed
    trial (its error holds a password) whose retry waits, a running trial, and haar/micro seed 1
    completed twice (0.63, then 0.65: the later counts)."""
    spec = study_spec(name, grid={"wavelet": ["haar", "db2"], "model_size": ["micro", "tiny"]},
                      seeds=[0, 1, 2], description="Hand-picked numbers <b>for tests</b>")
    trials = []
    for (wavelet, size), values in KNOWN_VALUES.items():
        if wavelet == "vit":
            role, factors = schema.ROLE_BASELINE, {"baseline": "vit", "model_size": size}
        else:
            role, factors = schema.ROLE_MODEL, {"wavelet": wavelet, "model_size": size}
        for seed, v in enumerate(values):
            if v == "FAIL":
                trials.append(FakeTrial(role, factors, seed, state="FAIL", error=LEAKY_ERROR))
                continue
            if v == "RUNNING":
                trials.append(FakeTrial(role, factors, seed, state="RUNNING", device="cuda:1"))
                continue
            trials.append(FakeTrial(role, factors, seed, metrics=known_metrics(size, v, seed)))
    failed = next(i for i, t in enumerate(trials) if t.state == "FAIL")
    trials.append(FakeTrial(schema.ROLE_MODEL, {"wavelet": "db2", "model_size": "tiny"}, 2,
                            state="WAITING", retry_of=failed, host=None, device=None))
    trials.append(FakeTrial(schema.ROLE_MODEL, {"wavelet": "haar", "model_size": "micro"}, 1,
                            metrics=known_metrics("micro", 0.65, 1)))
    return spec, trials


def known_metrics(size: str, value: float, seed: int) -> dict[str, float]:
    params, flops = SIZES[size]
    return {"best_val_acc": value, "final_val_acc": value - 0.005,
            "test_acc": round(value - 0.012 + 0.003 * seed, 6), "params": params,
            "flops": flops, "tokens": 1329, "wall_time": 100.0 + seed, "throughput": 1000.0}
