"""What Optuna already computes for a study, taken from Optuna: parameter importances, the
optimisation history, the objective against each parameter, the best trial.

Optuna users expect these views of a search study (optuna-dashboard shows the same ones). They are
computed on an in-memory copy of the study holding only its completed model trials with
parameters, so the ViT baselines (no parameters), running and failed trials never confuse
Optuna's importance evaluator; the copy numbers them 0, 1, ... in trial order, which is the x axis
of its optimisation history. The figures are Optuna's own plotly figures, kept as plain dicts
for the HTML renderer. The report keeps its own statistics (t-intervals over seeds, Welch, Holm)
where they answer the question better: a grid study's comparison with the baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from wno.base.errors import one_line
from wno.platform import schema

DIGITS = 4  # significant digits of a sampled value as shown (Optuna stores full floats)


@dataclass
class OptunaViews:
    params: list[str]  # the parameters, in the order Optuna ranks them (most important first)
    importances: dict[str, float]  # Optuna's get_param_importances (they sum to 1)
    evaluator: str  # the importance evaluator Optuna used
    best: dict[str, Any] | None  # number, value, params (rounded), test_acc, group
    trials: int  # completed model trials the views are made from
    figures: dict[str, dict] = field(default_factory=dict)  # name -> plotly figure dict
    notes: list[str] = field(default_factory=list)


def rounded(value: Any) -> Any:
    """A sampled value as a reader wants it: floats to `DIGITS` significant digits."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.{DIGITS}g}")
    return value


def optuna_views(study, objective: str, direction: str) -> OptunaViews | None:
    """Optuna's views of `study`'s completed model trials with parameters (None when none has
    any, e.g. a grid study whose trials carry no Optuna params)."""
    import optuna
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.params and t.user_attrs.get(schema.ROLE, schema.ROLE_MODEL) == schema.ROLE_MODEL
            and t.value is not None and math.isfinite(t.value)]
    if not done:
        return None
    copy = optuna.create_study(direction=direction)  # in memory
    copy.add_trials(done)
    views = OptunaViews(params=sorted({p for t in done for p in t.params}), importances={},
                        evaluator="", best=None, trials=len(done))
    best = done[copy.best_trial.number]  # the copy numbers its trials 0, 1, ... in this order
    views.best = {"number": best.number, "value": best.value,
                  "params": {k: rounded(v) for k, v in best.params.items()},
                  "test_acc": (best.user_attrs.get(schema.METRICS) or {}).get("test_acc"),
                  "group": best.user_attrs.get(schema.GROUP)}
    views.figures["history"] = _figure(views, "optimization history",
                                       lambda: optuna.visualization.plot_optimization_history(
                                           copy, target_name=objective))
    views.figures["slice"] = _figure(views, "objective against each parameter",
                                     lambda: optuna.visualization.plot_slice(
                                         copy, target_name=objective))
    if len(done) < 2:
        views.notes.append("parameter importances need at least 2 completed trials")
    else:
        try:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # Optuna 5's default
            views.importances = optuna.importance.get_param_importances(copy, evaluator=evaluator)
            views.evaluator = type(evaluator).__name__
            views.params = list(views.importances)
            views.figures["importances"] = _figure(
                views, "parameter importances",
                lambda: optuna.visualization.plot_param_importances(
                    copy, evaluator=evaluator, target_name=objective))
        except (ValueError, RuntimeError) as e:
            views.notes.append(f"Optuna could not compute parameter importances: {one_line(e)}")
    views.figures = {k: v for k, v in views.figures.items() if v is not None}
    return views


def _figure(views: OptunaViews, what: str, make) -> dict | None:
    try:
        return make().to_plotly_json()
    except Exception as e:  # noqa: BLE001 - a figure Optuna cannot draw costs that figure only
        views.notes.append(f"Optuna could not draw the {what}: {one_line(e)}")
        return None
