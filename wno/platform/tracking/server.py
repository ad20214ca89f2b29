"""The MLflow server process: started for `wno ui` and the tests, checked by `wno doctor` and the
report, stopped with every process it started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def server_env(backend_uri: str, allowed_hosts: str | None = None) -> dict[str, str]:
    """The environment of an `mlflow server`: the backend URI passed through it (not argv, where
    `ps` shows passwords), MLflow's job runner off (GenAI jobs: seven extra processes)."""
    env = dict(os.environ)
    env["MLFLOW_BACKEND_STORE_URI"] = backend_uri
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if allowed_hosts:
        env["MLFLOW_SERVER_ALLOWED_HOSTS"] = allowed_hosts
    return env


def start_server(backend_uri: str, *, host: str = "127.0.0.1", port: int = 5000,
                 artifacts: str | Path | None = None, log_path: str | Path | None = None,
                 workers: int = 1, allowed_hosts: str | None = None) -> subprocess.Popen:
    """Start `mlflow server` in its own process group (stop it with `stop_server`)."""
    if backend_uri.startswith("sqlite:///"):
        Path(backend_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    argv = ([str(mlflow_exe)] if mlflow_exe.exists() else [sys.executable, "-m", "mlflow"])
    argv += ["server", "--host", host, "--port", str(port), "--workers", str(workers)]
    if artifacts is not None:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        argv += ["--artifacts-destination", str(artifacts)]
    out = subprocess.DEVNULL
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(argv, env=server_env(backend_uri, allowed_hosts), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if out is not subprocess.DEVNULL:
            out.close()


def server_health(url: str, timeout: float = 3.0) -> str:
    """The body of the tracking server's `url`/health when it answers 200; raises otherwise
    (`requests.RequestException`). Credentials in the URL (https://user:pw@host) go as basic
    auth, as MLflow's own client sends them (urllib would refuse such a URL)."""
    import requests

    response = requests.get(url.rstrip("/") + "/health", timeout=timeout)
    response.raise_for_status()
    return response.text


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0) -> bool:
    """Poll `url`/health until it answers OK (True), the process exits or `timeout` s pass."""
    import requests

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            server_health(url, timeout=2)
            return True
        except requests.RequestException:
            pass
        time.sleep(0.25)
    return False


def stop_server(proc: subprocess.Popen, *, sig: int | None = None, timeout: float = 20.0) -> None:
    """Stop a process started with `start_new_session` and every process it started (SIGTERM,
    then SIGKILL after `timeout` s; `sig=SIGKILL` kills at once, like a crash)."""
    import signal

    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGTERM if sig is None else sig)
    except (ProcessLookupError, PermissionError):
        pass
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:  # children that left the group, or ignored SIGTERM
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
