"""`wno report`: a study's trials aggregated over seeds and compared against the ViT baseline.

    report = build_report("levels")        # reads Optuna, and MLflow curves when reachable
    path = write_report(report, "html")    # wno-runs/reports/levels.html

Reads, never writes: the Optuna study (its SPEC and every trial's user attrs, named in
`wno.platform.schema`) and, for learning curves and links, the MLflow runs named in MLFLOW_RUN.
When MLflow cannot be reached or holds no runs, the report is made from Optuna alone and says so.

How the numbers are made
- A configuration is a GROUP: the trial's factors without the seed. Only COMPLETE trials count;
  when one configuration and seed completed twice, the later trial counts and the report says so.
- Per configuration: n, mean, sample standard deviation (ddof=1) and the 95% confidence interval
  of the mean, mean +- t(0.975, n-1) * std / sqrt(n), of the objective and of test accuracy.
- Against a baseline: the difference of means with a 95% interval from Welch's standard error
  sqrt(s1^2/n1 + s2^2/n2) and Welch-Satterthwaite degrees of freedom, and the p-value of Welch's
  t-test (what scipy.stats.ttest_ind(equal_var=False) gives); unadjusted, and Holm-adjusted over
  all the configurations compared with the same baseline on the same metric.
- Matching rule: a baseline configuration is the reference of a model configuration when every
  factor the baseline carries besides its name (e.g. model_size, or epochs when the grid varies
  it) has the same value in the model configuration (its factors, else its CONFIG), and the
  budget (CONFIG's dataset, epochs and train_size) is the same. The first baseline named in the
  study definition is the reference of the comparison table; others appear in the comparisons.
- Main effect of a factor: every completed model trial at that level, pooled over the other
  factors (mean and 95% interval of those trials).
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import stdtr, stdtrit  # Student's t CDF and its inverse (light imports)

from wno.cli.common import Unavailable, UserError
from wno.platform import defaults, schema
from wno.utils import atomic_write_text, mask_secrets, mask_url

FORMATS = defaults.REPORT_FORMATS
BUDGET_KEYS = ("dataset", "epochs", "train_size")
COSTS = ("params", "flops", "tokens", "wall_time", "throughput")
CURVE_METRICS = ("val_acc", "train_loss")
CONFIDENCE = 0.95
TRIAL_COLUMNS = ["number", "state", "role", "group", "baseline", "seed", "factors", "config",
                 "objective", "test_acc", *COSTS, "host", "device", "error", "retry_of",
                 "mlflow_run", "started", "completed"]
STATS = ("n", "mean", "std", "ci_low", "ci_high")
CONFIG_COLUMNS = ["group", "role", "baseline", "factors", "config", "trials", "seeds_done",
                  "seeds_missing", "waiting", "running", "fail", "pruned",
                  *(f"obj_{k}" for k in STATS), *(f"test_{k}" for k in STATS), *COSTS,
                  "obj_values", "test_values", "trial_numbers"]


# --- statistics ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stats:
    """n, mean, sample std and the 95% t-interval of the mean (NaN where n is too small)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with Welch's 95% interval, degrees of freedom and two-sided p-value."""

    diff: float
    ci_low: float
    ci_high: float
    p: float
    dof: float


