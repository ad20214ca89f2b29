"""MLflow store and client access: quiet, fail-fast MLflow; a local store laid out once; the
experiment of a study; finding a run again by its identity tags; how an MLflow error is classified.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from wno.base.errors import one_line
from wno.base.utils import mask_url
from wno.platform import defaults, schema

log = logging.getLogger(__name__)

# MLflow errors that retrying cannot fix (anything else, e.g. a refused connection, is retried).
_PERMANENT = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
              "INVALID_STATE", "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED",
              "FEATURE_DISABLED", "ENDPOINT_NOT_FOUND", "MALFORMED_REQUEST"}
_quieted = False
# What kind of experiment the MLflow UI should take a study for: model training, not GenAI.
KIND_TAG, KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"


def quiet_mlflow() -> None:
    """No URL banners, progress bars or INFO chatter from MLflow in worker logs, and HTTP calls
    that fail at once (our own queue retries them, saying so) instead of after MLflow's ~4
    minutes of silent retries. Settings the user made in the environment are kept."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    for key, value in (("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"),
                       ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
                       ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
                       ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
        os.environ.setdefault(key, value)
    import mlflow  # noqa: F401 - configures its loggers on import: quiet them afterwards

    for name in ("mlflow", "alembic"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def reason(e: BaseException) -> str:
    """One short line about an MLflow failure, secrets masked: a refused connection or a timeout
    said in two words (urllib3's own message is a paragraph)."""
    text = str(e)
    if "NewConnectionError" in text or "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return one_line(e, 200)


def permanent(e: BaseException) -> bool:
    """An error that retrying cannot fix (a refused request, a bug); anything that may pass
    (MLflow unreachable, overloaded, a locked database, a full disk) is retried."""
    import requests
    import sqlalchemy
    from mlflow.exceptions import MlflowException

    if isinstance(e, MlflowException):
        return e.error_code in _PERMANENT
    if isinstance(e, (FileNotFoundError, NotADirectoryError, PermissionError)):
        return True
    return not isinstance(e, (OSError, requests.exceptions.RequestException,
                              sqlalchemy.exc.OperationalError))



def artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment of a local store keeps artifacts: beside its SQLite file (for the
    default store, `defaults.artifact_location()`); None lets a tracking server decide."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        return (path.parent / "mlartifacts").resolve().as_uri()
    return defaults.artifact_location()


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, when the tracking URI is a server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{mask_url(tracking_uri.rstrip('/'))}/#/experiments/{experiment_id}/runs/{run_id}"


def experiment_url(ui: str, experiment_id: str) -> str:
    """The experiment's table of training runs in the MLflow UI at `ui` (a server's address).

    MLflow 3.17's UI opens an experiment on its GenAI overview of traces (empty here) unless the
    address asks for the machine-learning workflow; it ignores the experiment's kind tag, which
    is set anyway (`KIND_TAG`) for UIs that read it.
    """
    return (f"{mask_url(ui.rstrip('/'))}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning")


_prepared: set[str] = set()


def prepare_store(tracking_uri: str) -> None:
    """Create (or migrate) a local SQLite store once, under a file lock.

    MLflow lays out a new SQLite store with a few dozen schema migrations; two processes doing it
    at once (four workers starting on a fresh wno-runs/) break it for good ("table
    _alembic_tmp_tags already exists"). The first one through the lock lays it out, the others
    then find it ready.
    """
    if not tracking_uri.startswith("sqlite:///") or tracking_uri in _prepared:
        return
    import fcntl

    from mlflow.tracking import MlflowClient

    quiet_mlflow()
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f".{db.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _prepared.add(tracking_uri)


def client_for(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    prepare_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(client, name: str, artifact_location: str | None,
                      tags: dict[str, str] | None = None) -> str:
    """The id of experiment `name`, created (or restored, when deleted) if need be; an experiment
    created by an older wno gets the tags it lacks (e.g. its kind)."""
    from mlflow.exceptions import MlflowException

    tags = {KIND_TAG: KIND_TRAINING, **(tags or {})}
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location, tags=tags)
        except MlflowException as e:  # another worker created it meanwhile
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    for key, value in tags.items():
        if key not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def _quote(value: str) -> str | None:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def find_run(client, experiment_id: str, identity: dict[str, str]):
    """The oldest active run of the experiment carrying every `identity` tag, or None."""
    from mlflow.entities import ViewType

    terms = []
    for key, value in identity.items():
        quoted = _quote(value)
        if quoted is None:
            return None
        terms.append(f"tags.`{key}` = {quoted}")
    runs = client.search_runs([experiment_id], " and ".join(terms),
                              run_view_type=ViewType.ACTIVE_ONLY, max_results=10,
                              order_by=["attributes.start_time ASC"])
    return runs[0] if runs else None


def epoch_steps(client, run_id: str) -> set[int]:
    """The epochs for which the run already holds per-epoch metrics."""
    steps: set[int] = set()
    for key in schema.EPOCH_METRICS:
        steps.update(m.step for m in client.get_metric_history(run_id, key))
    return steps


