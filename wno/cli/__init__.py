"""The `wno` command line: a thin layer over the library.

Each module in this package defines `register(app)` and adds its commands; heavy libraries
(torch, optuna, mlflow) are imported inside the commands so `wno --help` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="wno",
    help="Wavelet Transformer (W-MSA) training and ablation studies: train, compare, queue "
    "studies, run workers, track in MLflow, report against ViT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _mod.startswith("_") and _mod != "common":
        importlib.import_module(f"{__name__}.{_mod}").register(app)


def main() -> None:
    app()
