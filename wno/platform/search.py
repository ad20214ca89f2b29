"""A search study's space: TrainConfig field -> Optuna distribution, with its sampler and pruner.

Samplers and pruners are named variants (`SAMPLERS`, `PRUNERS`), imported from Optuna only when a
search study needs one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wno.training.config import TrainConfig


@dataclass
class SearchSpace:
    """A validated `search` block: TrainConfig field -> distribution, plus sampler and pruner."""

    n_trials: int
    params: dict[str, dict[str, Any]]  # field -> {"choices": [...]} or {"low", "high", "log", "step"}
    sampler: dict[str, Any]  # {"name": ..., options...}
    pruner: dict[str, Any]

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions keyed by TrainConfig field."""
        import optuna.distributions as D

        out = {}
        for field, p in self.params.items():
            if "choices" in p:
                out[field] = D.CategoricalDistribution(p["choices"])
            elif TrainConfig.field_type(field) is int:
                out[field] = D.IntDistribution(p["low"], p["high"], log=p["log"], step=p["step"] or 1)
            else:
                out[field] = D.FloatDistribution(p["low"], p["high"], log=p["log"], step=p["step"])
        return out

    def make_sampler(self, seed_offset: int = 0):
        """A fresh sampler; a fixed seed is offset per trial so that workers do not all agree."""
        options = {k: v for k, v in self.sampler.items() if k != "name"}
        if options.get("seed") is not None:
            options["seed"] = options["seed"] + seed_offset
        return SAMPLERS[self.sampler["name"]]()(**options)

    def make_pruner(self):
        options = {k: v for k, v in self.pruner.items() if k != "name"}
        return PRUNERS[self.pruner["name"]]()(**options)


def _optuna(module: str, name: str):
    def get():
        import importlib

        return getattr(importlib.import_module(f"optuna.{module}"), name)

    return get


SAMPLERS = {"tpe": _optuna("samplers", "TPESampler"), "random": _optuna("samplers", "RandomSampler"),
            "qmc": _optuna("samplers", "QMCSampler"), "gp": _optuna("samplers", "GPSampler")}
PRUNERS = {"median": _optuna("pruners", "MedianPruner"),
           "percentile": _optuna("pruners", "PercentilePruner"),
           "hyperband": _optuna("pruners", "HyperbandPruner"),
           "successive_halving": _optuna("pruners", "SuccessiveHalvingPruner"),
           "none": _optuna("pruners", "NopPruner")}
