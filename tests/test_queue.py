"""The study queue on SQLite and PostgreSQL: create, pop exactly once, heartbeats, stale trials,
hand-back, cancel, retry, status. No training here (see test_worker.py for that)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter

import pytest

from platform_helpers import (REPO, TINY, backdate_heartbeat, check_popped_once,  # noqa: F401
                              pg_database, pop_until_empty, run_in_processes, storage_url,
                              sweep_once, trials, unique)
from wno.cli.common import Unavailable, UserError
from wno.platform import schema
from wno.base.errors import one_line
from wno.platform.queue import STORED_ERROR_LIMIT, StudyQueue
from wno.platform.spec import parse_spec

# Silent for longer than a lost worker's trials may be (four 15 s heartbeat intervals; the rule
# itself is pinned in test_queue_timing.py): backdated in the database, not waited for.
LOST_FOR = 65.0


def grid_spec(name: str, n_seeds: int = 2, **grid) -> object:
    grid = grid or {"lr": [1e-3, 2e-3]}
    return parse_spec({"name": name, "base": dict(TINY), "grid": grid, "seeds": n_seeds,
                       "baselines": {"vit_big": {"patch_size": 8, "lr": 1e-3}}})


def states(url: str, name: str) -> Counter:
    return Counter(t.state.name for t in trials(url, name))


# --- create --------------------------------------------------------------------------------------------
def test_create_enqueues_the_plan_once(storage_url):
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique())
    first = q.create(spec)
    assert first.created and first.added == len(spec.plan) == 2 * 2 + 2
    again = q.create(spec)
    assert not again.created and again.added == 0 and again.existing == len(spec.plan)
    stored = trials(storage_url, spec.name)
    assert len(stored) == len(spec.plan)
    assert {t.user_attrs[schema.CONFIG_HASH] for t in stored} == {p.key for p in spec.plan}
    assert all(t.state.name == "WAITING" for t in stored)
    one = next(t for t in stored if t.user_attrs[schema.ROLE] == schema.ROLE_MODEL)
    assert set(one.user_attrs) >= {schema.CONFIG, schema.CONFIG_HASH, schema.ROLE, schema.FACTORS,
                                   schema.GROUP, schema.SEED}
    assert one.user_attrs[schema.FACTORS] == {"lr": one.user_attrs[schema.CONFIG]["lr"]}
    summary = {s.name: s for s in q.summaries()}[spec.name]
    assert summary.kind == "grid" and summary.counts == {"WAITING": len(spec.plan)}


def test_a_rerun_adds_only_what_is_missing(storage_url):
    q = StudyQueue(storage_url, create=True)
    name = unique()
    q.create(grid_spec(name, n_seeds=1))
    # the same study with one more seed: only the new seed's trials are added (after --update)
    bigger = grid_spec(name, n_seeds=2)
    with pytest.raises(UserError, match="already exists with a different definition.*seeds"):
        q.create(bigger)
    assert len(trials(storage_url, name)) == 3
    r = q.create(bigger, update=True)
    assert (r.added, r.existing, r.removed) == (3, 3, 0)
    assert len(trials(storage_url, name)) == 6


def test_factors_are_optuna_params_that_stay_compatible_under_update(storage_url):
    """Optuna refuses a categorical whose choices change within a study; a factor's choices are
    every value its field allows, so `--update` adding grid values enqueues compatible trials."""
    def spec(name, **grid):
        return parse_spec({"name": name, "grid": grid, "seeds": 1, "baselines": {"vit": {}},
                           "base": {**TINY, "model": "wavelet", "token_layout": "patch",
                                    "token_patch": 4}})

    q = StudyQueue(storage_url, create=True)
    name = unique()
    q.create(spec(name, wavelet=["haar"], use_kernel=[True], lr=[1e-3]))
    q.create(spec(name, wavelet=["haar", "db2"], use_kernel=[True, False], lr=[1e-3, 5e-3]),
             update=True)
    stored = trials(storage_url, name)
    models = [t for t in stored if t.user_attrs[schema.ROLE] == schema.ROLE_MODEL]
    assert len(models) == 8  # the first configuration is one of the update's eight
    for t in models:
        factors = t.user_attrs[schema.FACTORS]
        assert {k: t.params[k] for k in factors} == factors  # every factor, as a param
    choices = {t.distributions["wavelet"].choices for t in models}
    assert len(choices) == 1 and {"haar", "db2", "sym4", "coif2"} <= set(next(iter(choices)))
    # a number's range spans its factor's grid values (one axis per factor in Optuna's views)
    added = [t for t in models if t.number > 1]
    assert {(t.distributions["lr"].low, t.distributions["lr"].high) for t in added} == \
        {(1e-3, 5e-3)}
    # the baselines carry the factors they read only (a ViT reads lr, not wavelet or kernel)
    for t in stored:
        if t.user_attrs[schema.ROLE] == schema.ROLE_BASELINE:
            assert "wavelet" not in t.params and "use_kernel" not in t.params


def test_a_study_enqueued_without_params_keeps_working(storage_url, monkeypatch):
    """Studies created before factors became params: their trials pop, finish and retry as
    before, and an update adds trials with params beside them."""
    import optuna
    from optuna.trial import TrialState

    from wno.platform import queue as queue_module

    def old_waiting_trial(plan, space, grid):
        return optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=plan.user_attrs())

    q = StudyQueue(storage_url, create=True)
    name = unique()
    with monkeypatch.context() as m:
        m.setattr(queue_module, "_waiting_trial", old_waiting_trial)
        q.create(grid_spec(name, n_seeds=1))
    assert all(t.params == {} for t in trials(storage_url, name))
    q.create(grid_spec(name, n_seeds=2), update=True)
    claims = []
    while (claim := q.pop([name], host="h", device="cpu")) is not None:
        claims.append(claim)
    assert len(claims) == 6
    study = q.load_study(name)
    for claim in claims[:-1]:
        assert q.finish(study, claim, value=0.5, metrics={"best_val_acc": 0.5})
    assert q.fail(claims[-1].trial_id, "boom") and q.retry(name)
    done = trials(storage_url, name)
    assert sum(t.state.name == "COMPLETE" for t in done) == 5
    assert sum(bool(t.params) for t in done) >= 3  # the update's trials carry their factors
    df = q.load_study(name).trials_dataframe()
    assert "params_lr" in df.columns and df["params_lr"].isna().any()


def test_update_cancels_waiting_trials_no_longer_defined(storage_url):
    q = StudyQueue(storage_url, create=True)
    name = unique()
    q.create(grid_spec(name, n_seeds=1, lr=[1e-3, 2e-3, 3e-3]))
    r = q.create(grid_spec(name, n_seeds=1, lr=[1e-3]), update=True)
    assert (r.added, r.removed) == (0, 2)
    assert states(storage_url, name) == {"WAITING": 2, "FAIL": 2}
    assert {t.user_attrs.get(schema.ERROR) for t in trials(storage_url, name)
            if t.state.name == "FAIL"} == {"removed from the study definition by `wno study "
                                           "create --update`"}


def test_dry_run_and_refusals_write_nothing(storage_url):
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique())
    r = q.create(spec, dry_run=True)
    assert r.dry_run and r.added == len(spec.plan)
    assert spec.name not in {s.name for s in q.summaries()}
    # a study whose direction differs cannot be updated into place
    q.create(spec)
    flipped = parse_spec({**spec.to_dict(), "objective": {"metric": "final_val_acc",
                                                          "direction": "minimize"}})
    with pytest.raises(UserError, match="needs a new name"):
        q.create(flipped, update=True)
    assert len(trials(storage_url, spec.name)) == len(spec.plan)


def test_an_optuna_study_wno_did_not_create_is_left_alone(storage_url):
    import optuna

    q = StudyQueue(storage_url, create=True)
    name = unique()
    foreign = optuna.create_study(study_name=name, storage=q.storage)
    foreign.enqueue_trial({"x": 1.0})
    with pytest.raises(UserError, match="wno did not create"):
        q.create(grid_spec(name))
    while (claim := q.pop()) is not None:  # workers never pop from it
        assert claim.study_name != name
    assert [t.state.name for t in foreign.get_trials()] == ["WAITING"]


def test_a_create_interrupted_before_its_definition_is_finished_by_the_next(storage_url):
    import optuna

    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique())
    # What a create killed right after Optuna's create_study leaves: an empty, attribute-less study.
    optuna.create_study(study_name=spec.name, storage=q.storage,
                        direction=spec.objective.direction)
    result = q.create(spec)
    assert result.added == len(spec.plan)
    assert states(storage_url, spec.name) == Counter(WAITING=len(spec.plan))
    assert q.create(spec).added == 0  # and it is an ordinary wno study from then on
    q.delete(spec.name)  # its waiting trials must not reach other tests' pop() (shared database)


# --- pop ------------------------------------------------------------------------------------------------
def test_racing_processes_pop_each_trial_exactly_once(storage_url):
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique(), n_seeds=10, lr=[1e-3, 2e-3, 3e-3, 4e-3])  # 40 + 10 trials
    q.create(spec)
    reports = run_in_processes(pop_until_empty, (storage_url, spec.name), n=4)
    check_popped_once(reports, list(range(len(spec.plan))))  # names a trial popped twice
    assert sum(1 for r in reports if r["popped"]) >= 2, "the processes did not race"
    stored = trials(storage_url, spec.name)
    assert len(stored) == len(spec.plan)  # no trial was created by popping
    assert all(t.state.name == "COMPLETE" and t.value == t.number for t in stored)


def test_the_race_check_names_a_trial_popped_twice():
    """What the racing test says when exactly-once breaks: the trial popped twice and by whom,
    at once (before, a process that popped a trial twice died on its refused `finish` and the
    test waited 120 s on its missing result, then failed without naming the trial)."""
    reports = [{"pid": 11, "popped": [0, 2], "unfinished": [], "error": None},
               {"pid": 12, "popped": [1, 2], "unfinished": [2], "error": None}]
    with pytest.raises(pytest.fail.Exception,
                       match=r"trial #2 popped 2 times \(processes 11, 12\).*never popped: #3"
                             r".*finish refused.*#2"):
        check_popped_once(reports, [0, 1, 2, 3])
    check_popped_once(reports[:1] + [{**reports[1], "popped": [1], "unfinished": []}], [0, 1, 2])


@pytest.fixture
def dropped_after(storage_url):
    """Names of studies to delete after the test, passed or not: the PostgreSQL database is
    shared by the module, and trials left WAITING would reach other tests' `pop()`."""
    names: list[str] = []
    yield names
    q = StudyQueue(storage_url)
    for name in names:
        try:
            q.delete(name)
        except UserError:  # never created
            pass


