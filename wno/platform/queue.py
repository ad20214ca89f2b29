"""The study queue: an Optuna RDB storage (SQLite or PostgreSQL) used as a work queue.

A study is an Optuna study whose user attrs hold its definition (`schema.SPEC`); each trial to run
is an Optuna trial in state WAITING whose user attrs hold its configuration (`schema.CONFIG`).
Workers pop WAITING trials, heartbeat while training and tell the result. Names of every stored
attribute are in `wno.platform.schema`.

What Optuna alone does not give us, and how this module adds it (see docs/design.md, "Optuna 5.0";
the operations beneath Optuna's API are in `wno.platform.storage`):

- Exactly-once pops. `pop()` moves one WAITING trial to RUNNING with a conditional
  ``UPDATE ... WHERE state = 'WAITING'`` judged by its row count, inside one transaction that
  also writes the first heartbeat. PostgreSQL picks the row with ``FOR UPDATE SKIP LOCKED``;
  SQLite runs every transaction of our engine as ``BEGIN IMMEDIATE`` (one writer at a time, no
  stale read snapshots), so Optuna's own read-then-write updates are serialised as well. A grid
  worker never samples: a search study's budget is enqueued up front as `n_trials` empty slots
  that the worker that pops one fills by sampling, so `n_trials` holds across any number of
  workers.
- Heartbeats with ask/tell. `heartbeat()` refreshes the trial's row in Optuna's heartbeat table
  and says whether the trial is still RUNNING (a cancelled or stale-failed trial stops its
  worker). Each popped trial records its heartbeat interval; `sweep_stale()` fails trials
  silent for `GRACE_FACTOR` intervals and, in the same transaction, re-adds each as a WAITING
  trial with the same params and user attrs, `schema.RETRY_OF` set and Optuna's retry history
  (what `RetryHeartbeatStaleTrialCallback` does, made atomic). The retry trains from the
  checkpoint of the trial it replaces: checkpoints are keyed by (study identity, config hash).
- A study identity. A name does not identify a study: the same name may be created in another
  storage, or again after a delete, with checkpoints of the old one still on disk. `create()`
  writes a random id (`STUDY_UID`) into the new study's user attrs; checkpoints live in
  `checkpoint_folder(root, name, uid, config_hash)` and record the uid, and a worker resumes
  only its own (`wno.training.train(..., lineage=uid)`). A study created before ids existed gets
  one the first time a worker or `study create` asks for it (`study_uid`); its older
  checkpoints, in `<root>/<name>/<config hash>`, cannot be told apart from another same-named
  study's, so they are never resumed.
- SQLite made fit for a few local workers (`wno.platform.storage`). PostgreSQL is the path to
  many machines.

One concern, about 650 lines: what studies and trials mean to the queue (identity, create, pop,
retry, cancel, status). How each operation reaches the database is `wno.platform.storage`'s; the
status records are here because only the queue builds them.

Example:
    >>> q = StudyQueue("sqlite:///wno-runs/optuna.db", create=True)
    >>> q.create(load_spec("studies/smoke.yaml")).added      # doctest: +SKIP
    6
    >>> claim = q.pop(host="gpu01", device="cuda:0 (A100)")   # doctest: +SKIP
    >>> q.heartbeat(claim.trial_id)                           # doctest: +SKIP
    True
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wno.base.errors import UserError, one_line
from wno.platform import schema
from wno.platform.spec import SpecError, StudySpec, TrialPlan, stored_spec
from wno.platform.storage import Store, retrying
from wno.training.config import TrainConfig

log = logging.getLogger(__name__)

# Trial system attr: the heartbeat interval (s) of the worker running the trial, so that whoever
# sweeps judges staleness by the interval that worker promised, not by its own.
DEFAULT_HEARTBEAT = 15.0  # seconds between heartbeats
GRACE_FACTOR = 4  # a trial silent for this many intervals is stale
MIN_GRACE = 3.0  # SQLite's CURRENT_TIMESTAMP has 1 s resolution
MAX_STALE_RETRIES = 3  # a trial that keeps killing its worker stops being retried automatically
STORED_ERROR_LIMIT = 2000  # characters of an error kept on a failed trial
# Run-specific user attrs a retry does not inherit (MLFLOW_RUN is kept: the retry resumes the run).
_NOT_INHERITED = (schema.ERROR, schema.METRICS, schema.HOST, schema.DEVICE)
UID_LENGTH = 16  # hex digits; a config hash has 12, so the two kinds of folder never mix
ERROR_CANCELLED = "cancelled by `wno study cancel`"
ERROR_REMOVED = "removed from the study definition by `wno study create --update`"


# --- what the queue returns ------------------------------------------------------------------------
@dataclass
class Claim:
    """A trial popped by a worker: it is RUNNING and this worker owns it until it tells."""

    study_name: str
    trial_id: int
    number: int
    user_attrs: dict[str, Any]


@dataclass
class CreateResult:
    study: str
    created: bool  # a new study (False: it existed)
    planned: int  # trials in the definition
    added: int  # trials enqueued by this call
    existing: int  # trials of the definition already in the storage
    removed: int = 0  # waiting trials no longer in an updated definition
    dry_run: bool = False


@dataclass
class TrialInfo:
    """One trial as `study status` shows it."""

    number: int
    state: str
    role: str
    group: str
    seed: int | None
    host: str | None = None
    device: str | None = None
    started: dt.datetime | None = None
    completed: dt.datetime | None = None
    heartbeat_age: float | None = None  # seconds since the last heartbeat (RUNNING trials)
    value: float | None = None
    error: str | None = None
    retry_of: int | None = None
    retried_by: int | None = None

    @property
    def duration(self) -> float | None:
        if self.started and self.completed:
            return (self.completed - self.started).total_seconds()
        return None


@dataclass
class StudyStatus:
    name: str
    kind: str
    description: str
    objective: str
    planned: int
    done: int  # configurations with a COMPLETE or PRUNED trial
    counts: dict[str, int]
    trials: list[TrialInfo]
    retried_now: list[tuple[int, int | None]] = field(default_factory=list)  # from this sweep
    notes: list[str] = field(default_factory=list)  # the definition's notes

    @property
    def running(self) -> list[TrialInfo]:
        return [t for t in self.trials if t.state == "RUNNING"]

    @property
    def failures(self) -> list[TrialInfo]:
        return [t for t in self.trials if t.state == "FAIL"]

    @property
    def mean_duration(self) -> float | None:
        durations = [t.duration for t in self.trials if t.state == "COMPLETE" and t.duration]
        return sum(durations) / len(durations) if durations else None

    @property
    def eta(self) -> float | None:
        """Seconds until the waiting and running trials are done, at the current pace (as many
        workers as trials running now, each trial taking the mean completed trial's time)."""
        mean, waiting = self.mean_duration, self.counts.get("WAITING", 0)
        if waiting + len(self.running) == 0:
            return 0.0
        if mean is None:
            return None
        now = dt.datetime.now()
        left = sum(max(0.0, mean - (now - t.started).total_seconds()) if t.started else mean
                   for t in self.running)
        return (left + waiting * mean) / max(1, len(self.running))


@dataclass
class StudySummary:
    name: str
    kind: str
    description: str
    counts: dict[str, int]


# --- the queue ---------------------------------------------------------------------------------------
class StudyQueue:
    """Studies and trials in one storage. Cheap to create; one per process (or per thread)."""

    def __init__(self, url: str | None = None, *, create: bool = False):
        self.store = Store(url, create=create)
        self.url, self.shown_url = self.store.url, self.store.shown_url
        self.storage = self.store.storage  # optuna's RDBStorage
        self._specs: dict[tuple[int, str], StudySpec] = {}

    # --- studies -------------------------------------------------------------------------------
    def study_ids(self, names: Sequence[str] | None = None) -> dict[int, str]:
        """{study_id: name} of the wno studies (those with a stored definition), optionally some."""
        return self.store.wno_studies(names)

    def study_id(self, name: str) -> int:
        """The id of the wno study `name`, or a `UserError` naming the studies there are."""
        ids = self.study_ids([name])
        if ids:
            return next(iter(ids))
        known = sorted(self.study_ids().values())
        raise UserError(f"no study named {name!r} in {self.shown_url}"
                        + (f"; studies: {', '.join(known)}" if known else " (it holds no studies)"))

    def spec(self, name: str) -> StudySpec:
        """The stored definition of study `name` (validated again; cached per definition)."""
        return self._stored_spec(self.study_id(name), name)

    def _stored_spec(self, sid: int, name: str) -> StudySpec:
        attrs = self.storage.get_study_user_attrs(sid)
        defaults = attrs.get(schema.DEFAULTS)
        key = (sid, attrs.get(schema.SPEC_HASH, ""), json.dumps(defaults, sort_keys=True))
        if key not in self._specs:
            self._specs[key] = stored_spec(
                attrs, lambda: self.storage.get_all_trials(sid, deepcopy=False),
                source=f"stored study {name!r}")
        return self._specs[key]

    def load_study(self, name: str, spec: StudySpec | None = None, sampler_seed: int = 0):
        """An `optuna.Study` (with the spec's sampler and pruner for search studies)."""
        spec = spec or self.spec(name)
        kwargs = {}
        if spec.search is not None:
            kwargs = {"sampler": spec.search.make_sampler(sampler_seed),
                      "pruner": spec.search.make_pruner()}
        return self.store.load_study(name, **kwargs)

    def create(self, spec: StudySpec, *, update: bool = False, dry_run: bool = False
               ) -> CreateResult:
        """Create study `spec.name` and enqueue its trials; a rerun adds only what is missing.

        A different definition under an existing name is refused unless `update=True`: then the
        new definition replaces the stored one, its new trials are enqueued, and waiting trials it
        no longer contains are cancelled (finished trials are kept).
        """
        import optuna

        existing = self._existing_study(spec.name)
        if existing is None:
            trials = []
        else:
            self._check_compatible(existing, spec, update)
            trials = self.storage.get_all_trials(existing, deepcopy=False)
        missing, present = _missing(spec, trials)
        obsolete = _obsolete(spec, trials) if existing is not None else []
        result = CreateResult(spec.name, existing is None, len(spec.plan), len(missing),
                              present, len(obsolete), dry_run)
        if dry_run:
            return result
        if existing is None:
            try:
                study = optuna.create_study(study_name=spec.name, storage=self.storage,
                                        direction=spec.objective.direction)
            except optuna.exceptions.DuplicatedStudyError:
                raise UserError(f"study {spec.name!r} was created by someone else just now; "
                                f"run the command again") from None
            sid = study._study_id
            self.storage.set_study_user_attr(sid, schema.STUDY_UID, new_study_uid())
        else:
            sid = existing
            self._ensure_uid(sid)
        # The definition last: a study holding it holds the others (see _existing_study).
        for key, value in ((schema.SPEC_HASH, spec.spec_hash()), (schema.KIND, spec.kind),
                           (schema.DEFAULTS, TrainConfig.defaults()),
                           (schema.SPEC, spec.to_dict())):
            self.storage.set_study_user_attr(sid, key, value)
        if missing:
            space = self._param_space(sid, spec)
            self.store.enqueue(sid, [_waiting_trial(t, space, spec.grid) for t in missing])
        if obsolete:
            self.store.fail_many(sid, obsolete, ERROR_REMOVED, states=("WAITING",))
        return result

    def _param_space(self, sid: int, spec: StudySpec) -> dict[str, list]:
        """The study's categorical choices of its factors as Optuna params: kept from its
        creation (Optuna requires the same choices for every trial of a study), extended with
        the fields a `--update` adds."""
        from wno.platform.params import space_for

        attrs = self.storage.get_study_user_attrs(sid)
        stored = dict(attrs.get(schema.PARAM_SPACE) or {})
        added = space_for([f for f in spec.grid if f not in stored])
        if added or schema.PARAM_SPACE not in attrs:
            stored.update(added)
            self.storage.set_study_user_attr(sid, schema.PARAM_SPACE, stored)
        return stored

    def _existing_study(self, name: str) -> int | None:
        try:
            sid = self.storage.get_study_id_from_name(name)
        except KeyError:
            return None
        attrs = self.storage.get_study_user_attrs(sid)
        if schema.SPEC in attrs:
            return sid
        # A create stopped between Optuna's create_study and the definition (written last): an
        # empty study with at most our other attributes. Finish it rather than refuse it forever.
        if set(attrs) <= {schema.SPEC_HASH, schema.KIND, schema.STUDY_UID, schema.PARAM_SPACE,
                          schema.DEFAULTS} and \
                not self.storage.get_all_trials(sid, deepcopy=False):
            return sid
        raise UserError(f"{self.shown_url} already holds an Optuna study named {name!r} that "
                        f"wno did not create; choose another name")

    def _check_compatible(self, sid: int, spec: StudySpec, update: bool) -> None:
        attrs = self.storage.get_study_user_attrs(sid)
        stored_hash, pinned = attrs.get(schema.SPEC_HASH), {}
        # Parsed again only when its defaults may differ from today's (a plan can be thousands
        # of trials); otherwise the stored hash says it all.
        if schema.SPEC in attrs and attrs.get(schema.DEFAULTS) != TrainConfig.defaults():
            try:  # the stored definition under the defaults it was stored with
                stored = self._stored_spec(sid, spec.name)
                stored_hash, pinned = stored.spec_hash(), stored.pinned
            except SpecError:
                pass  # no longer valid: compared by its stored hash
        if stored_hash == spec.spec_hash():
            return
        old = attrs.get(schema.SPEC, {})
        today = TrainConfig.defaults()
        changes = "; ".join(_diff(old, spec.to_dict()) + [
            f"default {k}: {_short(v)} when it was stored -> {_short(today[k])} today"
            for k, v in pinned.items()]
        ) or "definition changed"
        direction = self.storage.get_study_directions(sid)[0].name.lower()
        if schema.SPEC not in attrs:  # an interrupted create (see _existing_study)
            if direction != spec.objective.direction:
                raise UserError(f"study {spec.name!r} exists, empty, and {direction}s; a study "
                                f"that {spec.objective.direction}s needs a new name")
            return
        if attrs.get(schema.KIND) != spec.kind or direction != spec.objective.direction:
            raise UserError(f"study {spec.name!r} exists as a {attrs.get(schema.KIND)} study "
                            f"that {direction}s; a {spec.kind} study that "
                            f"{spec.objective.direction}s needs a new name ({changes})")
        if not update:
            raise UserError(f"study {spec.name!r} already exists with a different definition "
                            f"({changes}); use a new name, or pass --update to enqueue the new "
                            f"trials (finished ones are kept, waiting ones no longer in the file "
                            f"are cancelled)")

    def study_uid(self, name: str, *, mint: bool = True) -> str | None:
        """The identity of study `name` in this storage (what keys its checkpoints).

        A study created before identities existed has none: with `mint` it gets one now (None
        without). Two processes minting at once may each see its own id until the storage holds
        the later one; a trial started meanwhile then trains without resuming, never from
        another study's checkpoint.
        """
        sid = self.study_id(name)
        return self._ensure_uid(sid) if mint else self.storage.get_study_user_attrs(sid).get(
            schema.STUDY_UID)

    def _ensure_uid(self, sid: int) -> str:
        uid = self.storage.get_study_user_attrs(sid).get(schema.STUDY_UID)
        if uid:
            return uid
        retrying(lambda: self.storage.set_study_user_attr(sid, schema.STUDY_UID, new_study_uid()),
                 what="recording a study's identity")
        return self.storage.get_study_user_attrs(sid)[schema.STUDY_UID]  # whoever wrote last wins

    def summaries(self) -> list[StudySummary]:
        """Every wno study with its trial counts by state."""
        ids = self.study_ids()
        counts = self.store.trial_counts(list(ids))
        out = []
        for sid, name in sorted(ids.items(), key=lambda item: item[1]):
            attrs = self.storage.get_study_user_attrs(sid)
            out.append(StudySummary(name, attrs.get(schema.KIND, "?"),
                                    attrs.get(schema.SPEC, {}).get("description", ""),
                                    dict(counts[sid])))
        return out

    def status(self, name: str, *, sweep: bool = True) -> StudyStatus:
        """Counts, running trials with heartbeat ages, failures; sweeps stale trials first."""
        spec = self.spec(name)
        sid = self.study_id(name)
        retried = self.sweep_stale([name]) if sweep else []
        trials = self.storage.get_all_trials(sid, deepcopy=False)
        ages = self._heartbeat_ages([t._trial_id for t in trials if t.state.name == "RUNNING"])
        retried_by = {t.user_attrs[schema.RETRY_OF]: t.number for t in trials
                      if schema.RETRY_OF in t.user_attrs}
        infos = [_trial_info(t, ages.get(t._trial_id), retried_by.get(t.number)) for t in trials]
        done = {_key(t) for t in trials if t.state.name in ("COMPLETE", "PRUNED")}
        return StudyStatus(name, spec.kind, spec.description,
                           f"{spec.objective.direction} {spec.objective.metric}",
                           planned=len(spec.plan), done=len(done),
                           counts=dict(Counter(t.state.name for t in trials)), trials=infos,
                           retried_now=retried, notes=list(spec.notes))

    def cancel(self, name: str) -> int:
        """Fail every waiting and running trial of `name` (running ones stop at their next
        heartbeat); `retry` puts them back."""
        sid = self.study_id(name)
        return self.store.fail_many(sid, None, ERROR_CANCELLED, states=("WAITING", "RUNNING"))

    def retry(self, name: str) -> list[tuple[int, int]]:
        """Put failed trials (not yet retried, still in the definition) back into the queue.

        Returns (failed trial number, new trial number) pairs.
        """
        spec = self.spec(name)
        sid = self.study_id(name)
        trials = self.storage.get_all_trials(sid, deepcopy=False)
        retried = {t.user_attrs[schema.RETRY_OF] for t in trials if schema.RETRY_OF in t.user_attrs}
        covered = {_key(t) for t in trials if t.state.name != "FAIL"}
        wanted = _wanted(spec)
        out = []
        for t in trials:
            key = _key(t)
            if t.state.name != "FAIL" or t.number in retried or key in covered or \
                    _dropped(spec, t, wanted):
                continue
            new = retrying(lambda t=t: self._add_retry(sid, t, fail_first=False),
                           what="re-enqueueing a failed trial")
            if new is not None:
                out.append((t.number, new))
                covered.add(key)
        return out

    def delete(self, name: str) -> str | None:
        """Delete study `name` and its trials; returns its identity (its checkpoints' key), None
        for a study that never had one."""
        import optuna

        uid = self.study_uid(name, mint=False)
        retrying(lambda: optuna.delete_study(study_name=name, storage=self.storage),
                 what="deleting a study")
        return uid

    # --- trials ----------------------------------------------------------------------------------
    def pop(self, studies: Sequence[str] | None = None, *, host: str = "", device: str = "",
            heartbeat_interval: float = DEFAULT_HEARTBEAT) -> Claim | None:
        """Move the oldest WAITING trial of `studies` (default: every wno study) to RUNNING.

        Exactly one caller gets each trial, on SQLite and on PostgreSQL, however many workers
        pop at once. Returns None when nothing is waiting. Never creates a trial.
        """
        ids = self.study_ids(studies)
        if not ids:
            return None
        where = {schema.HOST: host, schema.DEVICE: device}
        popped = self.store.pop(list(ids), heartbeat_interval, where)
        if popped is None:
            return None
        trial_id, study_id = popped
        trial = self.storage.get_trial(trial_id)
        return Claim(ids[study_id], trial_id, trial.number, dict(trial.user_attrs))

    def heartbeat(self, trial_id: int) -> bool:
        """Record that the trial's worker is alive; False when the trial is no longer RUNNING
        (cancelled, or failed as stale): its worker must stop."""
        return self.store.heartbeat(trial_id)

    def state(self, trial_id: int) -> str:
        return self.storage.get_trial(trial_id).state.name

    def set_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)

    def hand_back(self, trial_id: int) -> bool:
        """RUNNING -> WAITING, same trial and config (a stopped worker gives its trial back)."""
        return self.store.hand_back(trial_id)

    def fail(self, trial_id: int, error: str) -> bool:
        """RUNNING -> FAIL with the error kept (one line, secrets masked)."""
        import optuna
        from optuna.trial import TrialState

        def do() -> bool:
            try:
                self.storage.set_trial_user_attr(trial_id, schema.ERROR,
                                                 one_line(error, STORED_ERROR_LIMIT))
                return self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                return False

        return retrying(do, what="failing a trial")

    def finish(self, study, claim: Claim, *, value: float | None, metrics: dict[str, Any],
               pruned: bool = False) -> bool:
        """Record the metrics and tell the trial COMPLETE (or PRUNED); False if it is no longer
        RUNNING (cancelled or failed as stale meanwhile; a retry then finishes it)."""
        import optuna
        from optuna.trial import TrialState

        trial_id, number = claim.trial_id, claim.number

        def do() -> bool:
            try:
                self.storage.set_trial_user_attr(trial_id, schema.METRICS, metrics)
                if pruned:
                    study.tell(number, state=TrialState.PRUNED)
                else:
                    study.tell(number, value)
                return True
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
                if self.state(trial_id) == "RUNNING":
                    raise
                return False

        return retrying(do, what="telling a result")

    # --- stale trials --------------------------------------------------------------------------
    def sweep_stale(self, studies: Sequence[str] | None = None) -> list[tuple[int, int | None]]:
        """Fail RUNNING trials whose worker went silent and re-enqueue each (atomically).

        Returns (failed number, retry number or None when retries are exhausted). Any number of
        processes may sweep at once: each stale trial is failed and retried by exactly one.
        """
        ids = self.study_ids(studies)
        out = []
        for trial_id in (self._stale_ids(list(ids)) if ids else []):
            trial = self.storage.get_trial(trial_id)
            new = retrying(lambda t=trial: self._add_retry(self.store.study_of(t._trial_id), t,
                                                            fail_first=True),
                           what="retrying a stale trial")
            if new is not False:
                out.append((trial.number, new))
        return out

    def _stale_ids(self, study_ids: list[int]) -> list[int]:
        ages = self._running_ages(study_ids)
        return [tid for tid, (age, interval) in ages.items() if age > grace(interval)]

    def _running_ages(self, study_ids: list[int] | None = None, trial_ids: list[int] | None = None,
                      conn=None) -> dict[int, tuple[float, float]]:
        """{trial_id: (seconds since its last heartbeat, its heartbeat interval)}, RUNNING only."""
        return self.store.running_ages(study_ids, trial_ids, conn=conn,
                                       default_interval=DEFAULT_HEARTBEAT)

    def _heartbeat_ages(self, trial_ids: list[int]) -> dict[int, float]:
        if not trial_ids:
            return {}
        return {tid: age for tid, (age, _) in self._running_ages(trial_ids=trial_ids).items()}

    def _add_retry(self, study_id: int, trial, *, fail_first: bool) -> int | None | bool:
        """In one transaction: (optionally) fail the stale RUNNING `trial`, then add its retry.

        Returns the retry's number, None when retries are exhausted, False when another process
        got there first (the trial was no longer RUNNING / already retried).
        """
        import optuna
        from optuna.trial import TrialState

        history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
        with self.store.study_locked(study_id) as session:
            if fail_first:
                age, interval = self._running_ages(trial_ids=[trial._trial_id], conn=session).get(
                    trial._trial_id, (0.0, DEFAULT_HEARTBEAT))
                if age <= grace(interval) or not self.store.fail_running(session, trial._trial_id):
                    return False
                host = trial.user_attrs.get(schema.HOST) or "unknown host"
                error = f"worker lost: no heartbeat for {age:.0f} s (host {host})"
                if len(history) > MAX_STALE_RETRIES:
                    error += (f"; retried {MAX_STALE_RETRIES} times already, not again "
                              f"(`wno study retry` puts it back)")
                self.store.set_user_attr(session, trial._trial_id, schema.ERROR, error)
                if len(history) > MAX_STALE_RETRIES:
                    return None
            elif self.store.count_user_attr(session, study_id, schema.RETRY_OF, trial.number):
                return False
            user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in _NOT_INHERITED}
            user_attrs[schema.RETRY_OF] = trial.number
            template = optuna.trial.create_trial(
                state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
                user_attrs=user_attrs,
                system_attrs={"failed_trial": history[0], "retry_history": history})
            return self.store.add_trial(session, study_id, template)


