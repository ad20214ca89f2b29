"""Reading runs back for the report: per-epoch metric histories and the runs' pages in the UI.

A tracking server is read through `MlflowClient`, several requests at a time. A tracking
*database* (sqlite:///, postgresql://, ...) is read with one read-only SQL query of MLflow's
`metrics` table instead, and this is the only place wno queries MLflow's tables: the client needs
one call per run and metric (about 15 s for 1,000 runs, BENCHMARKS.md, report rows), while the
query reads every point in one round trip. The columns read (run_uuid, key, step, value,
timestamp, is_nan) have been MLflow's since 1.x; a store whose schema differs fails the query,
and the report then says the curves are unavailable, never that they are empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from wno.base.errors import one_line
from wno.base.utils import mask_url
from wno.platform.tracking.server import server_health
from wno.platform.tracking.store import run_url

Histories = dict[tuple[str, str], list[tuple[int, float]]]  # (run id, metric) -> [(step, value)]


def is_database(uri: str) -> bool:
    """A tracking URI naming a database rather than a server or a folder."""
    return uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql")


def store_problem(uri: str) -> str | None:
    """Why MLflow at `uri` cannot be read (quickly, without creating anything), or None."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            server_health(uri)
            return None
        except requests.RequestException as e:
            return f"the tracking server {mask_url(uri)} is unreachable ({one_line(e)})"
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            return f"there is no MLflow store at {path}"
    if uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        if not path.exists():
            return f"there is no MLflow store at {path}"
    return None


def metric_histories(uri: str, run_ids: Sequence[str], metrics: Sequence[str]
                     ) -> tuple[Histories, int]:
    """Every point of `metrics` of `run_ids` (a re-logged step: its latest value), and how many
    runs could not be read."""
    if is_database(uri):
        return _histories_sql(uri, list(run_ids), list(metrics)), 0
    from mlflow.tracking import MlflowClient

    return _histories_api(MlflowClient(tracking_uri=uri), list(run_ids), list(metrics))


def run_links(uri: str, experiment: str, run_ids: Sequence[str]) -> dict[str, str]:
    """{run id: its page in the MLflow UI}, when `uri` is a tracking server (else empty)."""
    if not uri.startswith(("http://", "https://")):
        return {}
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    if found is None:
        return {}
    return {r: run_url(uri, found.experiment_id, r) for r in run_ids}


def _histories_sql(uri: str, run_ids: list[str], metrics: list[str]) -> Histories:
    import sqlalchemy as sa

    if uri.startswith("sqlite:///"):  # opened read-only: the report never writes a store
        uri = f"sqlite:///file:{Path(uri.removeprefix('sqlite:///')).resolve()}?mode=ro&uri=true"
    engine = sa.create_engine(uri)
    query = sa.text("SELECT run_uuid, key, step, value, timestamp, is_nan FROM metrics "
                    "WHERE key IN :keys AND run_uuid IN :runs").bindparams(
        sa.bindparam("keys", expanding=True), sa.bindparam("runs", expanding=True))
    latest: dict[tuple[str, str, int], tuple[int, float]] = {}
    try:
        with engine.connect() as conn:
            for i in range(0, len(run_ids), 500):
                rows = conn.execute(query, {"keys": metrics, "runs": run_ids[i:i + 500]})
                for run, key, step, value, stamp, is_nan in rows:
                    k = (run, key, int(step))
                    if k not in latest or stamp >= latest[k][0]:  # a re-logged epoch: the latest
                        latest[k] = (stamp, math.nan if is_nan else float(value))
    finally:
        engine.dispose()
    out: Histories = {}
    for (run, key, step), (_, value) in sorted(latest.items()):
        out.setdefault((run, key), []).append((step, value))
    return out


def _histories_api(client, run_ids: list[str], metrics: list[str]) -> tuple[Histories, int]:
    from concurrent.futures import ThreadPoolExecutor

    def fetch(key: tuple[str, str]):
        try:
            history = sorted(client.get_metric_history(*key), key=lambda m: (m.step, m.timestamp))
            return key, {m.step: m.value for m in history}  # a re-logged epoch: the latest
        except Exception:  # noqa: BLE001 - a deleted or unreadable run only loses its curve
            return key, None

    keys = [(r, m) for r in run_ids for m in metrics]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(pool.map(fetch, keys))
    failed = len({r for (r, _), h in results.items() if h is None})
    return {k: sorted(h.items()) for k, h in results.items() if h}, failed
