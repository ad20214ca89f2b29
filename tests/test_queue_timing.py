"""The queue's timing and limits, pinned at production heartbeat intervals on SQLite and PostgreSQL:
how long a silent trial stays RUNNING before it is judged lost, how often a lost trial is retried,
and what the user is told when it is not retried again.

The rule is written out here (a trial is lost after four silent heartbeat intervals, and retried
three times) rather than computed with `wno.platform.queue.grace`: a test that derives its waiting
time from the function under test passes whatever that function says. Silence is made by moving a
trial's last heartbeat back in the database (`backdate_heartbeat`), so minutes of silence cost no
waiting; each case stays 5 s clear of the boundary, far more than a test's own run time.
"""

from __future__ import annotations

import re

import pytest

from platform_helpers import (TINY, backdate_heartbeat, pg_database, storage_url,  # noqa: F401
                              trials, unique)
from wno.platform import schema
from wno.platform.queue import StudyQueue
from wno.platform.spec import parse_spec

MARGIN = 5.0  # seconds either side of the boundary


def one_study(q: StudyQueue, n_trials: int) -> str:
    name = unique()
    lrs = [1e-3 * (i + 1) for i in range(n_trials)]
    q.create(parse_spec({"name": name, "base": dict(TINY), "grid": {"lr": lrs}, "seeds": 1}))
    return name


@pytest.mark.parametrize("interval, lost_after", [(15.0, 60.0), (30.0, 120.0)])
def test_a_silent_trial_is_lost_after_four_of_its_own_heartbeat_intervals(storage_url, interval,
                                                                           lost_after):
    """Silent for a little less than four intervals: still RUNNING (a busy worker may miss three
    heartbeats). A little more: failed as lost and re-enqueued. A trial that has just beaten is
    never lost, however long ago it started. At 30 s the rule must use the interval the trial's
    worker promised, not the default 15 s.

    Catches: stale after one (or two, three) missed heartbeats, or after five; the interval of
    the sweeping process or the default instead of the trial's; silence measured from the start
    of the trial instead of its last heartbeat."""
    q = StudyQueue(storage_url, create=True)
    name = one_study(q, 3)
    quiet, silent, beating = (q.pop([name], host=f"h{i}", heartbeat_interval=interval)
                              for i in range(3))
    backdate_heartbeat(q, quiet.trial_id, lost_after - MARGIN)
    backdate_heartbeat(q, silent.trial_id, lost_after + MARGIN)
    backdate_heartbeat(q, beating.trial_id, lost_after + MARGIN)
    assert q.heartbeat(beating.trial_id)  # silence is counted from the last heartbeat

    swept = q.sweep_stale([name])
    assert [failed for failed, _ in swept] == [silent.number], \
        f"expected only trial #{silent.number} lost after {lost_after + MARGIN:.0f} s silent"
    by_number = {t.number: t for t in trials(storage_url, name)}
    assert by_number[quiet.number].state.name == "RUNNING"
    assert by_number[beating.number].state.name == "RUNNING"
    assert by_number[silent.number].state.name == "FAIL"
    (retry,) = [t for t in by_number.values() if t.user_attrs.get(schema.RETRY_OF) is not None]
    assert retry.user_attrs[schema.RETRY_OF] == silent.number and retry.state.name == "WAITING"
    assert q.sweep_stale([name]) == []  # judged once


def test_a_lost_trial_is_retried_three_times_then_left_failed_saying_so(storage_url):
    """A trial that keeps losing its worker (it kills it) is re-enqueued automatically three
    times; the fourth loss leaves it failed, and `wno study status` says why and what to do.
    That advice works: `wno study retry` puts it back.

    Catches: a cap of two or four retries (an off-by-one in counting the retry history), no cap,
    and a message at the cap that does not say it was the last retry or how to go on."""
    from typer.testing import CliRunner

    from wno.cli import app

    q = StudyQueue(storage_url, create=True)
    name = one_study(q, 1)
    chain = []
    for attempt in range(3):
        claim = q.pop([name], host=f"host{attempt}", heartbeat_interval=15)
        assert claim is not None, f"retry {attempt} was not enqueued"
        backdate_heartbeat(q, claim.trial_id, 60 + MARGIN)
        ((failed, retry),) = q.sweep_stale([name])
        assert failed == claim.number and retry is not None, f"loss {attempt + 1} not retried"
        chain.append(claim.number)
    last = q.pop([name], host="host3", heartbeat_interval=15)
    assert last is not None and last.user_attrs[schema.RETRY_OF] == chain[-1]
    backdate_heartbeat(q, last.trial_id, 60 + MARGIN)

    shown = CliRunner().invoke(app, ["study", "status", name, "--storage", storage_url])
    assert shown.exit_code == 0, shown.output
    assert f"trial #{last.number} lost its worker: not retried again" in shown.output
    assert q.pop([name]) is None  # nothing was re-enqueued
    stored = {t.number: t for t in trials(storage_url, name)}
    assert len(stored) == 4 and all(t.state.name == "FAIL" for t in stored.values())
    assert stored[last.number].system_attrs["retry_history"] == chain
    error = stored[last.number].user_attrs[schema.ERROR]
    assert error in shown.output  # the failed trial's line in `status`
    seconds = re.search(r"no heartbeat for (\d+) s", error)
    assert seconds and 60 + MARGIN <= int(seconds.group(1)) < 60 + 10 * MARGIN, error
    assert "host host3" in error
    assert "retried 3 times already, not again (`wno study retry` puts it back)" in error
    for number in chain:  # the earlier losses were retried, and say nothing of a cap
        assert "not again" not in stored[number].user_attrs[schema.ERROR]

    ((failed, again),) = q.retry(name)
    assert failed == last.number and q.pop([name]).number == again
