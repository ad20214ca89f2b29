"""What a report is: the tables and notes the renderers turn into HTML, Markdown, CSV, LaTeX and
JSON. Plain data (pandas frames); built by `wno.platform.report.build`, read by the renderers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from wno.platform import schema
from wno.platform.report.optuna_views import OptunaViews

BUDGET_KEYS = ("dataset", "epochs", "train_size")
# flops counts the attention pairs a model needs (with the kernel: its support); executed_flops
# those its attention path computed (wno.training.measure): both, since they differ.
COSTS = ("params", "flops", "executed_flops", "tokens", "wall_time", "throughput")
CURVE_METRICS = ("val_acc", "train_loss")
TRIAL_COLUMNS = ["number", "state", "role", "group", "baseline", "seed", "factors", "config",
                 "objective", "test_acc", *COSTS, "host", "device", "error", "retry_of",
                 "mlflow_run", "started", "completed"]
STATS = ("n", "mean", "std", "ci_low", "ci_high")
CONFIG_COLUMNS = ["group", "role", "baseline", "factors", "config", "trials", "seeds_done",
                  "seeds_missing", "waiting", "running", "fail", "pruned",
                  *(f"obj_{k}" for k in STATS), *(f"test_{k}" for k in STATS), *COSTS,
                  "obj_values", "test_values", "trial_numbers"]


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
    optuna: OptunaViews | None = None  # what Optuna computes (search studies, params recorded)
    fixed: dict = field(default_factory=dict)  # settings every trial shares (the study's base)

    @property
    def columns(self) -> list[str]:
        """A configuration's columns in the tables: the grid's factors, or a search's parameters."""
        if self.kind == "search":
            return list((self.spec.get("search") or {}).get("params") or {})
        return self.factors

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
