"""Optuna storage access: the one module that opens a storage, loads studies, and works beneath
Optuna's public API.

The queue (`wno.platform.queue`) needs a few operations Optuna 5 does not offer with the
guarantees a work queue needs (see docs/design.md, "Optuna 5.0"): an atomic pop of a WAITING
trial, heartbeats recorded outside `study.optimize()`, a stale trial failed and its retry added in
one transaction, many trials enqueued in one transaction. Those are written here against Optuna's
ORM tables (`optuna.storages._rdb.models`), a private API. They were written for the Optuna
versions in `OPTUNA_VERSIONS`; opening a storage with another major version is refused with a
message, so an upgrade fails in one place, loudly, instead of corrupting a queue.

Every other module reads Optuna through `Store`: the queue for its semantics, the report to read a
study, the CLI to list studies.

SQLite is made fit for a few local workers: WAL journal, a 60 s busy timeout, every transaction
taken as ``BEGIN IMMEDIATE`` (one writer at a time, no stale read snapshots) and retries around
whole transactions. PostgreSQL is the path to many machines (``FOR UPDATE SKIP LOCKED`` pops).

Example:
    >>> store = Store("sqlite:///wno-runs/optuna.db")       # doctest: +SKIP
    >>> store.wno_studies()                                  # doctest: +SKIP
    {1: 'smoke'}
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from wno.base.errors import Unavailable, UserError, one_line
from wno.base.utils import mask_url
from wno.platform import defaults, schema

log = logging.getLogger(__name__)

OPTUNA_VERSIONS = (5,)  # major versions whose ORM tables this module was written against
SQLITE_BUSY_TIMEOUT = 60.0
T = TypeVar("T")


# --- URLs -------------------------------------------------------------------------------------------
def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (SQLAlchemy would look for psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///` URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite:///") or url.startswith("sqlite:///:memory:"):
        return None
    return Path(url[len("sqlite:///"):].split("?")[0])


def check_optuna_version() -> None:
    """Refuse an Optuna whose private tables this module was not written for."""
    import optuna

    major = int(optuna.__version__.split(".")[0])
    if major not in OPTUNA_VERSIONS:
        raise UserError(f"wno's study queue works beneath Optuna's API and was written for Optuna "
                        f"{', '.join(f'{v}.x' for v in OPTUNA_VERSIONS)}; this environment has "
                        f"Optuna {optuna.__version__}: install optuna>=5,<6")


# --- retries ----------------------------------------------------------------------------------------
def _transient(e: BaseException) -> bool:
    import optuna
    import sqlalchemy as sa

    return isinstance(e, (sa.exc.OperationalError, optuna.exceptions.StorageInternalError)) or (
        isinstance(e, sa.exc.DBAPIError) and e.connection_invalidated)


def retrying(fn: Callable[[], T], attempts: int = 6, what: str = "storage call") -> T:
    """Run `fn`, retrying transient database errors (locked, deadlock, connection lost).

    `fn` must be a whole transaction: a failed one cannot be reused.
    """
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:
            if not _transient(e) or i == attempts - 1:
                raise
            delay = min(10.0, 0.2 * 2 ** i) * (0.5 + random.random())
            log.warning("%s failed (%s); retrying in %.1f s", what, one_line(e), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def utcnow() -> dt.datetime:
    """Naive UTC, as Optuna stores trial datetimes."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _naive(t: dt.datetime) -> dt.datetime:
    """The database's now() next to its stored timestamps (Optuna's convention)."""
    return t.replace(tzinfo=None) if isinstance(t, dt.datetime) else t