# --- helpers ---------------------------------------------------------------------------------------
def new_study_uid() -> str:
    """A fresh study identity: random hex, so no other storage or later study shares it."""
    return uuid.uuid4().hex[:UID_LENGTH]


def checkpoint_folder(root: str | Path, study: str, uid: str, config_hash: str | None = None
                      ) -> Path:
    """Where a study's checkpoints live: `<root>/<study>/<uid>/<config hash>/` (the study's
    folder without a config hash). Same-named studies of other storages sit side by side.

    >>> checkpoint_folder("ckpt", "smoke", "0123456789abcdef", "a1b2c3d4e5f6").as_posix()
    'ckpt/smoke/0123456789abcdef/a1b2c3d4e5f6'
    """
    folder = Path(root) / study / uid
    return folder / config_hash if config_hash else folder


def legacy_checkpoint_folder(root: str | Path, study: str, config_hash: str) -> Path:
    """Where checkpoints lived before studies had identities: `<root>/<study>/<config hash>/`."""
    return Path(root) / study / config_hash


def grace(interval: float) -> float:
    """Seconds of silence after which a trial heartbeating every `interval` s is stale."""
    return max(GRACE_FACTOR * float(interval), MIN_GRACE)


def _key(trial) -> str:
    """What a trial stands for: its config hash, or (a search slot not sampled yet) its number.

    A retried slot inherits nothing to hash until sampled, so it stands for the slot it retries.
    """
    attrs = trial.user_attrs
    if schema.CONFIG_HASH in attrs:
        return attrs[schema.CONFIG_HASH]
    return f"slot:{attrs.get(schema.RETRY_OF, trial.number)}"


