"""The study queue on SQLite and PostgreSQL: create, pop exactly once, heartbeats, stale trials,
hand-back, cancel, retry, status. No training here (see test_worker.py for that)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from platform_helpers import (REPO, TINY, pg_database, pop_until_empty, run_in_processes,  # noqa: F401
                              storage_url, sweep_once, trials, unique)
from wno.cli.common import Unavailable, UserError
from wno.platform import schema
from wno.base.errors import one_line
from wno.platform.queue import STORED_ERROR_LIMIT, StudyQueue, grace
from wno.platform.spec import parse_spec


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
    flipped = parse_spec({**spec.to_dict(), "objective": {"metric": "test_loss",
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
    popped = run_in_processes(pop_until_empty, (storage_url, spec.name), n=4)
    numbers = [n for per_process in popped for n in per_process]
    assert sorted(numbers) == list(range(len(spec.plan)))  # each once, none missing
    assert sum(1 for p in popped if p) >= 2, "the processes did not race"
    stored = trials(storage_url, spec.name)
    assert len(stored) == len(spec.plan)  # no trial was created by popping
    assert all(t.state.name == "COMPLETE" and t.value == t.number for t in stored)


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
    lost = q.pop([spec.name], host="dead-host", heartbeat_interval=0.5)
    worn = q.pop([spec.name], host="dead-host", heartbeat_interval=0.5)
    alive = q.pop([spec.name], host="live-host", heartbeat_interval=0.5)
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
        time.sleep(grace(0.5) + 1.5)
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
    lost = q.pop([spec.name], heartbeat_interval=0.5)
    time.sleep(grace(0.5) + 1.5)
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