def _finite(values: Iterable[Any]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def _t_quantile(dof: float) -> float:
    """t such that a t-distributed variable with `dof` degrees of freedom stays within +-t with
    probability CONFIDENCE (scipy.stats.t.ppf(0.975, dof); scipy.stats is a slow import)."""
    return float(stdtrit(dof, 0.5 + CONFIDENCE / 2))


def _mean(values: Iterable[Any]) -> float:
    x = _finite(values)
    return float(x.mean()) if x.size else math.nan


def summarize(values: Iterable[Any]) -> Stats:
    """Stats of the finite values. >>> summarize([1, 2, 3]).mean
    2.0
    """
    x = _finite(values)
    nan = math.nan
    if x.size == 0:
        return Stats(0, nan, nan, nan, nan)
    mean = float(x.mean())
    if x.size == 1:
        return Stats(1, mean, nan, nan, nan)
    std = float(x.std(ddof=1))
    half = _t_quantile(x.size - 1) * std / math.sqrt(x.size)
    return Stats(int(x.size), mean, std, mean - half, mean + half)


def welch(a: Iterable[Any], b: Iterable[Any]) -> Difference:
    """Difference of means of `a` and `b` with Welch's interval and t-test."""
    a, b = _finite(a), _finite(b)
    nan = math.nan
    if a.size == 0 or b.size == 0:
        return Difference(nan, nan, nan, nan, nan)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Difference(diff, nan, nan, nan, nan)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:  # no spread on either side: the difference is exact, no test is possible
        return Difference(diff, diff, diff, nan, nan)
    dof = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))
    se = math.sqrt(va + vb)
    half = _t_quantile(dof) * se
    # Welch's two-sided p, the number scipy.stats.ttest_ind(a, b, equal_var=False) gives (the
    # tests check it); computed directly because ttest_ind costs ~11 ms a call here.
    p = float(2 * stdtr(dof, -abs(diff) / se))
    return Difference(diff, diff - half, diff + half, p, dof)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment; NaN entries stay NaN and do not count as tests."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(order) - rank) * p[i])
        out[i] = min(1.0, running)
    return out.tolist()


# --- the report --------------------------------------------------------------------------------

@dataclass
class Report:
    """Everything the renderers need, already computed. Tables are pandas DataFrames."""

    study: str
    description: str
    kind: str
    objective: str  # the metric name, e.g. "best_val_acc"
    direction: str  # "maximize" | "minimize"
    storage: str  # masked URL
    tracking: str | None  # masked URI, None when MLflow was not consulted
    generated: str
    spec: dict
    factors: list[str]
    levels: dict[str, list]
    seeds_expected: list
    trials: pd.DataFrame  # one row per trial (TRIAL_COLUMNS)
    configs: pd.DataFrame  # one row per configuration, aggregated over seeds
    comparisons: pd.DataFrame  # one row per (configuration, baseline, metric)
    effects: pd.DataFrame  # one row per (factor, level)
    reference: str | None  # the baseline name of the comparison table
    curves: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    curves_note: str | None = None  # why there are no curves, when there are none
    run_links: dict[str, str] = field(default_factory=dict)  # MLflow run id -> UI address
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {s: int(n) for s, n in self.trials["state"].value_counts().items()}

    @property
    def in_progress(self) -> bool:
        return any(self.counts.get(s, 0) for s in ("RUNNING", "WAITING"))

    @property
    def models(self) -> pd.DataFrame:
        return self.configs[self.configs["role"] == schema.ROLE_MODEL]

    @property
    def baselines(self) -> pd.DataFrame:
        return self.configs[self.configs["role"] == schema.ROLE_BASELINE]

    def best(self, column: str = "obj_mean") -> pd.Series | None:
        """The model configuration with the best mean of `column` (by the study's direction)."""
        done = self.models[self.models[column].notna()]
        if done.empty:
            return None
        lower_is_better = self.direction == "minimize" and column.startswith("obj")
        i = done[column].idxmin() if lower_is_better else done[column].idxmax()
        return done.loc[i]