def _rival_claims(store, conn, trial_id: int) -> None:
    """Another pop's claim of `trial_id`, written as plain SQL (not through the code under test):
    WAITING -> RUNNING with a heartbeat, as a winning pop leaves it."""
    import sqlalchemy as sa
    from optuna.trial import TrialState

    T, H = store._table("TrialModel"), store._table("TrialHeartbeatModel")
    assert conn.execute(sa.update(T).where(T.c.trial_id == trial_id)
                        .values(state=TrialState.RUNNING)).rowcount == 1
    conn.execute(sa.insert(H).values(trial_id=trial_id, heartbeat=sa.func.now()))


def _lose_first_race(monkeypatch, store) -> list[int]:
    """Make `store`'s next pop lose the trial it read: between its read of a WAITING trial and
    its conditional write, a rival pop claims that trial and commits first.

    Both pops have then read the same WAITING trial before either wrote. The engine's own locks
    (SQLite's BEGIN IMMEDIATE, PostgreSQL's FOR UPDATE) keep a rival on another connection from
    writing there, so the rival writes through the popping transaction's connection: what is
    left to prevent the double pop is the conditional UPDATE and its row count, the mechanism
    under test. Returns the ids of the trials lost this way."""
    from wno.platform.storage import Store

    claim, lost = Store._claim, []

    def racing_claim(self, conn, trial_id):
        if self is store and not lost:
            lost.append(trial_id)
            _rival_claims(self, conn, trial_id)
        return claim(self, conn, trial_id)

    monkeypatch.setattr(Store, "_claim", racing_claim)
    return lost


