"""`wno report --study NAME`: the study's report against the ViT baseline (HTML by default)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from wno.cli.common import UserError, user_errors
from wno.platform.defaults import REPORT_FORMATS as FORMATS


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    study: Annotated[str | None, typer.Option("--study", "-s", help="Study name.")] = None,
    storage: Annotated[str | None, typer.Option(
        help="Optuna storage URL (default: WNO_STORAGE, else wno-runs/optuna.db).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI for learning curves and run links "
             "(default: MLFLOW_TRACKING_URI, else wno-runs/mlflow.db).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help=f"One of {', '.join(FORMATS)}.")] = "html",
    out: Annotated[str | None, typer.Option(
        help="Output file ('-' for standard output; default wno-runs/reports/<study>.<ext>).")
    ] = None,
    curves: Annotated[bool, typer.Option(
        "--curves/--no-curves", help="Read learning curves from MLflow.")] = True,
) -> None:
    """Aggregate a study over seeds and compare it with its ViT baseline; print the file's path.

    Example: wno report --study levels --format md --out levels.md
    """
    with user_errors():
        if fmt not in FORMATS:
            raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        from wno.platform import defaults
        from wno.platform import report as rep

        if study is None:
            url = defaults.storage_url(storage)
            names = rep.study_names(url)
            raise UserError(f"--study NAME is required; {rep.known_studies_text(names)}")
        result = rep.build_report(study, storage, tracking_uri, curves=curves)
        if result.curves_note and curves:
            typer.secho(f"note: {result.curves_note}", err=True, fg=typer.colors.YELLOW)
        if out == "-":
            sys.stdout.write(rep.render(result, fmt))
            return
        path = rep.write_report(result, fmt, out)
        typer.echo(str(path))

