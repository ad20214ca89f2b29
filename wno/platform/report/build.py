"""Building a report: a study's trials aggregated over seeds and compared against the ViT baseline.

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
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import pandas as pd

from wno.base.errors import one_line
from wno.base.utils import mask_secrets, mask_url
from wno.platform import defaults, schema
from wno.platform.report.data import (BUDGET_KEYS, CONFIG_COLUMNS, COSTS, CURVE_METRICS,
                                      TRIAL_COLUMNS, Report)
from wno.platform.report.optuna_views import optuna_views
from wno.platform.report.stats import Stats, finite_mean, holm, summarize, welch
from wno.platform.spec import TEST_METRICS, SpecError, pinned_note, stored_spec
from wno.platform.storage import Store
from wno.platform.tracking import history


def build_report(study_name: str, storage: str | None = None, tracking_uri: str | None = None,
                 *, curves: bool = True) -> Report:
    """Read study `study_name` and aggregate it. `curves=False` skips MLflow entirely."""
    store = Store(storage, read_only=True)
    url = store.url
    study = store.load_study(study_name)
    spec = study.user_attrs.get(schema.SPEC) or {}
    objective, direction = _objective(spec, study)
    frozen = study.get_trials(deepcopy=False)
    records = trial_records(frozen, objective)
    trials = trials_frame(records)
    kind = str(study.user_attrs.get(schema.KIND) or "unknown")
    # A search samples its parameters: each value is met once, so they are not factors with
    # levels; Optuna's views (importances, history, slices) show them instead.
    factors, levels = ([], {}) if kind == "search" else _factors(spec, trials)
    seeds = _expected_seeds(spec, trials)
    configs, notes = aggregate(records, factors, levels, seeds)
    baseline_names = _baseline_names(spec, configs)
    comparisons = compare(configs, baseline_names, notes)
    if objective in TEST_METRICS:  # a study stored before such objectives were refused
        notes.append(f"the objective {objective} ranks on the test set: this study was created "
                     f"before wno refused test metrics as objectives, so its ranking is a "
                     f"selection on the test set")
    reference = baseline_names[0] if baseline_names else None
    configs = _with_reference(configs, comparisons, reference)
    report = Report(
        study=study_name, description=str(spec.get("description") or ""),
        kind=kind, objective=objective,
        direction=direction, storage=mask_url(url), tracking=None,
        generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), spec=spec,
        factors=factors, levels=levels, seeds_expected=seeds, trials=trials, configs=configs,
        comparisons=comparisons, effects=effects(records, factors, levels), reference=reference,
        notes=notes, optuna=optuna_views(study, objective, direction),
        fixed=_fixed(spec, study, frozen, notes),
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


def _fixed(spec: dict, study, frozen: Sequence, notes: list[str]) -> dict:
    """The settings every trial shares: the file's base over the defaults the study was stored
    with, where those differ from today's (and a note saying so)."""
    try:
        stored = stored_spec({**study.user_attrs, schema.SPEC: spec}, lambda: frozen)
    except SpecError:  # no longer a valid definition: its file's base is all there is to show
        return dict(spec.get("base") or {})
    if stored.pinned:
        notes.append(pinned_note(stored.pinned))
    return stored.config_base()


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
        **{c: finite_mean(t[c] for t in done) for c in COSTS},
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


# --- reading MLflow -----------------------------------------------------------------------------

def read_mlflow(uri: str, study: str, trials: pd.DataFrame, counted: set[int] | None = None
                ) -> tuple[dict[str, dict[str, pd.DataFrame]], str | None, dict[str, str]]:
    """Learning curves per configuration, a note when there are none, and run links.

    Curves: for each configuration and CURVE_METRICS metric, a frame (step, mean, std, n) over
    the runs of its counted trials (`counted` trial numbers; default every COMPLETE trial).
    Links only when `uri` is an http(s) tracking server (the MLflow UI's run page). How MLflow is
    read: `wno.platform.tracking.history`.
    """
    with_runs = trials[trials["mlflow_run"].notna()]
    if with_runs.empty:
        return {}, "no trial recorded an MLflow run, so there are no learning curves", {}
    problem = history.store_problem(uri)
    if problem:
        return {}, f"learning curves unavailable: {problem}", {}
    done = with_runs[with_runs["state"] == "COMPLETE"]
    if counted is not None:
        done = done[done["number"].isin(counted)]
    run_ids = list(dict.fromkeys(done["mlflow_run"]))
    try:
        histories, failed = history.metric_histories(uri, run_ids, CURVE_METRICS)
        links = history.run_links(uri, study, list(with_runs["mlflow_run"]))
    except Exception as e:  # noqa: BLE001 - any MLflow failure costs the curves, not the report
        return {}, f"learning curves unavailable: MLflow at {mask_url(uri)}: {one_line(e)}", {}
    curves = _curves(done, histories)
    note = None
    if not curves:
        note = (f"learning curves unavailable: the MLflow runs at {mask_url(uri)} hold no "
                f"per-epoch {' or '.join(CURVE_METRICS)}")
    elif failed:
        note = f"{failed} MLflow run(s) could not be read; their curves are left out"
    return curves, note, links


def _curves(done: pd.DataFrame, histories: history.Histories) -> dict[str, dict[str, pd.DataFrame]]:
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