def test_a_pop_that_loses_its_trial_between_read_and_write_takes_the_next(storage_url, monkeypatch,
                                                                          dropped_after):
    """Exactly-once as a mechanism: two pops read the same WAITING trial, the rival writes first;
    this pop's conditional UPDATE must match no row, so it neither returns nor re-claims that
    trial and moves on to the next one. Fails when the UPDATE drops `state = 'WAITING'` or the
    row count is not checked (the trial is popped twice), or when a lost race ends the pop."""
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique(), n_seeds=1)
    dropped_after.append(spec.name)
    q.create(spec)
    lost = _lose_first_race(monkeypatch, q.store)
    claim = q.pop([spec.name], host="this-pop")
    (lost_id,) = lost
    assert claim is not None, "a pop that lost a race must take the next waiting trial"
    assert claim.trial_id != lost_id, f"trial {lost_id} was popped twice"
    by_id = {t._trial_id: t for t in trials(storage_url, spec.name)}
    assert claim.number == by_id[lost_id].number + 1  # the next one, oldest first
    assert by_id[lost_id].state.name == "RUNNING"
    assert by_id[lost_id].user_attrs.get(schema.HOST) is None  # the rival's, not this pop's
    assert by_id[claim.trial_id].user_attrs[schema.HOST] == "this-pop"
    assert states(storage_url, spec.name) == {"RUNNING": 2, "WAITING": len(spec.plan) - 2}