# --- opening ----------------------------------------------------------------------------------------
def open_storage(url: str | None = None, *, create: bool = False, read_only: bool = False):
    """An `optuna.storages.RDBStorage` for `url` (default: `defaults.storage_url()`).

    `create=False` refuses a SQLite file that does not exist yet (a typo would otherwise become an
    empty storage). `read_only=True` (the report) never creates Optuna's tables, so reading cannot
    turn some other database into an Optuna one. Raises `Unavailable` (exit 3) when the database
    cannot be reached and `UserError` for a URL that is not a storage URL or a database that holds
    no Optuna tables; messages show the URL with its password masked.
    """
    import optuna
    import sqlalchemy as sa
    from sqlalchemy import event

    check_optuna_version()
    url = normalize_url(defaults.storage_url(url))
    shown = mask_url(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not url.startswith(("sqlite://", "postgresql", "mysql")):
        raise UserError(f"{shown} is not a storage URL; expected sqlite:///path/to/file.db or "
                        f"postgresql+psycopg://user:password@host:5432/database")
    path = sqlite_path(url)
    if path is not None:
        if not path.exists() and not create:
            raise Unavailable(f"no study storage at {shown} (the file does not exist): create a "
                              f"study first (`wno study create FILE`), or point --storage / "
                              f"{defaults.ENV_STORAGE} at the right database")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        if read_only:  # plain transactions: a reader takes no write lock and changes nothing
            engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
        else:
            _prepare_sqlite(path)
            engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT,
                                              "isolation_level": None, "check_same_thread": False}}
    elif url.startswith("postgresql"):
        engine_kwargs = {"pool_pre_ping": True, "pool_size": 4, "max_overflow": 4,
                         "connect_args": {"connect_timeout": 10}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                             skip_table_creation=read_only)
    except (sa.exc.DBAPIError, optuna.exceptions.StorageInternalError) as e:
        raise _storage_error(e, shown) from None
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as e:
        raise UserError(f"cannot open the study storage {shown}: {one_line(e)}; expected "
                        f"sqlite:///path/optuna.db or postgresql+psycopg://user:***@host/db") \
            from None
    except RuntimeError as e:  # schema written by another Optuna version
        raise UserError(f"cannot use the study storage {shown}: {one_line(e)}") from None
    if path is not None and not read_only:
        # Every transaction takes SQLite's write lock up front: no "database is locked" on a
        # read-then-write, and the conditional updates below see the latest state.
        event.listen(storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return storage


def _prepare_sqlite(path: Path) -> None:
    """WAL journal: readers outside our engine (the report, optuna-dashboard) never block the
    workers' writes, and commits are cheaper. The mode is stored in the file: set once."""
    import sqlite3

    if not path.exists() and not path.parent.is_dir():
        return  # RDBStorage reports the missing folder
    con = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def _storage_error(e: BaseException, shown: str) -> UserError:
    """A missing table means "not an Optuna storage"; anything else, "cannot reach it"."""
    while getattr(e, "orig", None) is None and (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__  # Optuna wraps SQLAlchemy's error
    if re.search(r"no such table|relation \S+ does not exist|UndefinedTable", str(e)):
        return UserError(f"{shown} holds no Optuna studies (it has no Optuna tables); "
                         f"{known_studies_text([])}")
    return Unavailable(f"cannot reach the study storage {shown}: {one_line(e)}")


def known_studies_text(names: list[str]) -> str:
    return "known studies: " + (", ".join(names) if names else "none")


# --- the store ----------------------------------------------------------------------------------------
class Store:
    """One Optuna storage and the operations wno does on it. Cheap; one per process or thread."""

    def __init__(self, url: str | None = None, *, create: bool = False, read_only: bool = False):
        self.url = normalize_url(defaults.storage_url(url))
        self.shown_url = mask_url(self.url)
        self.storage = open_storage(self.url, create=create, read_only=read_only)
        self.engine = self.storage.engine

    # --- studies -------------------------------------------------------------------------------
    def study_names(self) -> list[str]:
        """Every study in the storage (wno's or not), sorted."""
        import optuna

        try:
            return sorted(optuna.get_all_study_names(self.storage))
        except Exception as e:  # noqa: BLE001 - a read-only store of another database
            import sqlalchemy as sa

            if isinstance(e, (sa.exc.DBAPIError, optuna.exceptions.StorageInternalError)):
                raise _storage_error(e, self.shown_url) from None
            raise

    def load_study(self, name: str, **kwargs: Any):
        """The Optuna study `name`; an unknown name lists the studies the storage holds."""
        import optuna

        known = self.study_names()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"no study named {name!r} in {self.shown_url}{hint}; "
                            f"{known_studies_text(known)}")
        return optuna.load_study(study_name=name, storage=self.storage, **kwargs)

    def wno_studies(self, names: Sequence[str] | None = None) -> dict[int, str]:
        """{study_id: name} of the wno studies (those with a stored definition), optionally some."""
        import sqlalchemy as sa

        S, A = self._table("StudyModel"), self._table("StudyUserAttributeModel")
        query = (sa.select(S.c.study_id, S.c.study_name)
                 .join(A, sa.and_(A.c.study_id == S.c.study_id, A.c.key == schema.SPEC)))
        if names:
            query = query.where(S.c.study_name.in_(list(names)))
        return dict(self._read(query, "listing studies"))

    def trial_counts(self, study_ids: Sequence[int]) -> dict[int, Counter]:
        """{study_id: Counter(state name -> trials)}."""
        import sqlalchemy as sa

        T = self._table("TrialModel")
        query = (sa.select(T.c.study_id, T.c.state, sa.func.count())
                 .where(T.c.study_id.in_(list(study_ids))).group_by(T.c.study_id, T.c.state))
        counts: dict[int, Counter] = {sid: Counter() for sid in study_ids}
        for sid, state, n in (self._read(query, "counting trials") if study_ids else []):
            counts[sid][state.name] += n
        return counts

    def study_of(self, trial_id: int) -> int:
        import sqlalchemy as sa

        T = self._table("TrialModel")
        return self._read(sa.select(T.c.study_id).where(T.c.trial_id == trial_id),
                          "finding a trial's study")[0][0]

    # --- trials --------------------------------------------------------------------------------
    def enqueue(self, study_id: int, templates: list) -> None:
        """Add every template trial in one transaction: a failed call leaves nothing half-added."""
        def do() -> None:
            with self.study_locked(study_id) as session:
                for template in templates:
                    self.add_trial(session, study_id, template)

        retrying(do, what="enqueueing trials")

    def pop(self, study_ids: Sequence[int], heartbeat_interval: float, attrs: dict[str, Any]
            ) -> tuple[int, int] | None:
        """Move the oldest WAITING trial of `study_ids` to RUNNING, write its first heartbeat and
        `attrs`, all in one transaction; (trial_id, study_id), or None when nothing waits.

        Exactly one caller wins each trial: the UPDATE is conditional on the state still being
        WAITING and judged by its row count (PostgreSQL also skips rows another pop has locked).
        """
        return retrying(lambda: self._pop(list(study_ids), heartbeat_interval, attrs),
                        what="popping a trial")

    def _pop(self, study_ids: list[int], interval: float, attrs: dict[str, Any]
             ) -> tuple[int, int] | None:
        import sqlalchemy as sa
        from optuna.trial import TrialState

        T, U = self._table("TrialModel"), self._table("TrialUserAttributeModel")
        with self.engine.begin() as conn:
            for _ in range(8):  # a lost race moves on to the next waiting trial
                query = (sa.select(T.c.trial_id, T.c.study_id)
                         .where(T.c.study_id.in_(study_ids), T.c.state == TrialState.WAITING)
                         .order_by(T.c.trial_id).limit(1))
                if self.engine.dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                row = conn.execute(query).first()
                if row is None:
                    return None
                trial_id, study_id = row
                if self._claim(conn, trial_id):
                    self._write_heartbeat(conn, trial_id, interval)
                    for key, value in attrs.items():
                        set_attr(conn, U, trial_id, key, value)
                    return trial_id, study_id
        return None

    def _claim(self, conn, trial_id: int) -> bool:
        """WAITING -> RUNNING, only if the trial is still WAITING: True when this call won."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        T = self._table("TrialModel")
        return conn.execute(
            sa.update(T).where(T.c.trial_id == trial_id, T.c.state == TrialState.WAITING)
            .values(state=TrialState.RUNNING, datetime_start=utcnow())).rowcount == 1

    def _write_heartbeat(self, conn, trial_id: int, interval: float) -> None:
        import sqlalchemy as sa

        H, A = self._table("TrialHeartbeatModel"), self._table("TrialSystemAttributeModel")
        conn.execute(sa.delete(H).where(H.c.trial_id == trial_id))
        conn.execute(sa.insert(H).values(trial_id=trial_id, heartbeat=sa.func.now()))
        set_attr(conn, A, trial_id, schema.HEARTBEAT_INTERVAL, float(interval))

    def heartbeat(self, trial_id: int) -> bool:
        """Refresh the trial's heartbeat; False when it is no longer RUNNING."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        T, H = self._table("TrialModel"), self._table("TrialHeartbeatModel")

        def beat() -> bool:
            with self.engine.begin() as conn:
                state = conn.execute(sa.select(T.c.state).where(T.c.trial_id == trial_id)).scalar()
                if state != TrialState.RUNNING:
                    return False
                conn.execute(sa.update(H).where(H.c.trial_id == trial_id)
                             .values(heartbeat=sa.func.now()))
                return True

        return retrying(beat, attempts=3, what="heartbeat")

    def hand_back(self, trial_id: int) -> bool:
        """RUNNING -> WAITING, same trial (the next pop writes a fresh heartbeat)."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        T, H = self._table("TrialModel"), self._table("TrialHeartbeatModel")

        def back() -> bool:
            with self.engine.begin() as conn:
                n = conn.execute(sa.update(T).where(T.c.trial_id == trial_id,
                                                    T.c.state == TrialState.RUNNING)
                                 .values(state=TrialState.WAITING, datetime_start=None)).rowcount
                if n == 1:
                    conn.execute(sa.delete(H).where(H.c.trial_id == trial_id))
                return n == 1

        return retrying(back, what="handing a trial back")

    def running_ages(self, study_ids: Sequence[int] | None = None,
                     trial_ids: Sequence[int] | None = None, conn=None,
                     default_interval: float = 15.0) -> dict[int, tuple[float, float]]:
        """{trial_id: (seconds since its last heartbeat, its heartbeat interval)}, RUNNING only,
        measured by the database's clock. `conn`: inside the caller's transaction."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        T, H = self._table("TrialModel"), self._table("TrialHeartbeatModel")
        A = self._table("TrialSystemAttributeModel")
        query = (sa.select(T.c.trial_id, H.c.heartbeat, A.c.value_json)
                 .join(H, H.c.trial_id == T.c.trial_id)
                 .outerjoin(A, sa.and_(A.c.trial_id == T.c.trial_id,
                                       A.c.key == schema.HEARTBEAT_INTERVAL))
                 .where(T.c.state == TrialState.RUNNING))
        if study_ids is not None:
            query = query.where(T.c.study_id.in_(list(study_ids)))
        if trial_ids is not None:
            query = query.where(T.c.trial_id.in_(list(trial_ids)))

        def read(c):
            return _naive(c.execute(sa.select(sa.func.now())).scalar()), c.execute(query).all()

        if conn is not None:
            now, rows = read(conn)
        else:
            def fresh():
                with self.engine.begin() as c:
                    return read(c)

            now, rows = retrying(fresh, what="reading heartbeats")
        return {tid: ((now - _naive(beat)).total_seconds(),
                      json.loads(interval) if interval else default_interval)
                for tid, beat, interval in rows}

    def fail_many(self, study_id: int, trial_ids: Sequence[int] | None, error: str,
                  states: Sequence[str]) -> int:
        """Fail the trials of `study_id` in `states` (all, or those in `trial_ids`) with `error`
        kept in `schema.ERROR`; how many were failed."""
        import sqlalchemy as sa
        from optuna.trial import TrialState
        from sqlalchemy.orm import Session

        T, U = self._table("TrialModel"), self._table("TrialUserAttributeModel")
        H = self._table("TrialHeartbeatModel")
        wanted = [TrialState[s] for s in states]

        def do() -> int:
            with Session(self.engine) as session, session.begin():
                query = sa.select(T.c.trial_id).where(T.c.study_id == study_id,
                                                      T.c.state.in_(wanted))
                if trial_ids is not None:
                    query = query.where(T.c.trial_id.in_(list(trial_ids)))
                if self.engine.dialect.name == "postgresql":
                    query = query.with_for_update()
                ids = list(session.execute(query).scalars())
                if not ids:
                    return 0
                session.execute(sa.update(T).where(T.c.trial_id.in_(ids), T.c.state.in_(wanted))
                                .values(state=TrialState.FAIL, datetime_complete=utcnow()))
                session.execute(sa.delete(H).where(H.c.trial_id.in_(ids)))
                for tid in ids:
                    set_attr(session, U, tid, schema.ERROR, error)
                return len(ids)

        return retrying(do, what="failing trials")

    # --- building blocks of one transaction (the queue's retries) --------------------------------
    @contextlib.contextmanager
    def study_locked(self, study_id: int) -> Iterator[Any]:
        """A session in a transaction holding the study's row lock: Optuna numbers a new trial by
        counting the study's trials, so whoever adds one must hold it."""
        from optuna.storages._rdb import models
        from sqlalchemy.orm import Session

        with Session(self.engine) as session, session.begin():
            models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            yield session

    def fail_running(self, session, trial_id: int) -> bool:
        """RUNNING -> FAIL inside `session`; False when the trial was no longer RUNNING."""
        import sqlalchemy as sa
        from optuna.trial import TrialState

        T = self._table("TrialModel")
        return session.execute(sa.update(T).where(T.c.trial_id == trial_id,
                                                  T.c.state == TrialState.RUNNING)
                               .values(state=TrialState.FAIL,
                                       datetime_complete=utcnow())).rowcount == 1

    def set_user_attr(self, session, trial_id: int, key: str, value: Any) -> None:
        set_attr(session, self._table("TrialUserAttributeModel"), trial_id, key, value)

    def count_user_attr(self, session, study_id: int, key: str, value: Any) -> int:
        """How many trials of `study_id` hold user attr `key` == `value`."""
        import sqlalchemy as sa

        T, U = self._table("TrialModel"), self._table("TrialUserAttributeModel")
        return session.execute(
            sa.select(sa.func.count()).select_from(U).join(T, T.c.trial_id == U.c.trial_id)
            .where(T.c.study_id == study_id, U.c.key == key,
                   U.c.value_json == json.dumps(value))).scalar()

    def add_trial(self, session, study_id: int, template) -> int:
        """Add a trial made with `optuna.trial.create_trial` inside `session`; its number."""
        new = self.storage._get_prepared_new_trial(study_id, template, session)
        session.flush()
        return new.number

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _table(name: str):
        from optuna.storages._rdb import models

        return getattr(models, name).__table__

    def _read(self, query, what: str) -> list:
        def read():
            with self.engine.begin() as conn:
                return conn.execute(query).all()

        return retrying(read, what=what)


def set_attr(conn, table, trial_id: int, key: str, value: Any) -> None:
    """Write a (trial, key) -> JSON value row of `table` (user or system attributes)."""
    import sqlalchemy as sa

    conn.execute(sa.delete(table).where(table.c.trial_id == trial_id, table.c.key == key))
    conn.execute(sa.insert(table).values(trial_id=trial_id, key=key,
                                         value_json=json.dumps(value)))