def build_report(study_name: str, storage: str | None = None, tracking_uri: str | None = None,
                 *, curves: bool = True) -> Report:
    """Read study `study_name` and aggregate it. `curves=False` skips MLflow entirely."""
    url = defaults.storage_url(storage)
    study = load_study(study_name, url)
    spec = study.user_attrs.get(schema.SPEC) or {}
    objective, direction = _objective(spec, study)
    records = trial_records(study.get_trials(deepcopy=False), objective)
    trials = trials_frame(records)
    factors, levels = _factors(spec, trials)
    seeds = _expected_seeds(spec, trials)
    configs, notes = aggregate(records, factors, levels, seeds)
    baseline_names = _baseline_names(spec, configs)
    comparisons = compare(configs, baseline_names, notes)
    reference = baseline_names[0] if baseline_names else None
    configs = _with_reference(configs, comparisons, reference)
    report = Report(
        study=study_name, description=str(spec.get("description") or ""),
        kind=str(study.user_attrs.get(schema.KIND) or "unknown"), objective=objective,
        direction=direction, storage=mask_url(url), tracking=None,
        generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), spec=spec,
        factors=factors, levels=levels, seeds_expected=seeds, trials=trials, configs=configs,
        comparisons=comparisons, effects=effects(records, factors, levels), reference=reference,
        notes=notes,
    )
    if curves:
        uri = defaults.tracking_uri(tracking_uri)
        report.tracking = mask_url(uri)
        counted = {n for numbers in configs.get("trial_numbers", []) for n in numbers}
        report.curves, report.curves_note, report.run_links = read_mlflow(uri, study_name, trials,
                                                                          counted)
    else:
        report.curves_note = "learning curves were not requested (MLflow not consulted)"
    return report


def write_report(report: Report, fmt: str = "html", out: str | Path | None = None) -> Path:
    """Render `report` as `fmt` and write it atomically; returns the path written."""
    text = render(report, fmt)
    path = Path(out) if out else default_path(report.study, fmt)
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise UserError(f"cannot write the report to {path}: {e.strerror or e}") from None
    return path