def test_a_pop_that_loses_the_last_trial_gets_nothing(storage_url, monkeypatch, dropped_after):
    """The same race over the only waiting trial: this pop returns None, and no trial is created
    or claimed twice."""
    q = StudyQueue(storage_url, create=True)
    name = unique()
    dropped_after.append(name)
    q.create(parse_spec({"name": name, "base": dict(TINY), "grid": {"lr": [1e-3]}, "seeds": 1}))
    lost = _lose_first_race(monkeypatch, q.store)
    assert q.pop([name], host="this-pop") is None
    assert len(lost) == 1
    (only,) = trials(storage_url, name)
    assert only.state.name == "RUNNING" and schema.HOST not in only.user_attrs


def test_a_pop_paused_between_read_and_write_keeps_its_trial_from_another(storage_url, monkeypatch,
                                                                          dropped_after):
    """Two real pops on their own connections, the first paused after reading its trial and
    before writing it while the second pops: each gets a different trial, the second the next
    one, not nothing.

    On PostgreSQL the second pop skips the row the first holds (FOR UPDATE SKIP LOCKED) and
    returns while the first is still paused: many workers do not queue up behind one row.
    Catches a pop without SKIP LOCKED, which waits for the first to commit. On SQLite the second
    waits for the first's write lock (BEGIN IMMEDIATE) by design: one writer at a time."""
    from wno.platform.storage import Store

    q, other = StudyQueue(storage_url, create=True), StudyQueue(storage_url)
    spec = grid_spec(unique(), n_seeds=1)
    dropped_after.append(spec.name)
    q.create(spec)
    claim, got = Store._claim, {}
    postgres = q.store.engine.dialect.name == "postgresql"

    def second_pop():
        got["claim"] = other.pop([spec.name], host="second")

    def paused_claim(self, conn, trial_id):
        if self is q.store and "thread" not in got:
            got["thread"] = threading.Thread(target=second_pop)
            got["thread"].start()
            # PostgreSQL: a deadlock guard, the second pop returns at once when it skips the
            # locked row. SQLite: it cannot get past BEGIN IMMEDIATE until this transaction ends.
            got["thread"].join(timeout=60 if postgres else 1)
            got["returned_while_paused"] = not got["thread"].is_alive()
        return claim(self, conn, trial_id)

    monkeypatch.setattr(Store, "_claim", paused_claim)
    first = q.pop([spec.name], host="first")
    got["thread"].join(timeout=120)
    assert not got["thread"].is_alive(), "the second pop never returned"
    if postgres:
        assert got["returned_while_paused"], \
            "the second pop waited for the row the first held (FOR UPDATE without SKIP LOCKED?)"
    second = got["claim"]
    assert first is not None and second is not None, "one pop found the queue empty"
    assert {first.number, second.number} == {0, 1}, (first.number, second.number)
    by_number = {t.number: t for t in trials(storage_url, spec.name)}
    assert by_number[first.number].user_attrs[schema.HOST] == "first"
    assert by_number[second.number].user_attrs[schema.HOST] == "second"
    assert states(storage_url, spec.name) == {"RUNNING": 2, "WAITING": len(spec.plan) - 2}


