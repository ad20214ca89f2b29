"""A grid trial's factors as Optuna parameters, so Optuna's own tools see them.

`study.trials_dataframe()`, optuna-dashboard's parallel coordinates, slices and importances, and
`optuna.importance.get_param_importances` read a trial's params, and a grid trial's factors are
its params. Optuna checks that every trial of a study gives a parameter a compatible
distribution: the same kind, the same `log`, and for a categorical the same choices in the same
order (ranges may differ). A grid's own values would break that rule as soon as `wno study create
--update` adds one, so the distributions here do not depend on the grid:

- a bool field: categorical [False, True];
- a field with named choices (model_size, token_layout, mode, wavelet, ...): categorical over
  every value the field allows, as listed when the study was created (`space_for`), and kept in
  the study (`schema.PARAM_SPACE`) so that a later library with more choices still enqueues
  compatible trials;
- a number: an int or float range, linear, spanning the trial's own grid values (Optuna lets
  ranges differ between trials; importance evaluators read the values within them).

A baseline's params are the factors it reads (a ViT has no `wavelet` param); its name is not a
param.
"""

from __future__ import annotations

from typing import Any

from wno.base.datasets import DATASETS
from wno.base.sizes import MODEL_SIZES
from wno.base.variants import AUGMENTATIONS, MODELS, MODES, PRECISIONS, TOKEN_LAYOUTS
from wno.training.config import ATTENTION_PATHS, TrainConfig


def _wavelets() -> list[str]:
    from wno.base.wavelet_levels import available_wavelets

    return list(available_wavelets())


# Fields whose values are names, and every name each allows (as a function: the wavelet list
# comes from PyWavelets).
CHOICES = {
    "model": lambda: list(MODELS), "model_size": lambda: list(MODEL_SIZES),
    "token_layout": lambda: list(TOKEN_LAYOUTS), "attention": lambda: list(ATTENTION_PATHS),
    "augment": lambda: list(AUGMENTATIONS), "precision": lambda: list(PRECISIONS),
    "dataset": lambda: list(DATASETS), "wavelet": _wavelets, "mode": lambda: list(MODES),
}


def space_for(fields: list[str]) -> dict[str, list]:
    """The categorical choices of `fields` today ({field: choices}); numbers have none."""
    space = {}
    for field in fields:
        kind = TrainConfig.field_type(field)
        if kind is bool:
            space[field] = [False, True]
        elif field in CHOICES:
            space[field] = CHOICES[field]()
    return space


def trial_params(factors: dict[str, Any], space: dict[str, list], grid: dict[str, list]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, distributions) of a trial with `factors` (its FACTORS attr), `space` being the
    study's categorical choices. A value outside its stored choices (a name a newer library
    added) is left out of the params; it stays in FACTORS. A number's range spans every value
    of its factor in `grid`, not only the trial's own (the slice and parallel-coordinate views
    then share one axis per factor)."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    params, dists = {}, {}
    for field, value in factors.items():
        if field not in TrainConfig.field_names() or value is None:
            continue  # "baseline" (a name, not a field), an unset optional
        kind = TrainConfig.field_type(field)
        if field in space:
            if value in space[field] and not _bool_int_clash(value, space[field]):
                params[field], dists[field] = value, CategoricalDistribution(space[field])
        elif kind in (int, float):
            values = [v for v in grid.get(field, []) if isinstance(v, (int, float))] or [value]
            low, high = min(values + [value]), max(values + [value])
            params[field] = value
            dists[field] = (IntDistribution(low, high) if kind is int
                            else FloatDistribution(float(low), float(high)))
    return params, dists


def _bool_int_clash(value: Any, choices: list) -> bool:
    """Optuna stores a categorical by index of the first equal choice; True == 1 in Python, so a
    bool among ints (or an int among bools) would come back as the other type."""
    return any(type(c) is not type(value) and c == value for c in choices)
