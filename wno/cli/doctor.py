"""`wno doctor`: check that this machine can train, queue and track (exit 1 when it cannot)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)


def doctor_command(
    data_dir: str = typer.Option(None, help="Data folder to check.",
                                 show_default="$WNO_DATA_DIR or ./data"),
    storage: str = typer.Option(None, help="Study storage URL.",
                                show_default="$WNO_STORAGE or sqlite:///wno-runs/optuna.db"),
    tracking_uri: str = typer.Option(None, help="MLflow tracking URI.",
                                     show_default="$MLFLOW_TRACKING_URI or "
                                     "sqlite:///wno-runs/mlflow.db"),
    quick: bool = typer.Option(False, help="Skip the model and data checks (for health checks)."),
    no_data: bool = typer.Option(False, "--no-data", help="Skip the data set check."),
) -> None:
    """Versions, devices, a wavelet round trip and forward pass per device, data, storage, tracking."""
    from wno.platform.doctor import FAIL, OK, run_checks
    from wno.platform import defaults

    colours = {OK: typer.colors.GREEN, FAIL: typer.colors.RED}
    failed = 0
    for check in run_checks(data_dir=defaults.data_dir(data_dir),
                            storage=defaults.storage_url(storage),
                            tracking=defaults.tracking_uri(tracking_uri), quick=quick,
                            data=not no_data):
        failed += check.status == FAIL
        mark = typer.style(f"{check.status.upper():4}", fg=colours.get(check.status,
                                                                        typer.colors.YELLOW))
        typer.echo(f"{mark} {check.name:28} {check.detail}")
    if failed:
        typer.secho(f"{failed} check(s) failed: fix them before training or running workers.",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo("all checks passed")