def test_a_grid_queue_never_creates_trials(storage_url):
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique(), n_seeds=1)
    q.create(spec)
    study = q.load_study(spec.name)
    while (claim := q.pop([spec.name])) is not None:
        q.finish(study, claim, value=0.5, metrics={})
    for _ in range(3):
        assert q.pop([spec.name]) is None
        assert q.pop() is None
    assert len(trials(storage_url, spec.name)) == len(spec.plan)


def test_pop_records_host_device_and_a_first_heartbeat(storage_url):
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique(), n_seeds=1)
    q.create(spec)
    claim = q.pop([spec.name], host="gpu01", device="cuda:3 (H200)", heartbeat_interval=7)
    assert claim.number == 0 and claim.study_name == spec.name
    t = q.storage.get_trial(claim.trial_id)
    assert t.state.name == "RUNNING"
    assert t.user_attrs[schema.HOST] == "gpu01" and t.user_attrs[schema.DEVICE] == "cuda:3 (H200)"
    st = q.status(spec.name)
    (running,) = st.running
    assert running.heartbeat_age is not None and running.heartbeat_age < 60
    assert q.heartbeat(claim.trial_id) is True


def test_start_and_completion_times_share_optunas_clock(tmp_path):
    # Optuna 5 keeps naive UTC in its datetime columns and hands back local time; the queue's own
    # SQL must write UTC too, or a start is hours away from its completion (written by Optuna)
    # outside UTC. Run under a +9 h zone.
    code = """
import datetime as dt, sys
sys.path.insert(0, "tests")
from platform_helpers import TINY
from wno.platform.queue import StudyQueue
from wno.platform.spec import parse_spec
q = StudyQueue(sys.argv[1], create=True)
spec = parse_spec({"name": "tz", "base": dict(TINY), "grid": {"lr": [1e-3]}, "seeds": 1})
q.create(spec)
claim = q.pop(["tz"])
print(abs((q.storage.get_trial(claim.trial_id).datetime_start - dt.datetime.now())
          .total_seconds()))
"""
    env = {**os.environ, "TZ": "Asia/Tokyo"}
    out = subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'tz.db'}"],
                         env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert float(out.stdout.split()[-1]) < 60, out.stdout


def test_hand_back_returns_the_same_trial_to_the_queue(storage_url):
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique(), n_seeds=1)
    q.create(spec)
    claim = q.pop([spec.name])
    assert q.hand_back(claim.trial_id)
    assert q.storage.get_trial(claim.trial_id).state.name == "WAITING"
    again = q.pop([spec.name])
    assert (again.trial_id, again.number) == (claim.trial_id, claim.number)  # oldest first
    assert again.user_attrs[schema.CONFIG_HASH] == claim.user_attrs[schema.CONFIG_HASH]
    assert len(trials(storage_url, spec.name)) == len(spec.plan)
    assert not q.hand_back(q.pop([spec.name]).trial_id + 10**6)  # not ours: refused