def _waiting_trial(plan: TrialPlan, space: dict[str, list], grid: dict[str, list]):
    """An Optuna WAITING trial for `plan`, its factors as Optuna params (`wno.platform.params`:
    distributions that do not depend on the grid, so `--update` keeps them compatible)."""
    import optuna
    from optuna.trial import TrialState

    from wno.platform.params import trial_params

    params, dists = trial_params(plan.factors, space, grid)
    return optuna.trial.create_trial(state=TrialState.WAITING, params=params,
                                     distributions=dists,
                                     user_attrs=plan.user_attrs())


def _missing(spec: StudySpec, trials: list) -> tuple[list[TrialPlan], int]:
    """Planned trials with no trial at all yet (any state), and how many are present."""
    keys = Counter(t.user_attrs.get(schema.CONFIG_HASH) for t in trials
                   if schema.RETRY_OF not in t.user_attrs)
    slots = sum(1 for t in trials if schema.RETRY_OF not in t.user_attrs
                and t.user_attrs.get(schema.ROLE) == schema.ROLE_MODEL and spec.search is not None)
    missing, present = [], 0
    for plan in spec.plan:
        if plan.config is None:  # a search slot: count them
            if slots > 0:
                slots, present = slots - 1, present + 1
            else:
                missing.append(plan)
        elif keys.get(plan.key):
            present += 1
        else:
            missing.append(plan)
    return missing, present