def render(report: Report, fmt: str) -> str:
    from wno.platform import report_formats, report_html

    renderers = {"html": report_html.to_html, "md": report_formats.to_markdown,
                 "csv": report_formats.to_csv, "latex": report_formats.to_latex,
                 "json": report_formats.to_json}
    if fmt not in renderers:
        raise UserError(f"unknown report format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return renderers[fmt](report)


def default_path(study: str, fmt: str) -> Path:
    """wno-runs/reports/<study>.<ext>, the study name made safe as a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study).strip("._") or "study"
    return defaults.reports_dir() / f"{safe}.{FORMATS.get(fmt, fmt)}"


# --- reading Optuna ----------------------------------------------------------------------------

def open_storage(url: str):
    """An Optuna RDB storage for reading; a missing SQLite file is an error, not a new database."""
    import optuna
    import sqlalchemy.exc

    from wno.platform.queue import normalize_url, sqlite_path

    url = normalize_url(url)  # the workers' spelling rules: postgresql:// means psycopg 3
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            raise UserError(f"no study storage at {path} (from {mask_url(url)}); create a study "
                            "with `wno study create FILE`, or pass --storage / set WNO_STORAGE")
    kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
    try:  # skip_table_creation: reading must not turn some other database into an Optuna one
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=True)
    except (sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError) as e:
        raise _storage_error(e, url) from None
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError) as e:
        raise UserError(f"not a usable storage URL {mask_url(url)}: {_first_line(e)}; expected "
                        "sqlite:///path/optuna.db or postgresql+psycopg://user:***@host/db") \
            from None
    except RuntimeError as e:  # a schema written by another Optuna version
        raise UserError(f"{mask_url(url)}: {_first_line(e)}") from None


def _storage_error(e: BaseException, url: str) -> UserError:
    """A missing table means "not an Optuna storage"; anything else, "cannot reach it"."""
    while e.__cause__ is not None or e.__context__ is not None:  # Optuna wraps SQLAlchemy's
        if getattr(e, "orig", None) is not None:
            break
        e = e.__cause__ or e.__context__
    text = str(e)
    if re.search(r"no such table|does not exist|UndefinedTable", text):
        return UserError(f"{mask_url(url)} holds no Optuna studies (it has no Optuna tables); "
                         f"{known_studies_text([])}")
    orig = getattr(e, "orig", None)
    return Unavailable(f"cannot reach the study storage {mask_url(url)}: "
                       f"{_first_line(orig if orig is not None else e)}")


def study_names(url: str) -> list[str]:
    """The names of the studies in the storage at `url`, sorted."""
    import optuna

    return sorted(optuna.get_all_study_names(open_storage(url)))


def known_studies_text(names: list[str]) -> str:
    return "known studies: " + (", ".join(names) if names else "none")


def load_study(name: str, url: str):
    """The Optuna study `name`; an unknown name lists the studies the storage does hold."""
    import optuna

    storage = open_storage(url)
    known = sorted(optuna.get_all_study_names(storage))
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"no study named {name!r} in {mask_url(url)}{hint}; "
                        f"{known_studies_text(known)}")
    return optuna.load_study(study_name=name, storage=storage)


def _objective(spec: dict, study) -> tuple[str, str]:
    objective = spec.get("objective") or {}
    metric = objective.get("metric") or "best_val_acc"
    direction = objective.get("direction") or study.direction.name.lower()
    return str(metric), str(direction).lower()


def trial_records(frozen: Sequence, objective: str) -> list[dict]:
    """One dict per Optuna trial with the attributes the report uses (TRIAL_COLUMNS)."""
    rows = []
    for t in frozen:
        ua = t.user_attrs
        metrics = ua.get(schema.METRICS) or {}
        factors = dict(ua.get(schema.FACTORS) or t.params or {})
        value = metrics.get(objective)
        if value is None and t.state.name == "COMPLETE" and t.values and len(t.values) == 1:
            value = t.values[0]
        config = ua.get(schema.CONFIG) or {}
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "role": ua.get(schema.ROLE) or schema.ROLE_MODEL,
            "group": ua.get(schema.GROUP) or schema.group_label(factors) or f"trial {t.number}",
            "baseline": factors.get("baseline"),
            "seed": ua.get(schema.SEED, config.get("seed")),
            "factors": factors,
            "config": config,
            "objective": _num(value),
            "test_acc": _num(metrics.get("test_acc")),
            **{c: _num(metrics.get(c)) for c in COSTS},
            "host": ua.get(schema.HOST),
            "device": ua.get(schema.DEVICE),
            "error": mask_secrets(str(ua[schema.ERROR])) if ua.get(schema.ERROR) else None,
            "retry_of": ua.get(schema.RETRY_OF),
            "mlflow_run": ua.get(schema.MLFLOW_RUN),
            "started": t.datetime_start,
            "completed": t.datetime_complete,
        })
    return sorted(rows, key=lambda r: r["number"])


def trials_frame(rows: list[dict]) -> pd.DataFrame:
    # Object columns keep seeds as the ints (or strings) they were, and None as None.
    dtypes = {"number": "int64", "objective": float, "test_acc": float,
              **dict.fromkeys(COSTS, float)}
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=dtypes.get(c, object))
                         for c in TRIAL_COLUMNS})


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _first_line(e: BaseException | object) -> str:
    lines = str(e).strip().splitlines()
    return mask_secrets(lines[0] if lines else type(e).__name__)


def _factors(spec: dict, trials: pd.DataFrame) -> tuple[list[str], dict[str, list]]:
    """The study's factors in definition order, with their levels in grid order."""
    grid = spec.get("grid") if isinstance(spec.get("grid"), dict) else {}
    levels: dict[str, list] = {k: list(v) if isinstance(v, list) else [v] for k, v in grid.items()}
    models = trials[trials["role"] == schema.ROLE_MODEL]
    for factors in models["factors"]:
        for k, v in factors.items():
            seen = levels.setdefault(k, [])
            if v not in seen:
                seen.append(v)
    levels.pop("baseline", None)
    used = {k for f in models["factors"] for k in f}
    levels = {k: v for k, v in levels.items() if k in used or not len(models)}
    return list(levels), levels


def _expected_seeds(spec: dict, trials: pd.DataFrame) -> list:
    seeds = spec.get("seeds")
    if isinstance(seeds, int):
        return list(range(seeds))
    if isinstance(seeds, list) and seeds:
        return list(seeds)
    return sorted({s for s in trials["seed"] if s is not None and not pd.isna(s)})


# --- aggregation --------------------------------------------------------------------------------

def aggregate(trials: list[dict], factors: list[str], levels: dict[str, list],
              seeds: list) -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration: state counts, seeds done/missing, Stats, mean costs."""
    notes: list[str] = []
    groups: dict[str, list[dict]] = {}
    for t in sorted(trials, key=lambda t: t["number"]):
        groups.setdefault(t["group"], []).append(t)
    rows = [_aggregate_group(group, tr, seeds, notes) for group, tr in groups.items()]
    rows.sort(key=lambda r: _config_order(r, factors, levels))
    return pd.DataFrame(rows, columns=CONFIG_COLUMNS), notes


def completed(trials: list[dict]) -> tuple[list[dict], list[dict]]:
    """The COMPLETE trials that count (the later one per seed), and those superseded."""
    kept: dict[Any, dict] = {}
    superseded = []
    for t in sorted(trials, key=lambda t: t["number"]):
        if t["state"] != "COMPLETE":
            continue
        key = t["seed"] if t["seed"] is not None else ("trial", t["number"])
        if key in kept:
            superseded.append(kept[key])
        kept[key] = t
    return sorted(kept.values(), key=lambda t: t["number"]), superseded


def _aggregate_group(group: str, tr: list[dict], seeds: list, notes: list[str]) -> dict:
    done, superseded = completed(tr)
    if superseded:
        notes.append(f"{group}: seed(s) {_join(t['seed'] for t in superseded)} completed more "
                     f"than once; trials {_join(t['number'] for t in superseded)} are left out "
                     "and the later ones count")
    first = tr[0]
    states = [t["state"] for t in tr]
    seeds_done = sorted((t["seed"] for t in done if t["seed"] is not None), key=_sort_key)
    obj = summarize(t["objective"] for t in done)
    test = summarize(t["test_acc"] for t in done)
    return {
        "group": group, "role": first["role"], "baseline": first["baseline"],
        "factors": first["factors"], "config": first["config"], "trials": len(tr),
        "seeds_done": seeds_done, "seeds_missing": [s for s in seeds if s not in seeds_done],
        **{s.lower(): states.count(s) for s in ("WAITING", "RUNNING", "FAIL", "PRUNED")},
        **{f"obj_{k}": v for k, v in asdict(obj).items()},
        **{f"test_{k}": v for k, v in asdict(test).items()},
        **{c: _mean(t[c] for t in done) for c in COSTS},
        "obj_values": [t["objective"] for t in done],
        "test_values": [t["test_acc"] for t in done],
        "trial_numbers": [t["number"] for t in done],
    }


def _config_order(row: dict, factors: list[str], levels: dict[str, list]) -> tuple:
    key = [row["role"] != schema.ROLE_MODEL, str(row["baseline"]) if row["baseline"] else ""]
    for f in factors:
        v = row["factors"].get(f)
        key.append(levels[f].index(v) if v in levels.get(f, []) else len(levels.get(f, [])))
    return (*key, row["group"])


def _sort_key(v: Any) -> tuple:
    return (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v))


def _join(values: Iterable) -> str:
    return ", ".join(str(v) for v in values)


def _baseline_names(spec: dict, configs: pd.DataFrame) -> list[str]:
    """Baseline names in definition order (the first is the reference), then any others seen."""
    if configs.empty:
        return []
    seen = [b for b in configs.loc[configs["role"] == schema.ROLE_BASELINE, "baseline"]
            if isinstance(b, str)]
    declared = spec.get("baselines") or {}
    names = [b.get("name") if isinstance(b, dict) else b for b in declared] \
        if isinstance(declared, list) else list(declared)
    return [n for n in names if n in seen] + sorted({n for n in seen if n not in names})


def _factor_value(row: dict, key: str) -> Any:
    return row["factors"][key] if key in row["factors"] else row["config"].get(key)


def matches(model: dict, baseline: dict) -> bool:
    """The matching rule of the module docstring: shared factors, then the same budget."""
    shared = {k: v for k, v in baseline["factors"].items() if k != "baseline"}
    if any(_factor_value(model, k) != v for k, v in shared.items()):
        return False
    return all(model["config"][k] == baseline["config"][k] for k in BUDGET_KEYS
               if k in model["config"] and k in baseline["config"])


def compare(configs: pd.DataFrame, baseline_names: list[str], notes: list[str]) -> pd.DataFrame:
    """Every model configuration against its matching configuration of each baseline."""
    columns = ["group", "baseline", "baseline_group", "metric", "diff", "ci_low", "ci_high",
               "p", "dof", "p_holm"]
    if configs.empty:
        return pd.DataFrame(columns=columns)
    records = configs.to_dict("records")
    models = [c for c in records if c["role"] == schema.ROLE_MODEL]
    rows = []
    for name in baseline_names:
        refs = [c for c in records if c["role"] == schema.ROLE_BASELINE and c["baseline"] == name]
        unmatched = []
        for m in models:
            found = [b for b in refs if matches(m, b)]
            if len(found) != 1:
                unmatched.append((m["group"], len(found)))
                continue
            b = found[0]
            for metric, col in (("objective", "obj_values"), ("test_acc", "test_values")):
                d = welch(m[col], b[col])
                rows.append({"group": m["group"], "baseline": name, "baseline_group": b["group"],
                             "metric": metric, **asdict(d)})
        for what, groups in (("no", [g for g, k in unmatched if k == 0]),
                             ("several", [g for g, k in unmatched if k > 1])):
            if groups:
                more = " ..." if len(groups) > 5 else ""
                notes.append(f"{len(groups)} configuration(s) have {what} matching {name!r} "
                             "baseline configuration (same shared factors and budget), so no "
                             f"difference is given for them: {_join(groups[:5])}{more}")
    out = pd.DataFrame(rows, columns=columns[:-1])
    out["p_holm"] = math.nan
    for _, idx in out.groupby(["baseline", "metric"]).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"].tolist())
    return out


def _with_reference(configs: pd.DataFrame, comparisons: pd.DataFrame,
                    reference: str | None) -> pd.DataFrame:
    """Add the reference baseline's differences to the configuration table (d_obj_*, d_test_*)."""
    configs = configs.copy()
    cols = {"ref_group": None}
    for prefix in ("d_obj", "d_test"):
        cols.update({prefix: math.nan, f"{prefix}_low": math.nan, f"{prefix}_high": math.nan,
                     f"{prefix}_p": math.nan, f"{prefix}_p_holm": math.nan})
    for c, v in cols.items():
        configs[c] = v
    if configs.empty or reference is None:
        return configs
    configs["ref_group"] = configs["ref_group"].astype(object)
    ref = comparisons[comparisons["baseline"] == reference]
    position = {g: i for i, g in enumerate(configs["group"])}
    for r in ref.to_dict("records"):
        i = position[r["group"]]
        prefix = "d_obj" if r["metric"] == "objective" else "d_test"
        configs.at[i, "ref_group"] = r["baseline_group"]
        configs.at[i, prefix] = r["diff"]
        configs.at[i, f"{prefix}_low"], configs.at[i, f"{prefix}_high"] = r["ci_low"], r["ci_high"]
        configs.at[i, f"{prefix}_p"], configs.at[i, f"{prefix}_p_holm"] = r["p"], r["p_holm"]
    return configs


def effects(trials: list[dict], factors: list[str], levels: dict[str, list]) -> pd.DataFrame:
    """Main effect of each factor: Stats of the completed model trials at each level."""
    models = [t for t in trials if t["role"] == schema.ROLE_MODEL]
    by_group: dict[str, list[dict]] = {}
    for t in models:
        by_group.setdefault(t["group"], []).append(t)
    done = [t for tr in by_group.values() for t in completed(tr)[0]]
    rows = []
    for f in factors:
        for level in levels[f]:
            s = summarize(t["objective"] for t in done if t["factors"].get(f) == level)
            rows.append({"factor": f, "level": level, **asdict(s)})
    return pd.DataFrame(rows, columns=["factor", "level", *Stats.__dataclass_fields__])


def pareto_front(cost: Sequence[float], value: Sequence[float], *,
                 maximize: bool = True) -> list[int]:
    """Indices of the points no other point beats on both axes (lower cost, better value),
    ordered by cost. NaNs are never on the front.

    >>> pareto_front([1, 2, 3], [0.5, 0.4, 0.7])
    [0, 2]
    """
    sign = 1 if maximize else -1
    ok = [i for i in range(len(cost)) if not (math.isnan(cost[i]) or math.isnan(value[i]))]
    front, best = [], -math.inf
    for i in sorted(ok, key=lambda i: (cost[i], -sign * value[i])):
        if sign * value[i] > best:
            front.append(i)
            best = sign * value[i]
    return front


# --- reading MLflow -----------------------------------------------------------------------------

def read_mlflow(uri: str, study: str, trials: pd.DataFrame, counted: set[int] | None = None
                ) -> tuple[dict[str, dict[str, pd.DataFrame]], str | None, dict[str, str]]:
    """Learning curves per configuration, a note when there are none, and run links.

    Curves: for each configuration and CURVE_METRICS metric, a frame (step, mean, std, n) over
    the runs of its counted trials (`counted` trial numbers; default every COMPLETE trial).
    Links only when `uri` is an http(s) tracking server (the MLflow UI's run page).

    A tracking *database* (sqlite:///, postgresql://, ...) is read with one read-only query of
    MLflow's `metrics` table (MLflow's client needs a call per run and metric: ~15 s for 1,000
    runs); a server goes through MlflowClient, several runs at a time.
    """
    with_runs = trials[trials["mlflow_run"].notna()]
    if with_runs.empty:
        return {}, "no trial recorded an MLflow run, so there are no learning curves", {}
    problem = _mlflow_problem(uri)
    if problem:
        return {}, f"learning curves unavailable: {problem}", {}
    done = with_runs[with_runs["state"] == "COMPLETE"]
    if counted is not None:
        done = done[done["number"].isin(counted)]
    run_ids = list(dict.fromkeys(done["mlflow_run"]))
    links: dict[str, str] = {}
    try:
        if _is_database(uri):
            histories, failed = _histories_sql(uri, run_ids), 0
        else:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(study)
            if experiment is not None and uri.startswith(("http://", "https://")):
                from wno.platform.tracking import run_url  # masks the URL's password

                links = {r: run_url(uri, experiment.experiment_id, r)
                         for r in with_runs["mlflow_run"]}
            histories, failed = _histories_api(client, run_ids)
    except Exception as e:  # noqa: BLE001 - any MLflow failure costs the curves, not the report
        return {}, f"learning curves unavailable: MLflow at {mask_url(uri)}: {_first_line(e)}", {}
    curves = _curves(done, histories)
    note = None
    if not curves:
        note = (f"learning curves unavailable: the MLflow runs at {mask_url(uri)} hold no "
                f"per-epoch {' or '.join(CURVE_METRICS)}")
    elif failed:
        note = f"{failed} MLflow run(s) could not be read; their curves are left out"
    return curves, note, links


def _is_database(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql")


def _mlflow_problem(uri: str) -> str | None:
    """Why MLflow at `uri` cannot be read (quickly, without creating anything), or None."""
    if uri.startswith(("http://", "https://")):
        import requests

        from wno.platform.tracking import server_health

        try:
            server_health(uri)
            return None
        except requests.RequestException as e:
            return f"the tracking server {mask_url(uri)} is unreachable ({_first_line(e)})"
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            return f"there is no MLflow store at {path}"
    if uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        if not path.exists():
            return f"there is no MLflow store at {path}"
    return None


Histories = dict[tuple[str, str], list[tuple[int, float]]]  # (run id, metric) -> [(step, value)]


def _histories_sql(uri: str, run_ids: list[str]) -> Histories:
    """Every CURVE_METRICS point of `run_ids` from MLflow's `metrics` table, read-only."""
    import sqlalchemy as sa

    if uri.startswith("sqlite:///"):  # opened read-only: the report never writes a store
        uri = f"sqlite:///file:{Path(uri.removeprefix('sqlite:///')).resolve()}?mode=ro&uri=true"
    engine = sa.create_engine(uri)
    query = sa.text("SELECT run_uuid, key, step, value, timestamp, is_nan FROM metrics "
                    "WHERE key IN :keys AND run_uuid IN :runs").bindparams(
        sa.bindparam("keys", expanding=True), sa.bindparam("runs", expanding=True))
    latest: dict[tuple[str, str, int], tuple[int, float]] = {}
    try:
        with engine.connect() as conn:
            for i in range(0, len(run_ids), 500):
                rows = conn.execute(query, {"keys": list(CURVE_METRICS),
                                            "runs": run_ids[i:i + 500]})
                for run, key, step, value, stamp, is_nan in rows:
                    k = (run, key, int(step))
                    if k not in latest or stamp >= latest[k][0]:  # a re-logged epoch: the latest
                        latest[k] = (stamp, math.nan if is_nan else float(value))
    finally:
        engine.dispose()
    out: Histories = {}
    for (run, key, step), (_, value) in sorted(latest.items()):
        out.setdefault((run, key), []).append((step, value))
    return out


def _histories_api(client, run_ids: list[str]) -> tuple[Histories, int]:
    """The same through MlflowClient, several requests at a time; and how many runs failed."""
    from concurrent.futures import ThreadPoolExecutor

    def fetch(key: tuple[str, str]):
        try:
            history = sorted(client.get_metric_history(*key), key=lambda m: (m.step, m.timestamp))
            return key, {m.step: m.value for m in history}  # a re-logged epoch: the latest
        except Exception:  # noqa: BLE001 - a deleted or unreadable run only loses its curve
            return key, None

    keys = [(r, m) for r in run_ids for m in CURVE_METRICS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(pool.map(fetch, keys))
    failed = len({r for (r, _), h in results.items() if h is None})
    return {k: sorted(h.items()) for k, h in results.items() if h}, failed


def _curves(done: pd.DataFrame, histories: Histories) -> dict[str, dict[str, pd.DataFrame]]:
    """Per configuration and metric: mean, sample std and n over its runs, per step."""
    curves: dict[str, dict[str, pd.DataFrame]] = {}
    runs_of: dict[str, list[str]] = {}
    for group, run in zip(done["group"], done["mlflow_run"], strict=True):
        runs_of.setdefault(group, []).append(run)
    for group, runs in runs_of.items():
        for metric in CURVE_METRICS:
            by_step: dict[int, list[float]] = {}
            for run in runs:
                for step, value in histories.get((run, metric), []):
                    by_step.setdefault(step, []).append(value)
            if by_step:
                steps = sorted(by_step)
                stats = [summarize(by_step[s]) for s in steps]
                curves.setdefault(group, {})[metric] = pd.DataFrame({
                    "step": steps, "mean": [x.mean for x in stats],
                    "std": [x.std for x in stats], "n": [x.n for x in stats]})
    return curves