# --- stale trials -----------------------------------------------------------------------------------------
def test_stale_trials_are_failed_and_retried_exactly_once(storage_url):
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique(), n_seeds=1)
    q.create(spec)
    lost = q.pop([spec.name], host="dead-host", heartbeat_interval=15)
    worn = q.pop([spec.name], host="dead-host", heartbeat_interval=15)
    alive = q.pop([spec.name], host="live-host", heartbeat_interval=15)
    q.set_user_attrs(lost.trial_id, {schema.MLFLOW_RUN: "run-123"})
    # `worn` has already been retried as often as allowed
    q.storage.set_trial_system_attr(worn.trial_id, "retry_history", [90, 91, 92])
    assert q.sweep_stale([spec.name]) == []  # nothing is stale yet
    stop = threading.Event()

    def keep_alive():  # the live worker's heartbeat thread
        while not stop.wait(0.3):
            assert q.heartbeat(alive.trial_id)

    beating = threading.Thread(target=keep_alive)
    beating.start()
    try:
        for dead in (lost, worn):
            backdate_heartbeat(q, dead.trial_id, LOST_FOR)
        results = run_in_processes(sweep_once, (storage_url, spec.name), n=3)
    finally:
        stop.set()
        beating.join()
    swept = [pair for r in results for pair in r]
    assert sorted(failed for failed, _ in swept) == sorted([lost.number, worn.number])
    by_number = {t.number: t for t in trials(storage_url, spec.name)}
    retry_number = dict(swept)[lost.number]
    assert dict(swept)[worn.number] is None
    assert by_number[alive.number].state.name == "RUNNING"  # heartbeating: untouched
    old, new = by_number[lost.number], by_number[retry_number]
    assert old.state.name == "FAIL" and "worker lost" in old.user_attrs[schema.ERROR]
    assert "dead-host" in old.user_attrs[schema.ERROR]
    assert new.state.name == "WAITING" and new.user_attrs[schema.RETRY_OF] == lost.number
    for key in (schema.CONFIG, schema.CONFIG_HASH, schema.GROUP, schema.SEED, schema.MLFLOW_RUN):
        assert new.user_attrs[key] == old.user_attrs[key]
    assert schema.HOST not in new.user_attrs and schema.ERROR not in new.user_attrs
    assert new.params == old.params
    assert new.system_attrs["retry_history"] == [lost.number]
    assert "not again" in by_number[worn.number].user_attrs[schema.ERROR]
    assert len(by_number) == len(spec.plan) + 1  # exactly one retry


def test_status_sweeps_and_shows_running_failed_and_retried(storage_url):
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique(), n_seeds=1)
    q.create(spec)
    study = q.load_study(spec.name)
    done = q.pop([spec.name])
    q.finish(study, done, value=0.7, metrics={"best_val_acc": 0.7})
    broken = q.pop([spec.name])
    q.fail(broken.trial_id, "RuntimeError: boom at postgresql://u:secret@db/x")
    lost = q.pop([spec.name], heartbeat_interval=15)
    backdate_heartbeat(q, lost.trial_id, LOST_FOR)
    st = q.status(spec.name)
    assert st.planned == len(spec.plan) and st.done == 1
    assert [n for n, _ in st.retried_now] == [lost.number]
    failures = {t.number: t for t in st.failures}
    assert "RuntimeError: boom" in failures[broken.number].error
    assert "secret" not in failures[broken.number].error  # secrets masked
    assert failures[lost.number].retried_by == st.retried_now[0][1]
    assert st.counts["COMPLETE"] == 1 and st.counts["WAITING"] == len(spec.plan) - 3 + 1
    assert st.mean_duration is not None and st.eta is not None