def _wanted(spec: StudySpec) -> set[str]:
    """Config hashes of every configuration `spec` plans (search slots have none yet)."""
    return {p.key for p in spec.plan if p.config is not None}


def _dropped(spec: StudySpec, trial, wanted: set[str]) -> bool:
    """Whether `trial` stands for a configuration the definition no longer contains (`wanted`:
    `_wanted(spec)`). A search study's slots never do; its baselines and a grid's trials can."""
    attrs = trial.user_attrs
    return (schema.CONFIG_HASH in attrs and attrs[schema.CONFIG_HASH] not in wanted
            and (spec.search is None or attrs.get(schema.ROLE) == schema.ROLE_BASELINE))


def _obsolete(spec: StudySpec, trials: list) -> list[int]:
    """WAITING trials an updated definition no longer contains (see `_dropped`)."""
    wanted = _wanted(spec)
    return [t._trial_id for t in trials if t.state.name == "WAITING" and _dropped(spec, t, wanted)]


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Readable differences between two stored definitions, e.g. 'base.epochs: 3 -> 5'."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(dict.fromkeys([*old, *new])):
            if key == "description" and not path:
                continue
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub} added")
            elif key not in new:
                out.append(f"{sub} removed")
            else:
                out += _diff(old[key], new[key], sub)
        return out
    return [] if old == new else [f"{path}: {_short(old)} -> {_short(new)}"]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _trial_info(t, heartbeat_age: float | None, retried_by: int | None) -> TrialInfo:
    a = t.user_attrs
    return TrialInfo(number=t.number, state=t.state.name, role=a.get(schema.ROLE, "?"),
                     group=a.get(schema.GROUP) or "(search slot, not sampled yet)",
                     seed=a.get(schema.SEED), host=a.get(schema.HOST), device=a.get(schema.DEVICE),
                     started=t.datetime_start, completed=t.datetime_complete,
                     heartbeat_age=heartbeat_age, value=t.value, error=a.get(schema.ERROR),
                     retry_of=a.get(schema.RETRY_OF), retried_by=retried_by)
