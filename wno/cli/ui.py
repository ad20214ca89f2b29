"""`wno ui`: the MLflow UI on the project's tracking store (and optuna-dashboard when installed).

    wno ui                      # http://127.0.0.1:5000 on wno-runs/mlflow.db
    wno ui --port 5001 --storage postgresql://wno@db/wno

A researcher opens the study's experiment (named after the study), sees one run per
configuration and seed, ticks the runs to compare and presses Compare (parallel coordinates,
metric curves side by side); the run's `wno.*` tags lead back to the Optuna trial.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from wno.cli.common import UserError, user_errors

DEFAULT_PORT, DEFAULT_DASHBOARD_PORT = 5000, 8080
START_TIMEOUT = 300.0  # mlflow server takes ~10 s on an idle machine, a minute on a busy one


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_command)


def ui_command(
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535,
                             help="Port of the MLflow UI."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (127.0.0.1: "
                             "this machine only; reach it from elsewhere through an SSH tunnel)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking store "
                                     "(default: $MLFLOW_TRACKING_URI, else "
                                     "sqlite:///wno-runs/mlflow.db). A tracking server "
                                     "(http://...) already is a UI: nothing is started."),
    storage: str = typer.Option(None, "--storage", help="Optuna storage for optuna-dashboard "
                                "(default: $WNO_STORAGE, else sqlite:///wno-runs/optuna.db)."),
    dashboard: bool = typer.Option(True, "--dashboard/--no-dashboard",
                                   help="Also start optuna-dashboard when it is installed."),
    dashboard_port: int = typer.Option(DEFAULT_DASHBOARD_PORT, "--dashboard-port", min=1,
                                       max=65535, help="Port of optuna-dashboard."),
) -> None:
    """Browse runs in the MLflow UI (and the studies in optuna-dashboard); Ctrl-C stops both."""
    from wno.platform import defaults
    from wno.base.utils import mask_url

    with user_errors():
        uri = defaults.tracking_uri(tracking_uri)
        storage_url = defaults.storage_url(storage)
        services = []  # (name, process, address)
        try:
            if uri.startswith(("http://", "https://")):
                typer.echo(f"MLflow UI         {mask_url(uri)}  (the tracking server; nothing "
                           "to start)")
                ui = uri
            else:
                _start_mlflow(uri, host, port, services)
                ui = _url("127.0.0.1" if host in ("0.0.0.0", "::") else host, port)
            _print_experiments(uri, ui)
            if dashboard:
                _start_dashboard(storage_url, host, dashboard_port, services)
            if not services:
                return
            for name, proc, address, log_path in services:
                typer.echo(f"{name:<17} {address}  (log: {log_path})")
            if host not in ("127.0.0.1", "localhost", "::1"):
                typer.secho(f"warning: listening on {host}: anyone who reaches this machine can "
                            "read (and change) the runs", fg=typer.colors.YELLOW, err=True)
            typer.echo("Compare runs: open a study's experiment, tick its runs, press Compare. "
                       "Ctrl-C stops.")
            _wait(services)
        except KeyboardInterrupt:
            typer.echo("stopping")
        finally:
            _stop_all(services)


def _print_experiments(uri: str, ui: str) -> None:
    """Each study's table of training runs (MLflow 3's UI would open on its GenAI overview)."""
    from wno.base.errors import one_line
    from wno.platform import tracking

    try:
        experiments = tracking.client_for(uri).search_experiments()
    except Exception as e:  # noqa: BLE001 - the links are a convenience; the UI still runs
        typer.echo(f"(experiments not listed: {one_line(e)})")
        return
    for exp in sorted(experiments, key=lambda e: e.name):
        if exp.name != "Default":
            typer.echo(f"  {exp.name:<15} {tracking.experiment_url(ui, exp.experiment_id)}")


def _port_free(host: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # as servers bind: a port left in TIME_WAIT by a stopped UI is free, a listener is not
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _log_file(name: str) -> Path:
    from wno.platform import defaults

    folder = defaults.home() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


class ServiceDied(UserError):
    exit_code = 1


def _start_mlflow(uri: str, host: str, port: int, services: list) -> None:
    from wno.platform import tracking
    from wno.base.utils import mask_secrets

    if not _port_free(host, port):
        raise UserError(f"port {port} on {host} is in use (another MLflow UI?); choose another "
                        "with --port")
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.exists():
            typer.echo(f"note: {db} does not exist yet; the UI starts on an empty store")
    # A file URI, percent-encoded (a space is %20): decoded by MLflow's own helper.
    from mlflow.utils.file_utils import local_file_uri_to_path

    artifacts = Path(local_file_uri_to_path(tracking.artifact_root(uri)))
    log_path = _log_file("mlflow-ui.log")
    typer.echo(f"starting the MLflow UI on {mask_secrets(uri)} ...")
    tracking.prepare_store(uri)  # a new SQLite store is laid out once, not by two at a time
    proc = tracking.start_server(uri, host=host, port=port, artifacts=artifacts, log_path=log_path)
    services.append(("MLflow UI", proc, _url(host, port), log_path))  # stopped on any exit
    if not tracking.wait_healthy(_url("127.0.0.1" if host in ("0.0.0.0", "::") else host, port),
                                 proc, START_TIMEOUT):
        raise ServiceDied(f"the MLflow UI did not start (exit code {proc.poll()}); its log "
                          f"{log_path} ends with:\n{mask_secrets(_tail(log_path))}")


def _start_dashboard(storage_url: str, host: str, port: int, services: list) -> None:
    """optuna-dashboard, when installed, on the study storage (the URL goes through the
    environment, so `ps` does not show its password)."""
    import importlib.util
    import os
    import subprocess
    import sys

    from wno.base.utils import mask_secrets

    if importlib.util.find_spec("optuna_dashboard") is None:
        typer.echo("Optuna dashboard  not installed (pip install optuna-dashboard); skipped")
        return
    if not _port_free(host, port):
        raise UserError(f"port {port} on {host} is in use; choose another with --dashboard-port")
    log_path = _log_file("optuna-dashboard.log")
    env = dict(os.environ, WNO_DASHBOARD_STORAGE=storage_url)
    code = ("import os, optuna_dashboard; optuna_dashboard.run_server("
            f"os.environ['WNO_DASHBOARD_STORAGE'], host={host!r}, port={port})")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    services.append(("Optuna dashboard", proc, _url(host, port), log_path))
    if not _wait_port(host, port, proc, 60):
        raise ServiceDied(f"optuna-dashboard did not start; its log {log_path} ends with:\n"
                          f"{mask_secrets(_tail(log_path))}")


def _wait_port(host: str, port: int, proc, timeout: float) -> bool:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.25)
    return False


def _wait(services) -> None:
    """Until Ctrl-C (KeyboardInterrupt) or SIGTERM, or until a service dies."""
    import signal

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    # SIGINT too: a shell starting us in the background hands us SIGINT ignored.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            for name, proc, _, log_path in services:
                if proc.poll() is not None:
                    raise ServiceDied(f"{name} exited (code {proc.returncode}); see {log_path}")
            time.sleep(0.5)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop_all(services) -> None:
    from wno.platform.tracking import stop_server

    for _, proc, _, _ in services:
        stop_server(proc)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