# --- cancel / retry ---------------------------------------------------------------------------------------
def test_cancel_stops_running_trials_and_retry_puts_them_back(storage_url):
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique(), n_seeds=1)
    q.create(spec)
    study = q.load_study(spec.name)
    running = q.pop([spec.name])
    n = q.cancel(spec.name)
    assert n == len(spec.plan)
    assert q.heartbeat(running.trial_id) is False  # its worker learns at the next heartbeat
    assert q.finish(study, running, value=0.5, metrics={}) is False
    assert q.pop([spec.name]) is None
    pairs = q.retry(spec.name)
    assert sorted(old for old, _ in pairs) == list(range(len(spec.plan)))
    assert q.retry(spec.name) == []  # retried once, not twice
    stored = trials(storage_url, spec.name)
    assert Counter(t.state.name for t in stored) == {"FAIL": len(spec.plan),
                                                     "WAITING": len(spec.plan)}
    assert {t.user_attrs[schema.CONFIG_HASH] for t in stored if t.state.name == "WAITING"} == \
        {p.key for p in spec.plan}


def test_delete_removes_the_study(storage_url):
    q = StudyQueue(storage_url, create=True)
    spec = grid_spec(unique(), n_seeds=1)
    q.create(spec)
    q.delete(spec.name)
    assert spec.name not in {s.name for s in q.summaries()}
    with pytest.raises(UserError, match="no study named"):
        q.status(spec.name)


# --- storages ------------------------------------------------------------------------------------------
def test_sqlite_storage_is_set_up_for_several_local_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'optuna.db'}"
    with pytest.raises(Unavailable, match="no study storage at .*does not exist"):
        StudyQueue(url)  # a typo must not become an empty storage
    q = StudyQueue(url, create=True)
    with q.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30000


def test_an_unreachable_storage_is_a_clear_error():
    url = "postgresql+psycopg://wno:s3cret-pw@127.0.0.1:1/wno"  # nothing listens on port 1
    with pytest.raises(Unavailable) as e:
        StudyQueue(url)
    message = str(e.value)
    assert message.startswith("cannot reach the study storage postgresql+psycopg://wno:***@127.0.0.1:1/wno")
    assert "s3cret-pw" not in message and "\n" not in message
    with pytest.raises(UserError, match="is not a storage URL"):
        StudyQueue("redis://localhost/0")


def test_wrong_password_is_reported_masked(pg_database):
    import sqlalchemy as sa

    url = sa.engine.make_url(pg_database).set(password="not-the-password")
    with pytest.raises(Unavailable) as e:
        StudyQueue(url.render_as_string(hide_password=False))
    assert "not-the-password" not in str(e.value) and "***" in str(e.value)
    assert "password authentication failed" in str(e.value)


def test_errors_are_stored_on_one_line_with_secrets_masked():
    text = one_line("Traceback:\n  boom\nOperationalError: postgresql://a:hunter2@db/x down",
                    STORED_ERROR_LIMIT)
    assert "\n" not in text and "hunter2" not in text and "a:***@db" in text
    assert len(one_line("x" * 10000, STORED_ERROR_LIMIT)) <= 2000


def test_search_budget_and_retry_of_a_failed_sampled_trial(storage_url):
    q = StudyQueue(storage_url, create=True)
    base = {k: v for k, v in TINY.items() if k != "lr"}
    spec = parse_spec({"name": unique(), "base": base, "seeds": [0],
                       "search": {"n_trials": 3, "params": {"lr": {"low": 1e-4, "high": 1e-2}}}})
    assert q.create(spec).added == 3
    assert q.create(spec).added == 0  # the budget is enqueued once
    claim = q.pop([spec.name])
    assert schema.CONFIG not in claim.user_attrs  # a slot: the worker samples it
    q.set_user_attrs(claim.trial_id, {schema.CONFIG: {"lr": 0.003}, schema.CONFIG_HASH: "abc"})
    q.fail(claim.trial_id, "RuntimeError: diverged")
    (pair,) = q.retry(spec.name)
    retry = q.storage.get_trial(q.storage.get_trial_id_from_study_id_trial_number(
        q.study_id(spec.name), pair[1]))
    assert retry.user_attrs[schema.CONFIG_HASH] == "abc" and retry.state.name == "WAITING"
    assert len(trials(storage_url, spec.name)) == 4
