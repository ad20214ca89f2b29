"""The background sender: every MLflow call of a run happens on one daemon thread, in order, so
that tracking never slows or breaks training. What fails is kept and retried with backoff; at exit
the runs still waiting get one more chance.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wno.platform.tracking.store import permanent, reason

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


@dataclass
class Op:
    what: str  # for messages, e.g. "epoch 3"
    fn: Callable[[], None] | None = None
    metrics: list | None = None  # Metric objects: merged with neighbouring metric ops
    epoch: int | None = None  # per-epoch metrics of this epoch (skipped when already logged)


class Outbox:
    """Runs ops in order on one daemon thread; a failed op stays at the head and is retried with
    exponential backoff (a new op wakes the retry at once). Consecutive metric ops go out in one
    batch."""

    def __init__(self, name: str, send_metrics: Callable[[list[Op]], None],
                 where: str, backoff: tuple[float, float] = (1.0, 30.0)):
        self.name, self.where = name, where  # `where`: the masked tracking URI
        self.send_metrics = send_metrics
        self.backoff = backoff
        self.ops: collections.deque[Op] = collections.deque()
        self.cond = threading.Condition()
        self.failures = 0  # failed attempts, all outages together
        self.outages = 0
        self.dropped: list[str] = []  # ops given up on (errors retrying cannot fix)
        self.timings: collections.deque = collections.deque(maxlen=10_000)  # (what, seconds)
        self.down_since: float | None = None
        self._running = False  # a sender thread is alive (it ends after a few idle seconds)

    def put(self, op: Op) -> None:
        with self.cond:
            self.ops.append(op)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="wno-mlflow", daemon=True).start()
            self.cond.notify_all()

    @property
    def pending(self) -> int:
        with self.cond:
            return len(self.ops)

    def drain(self, timeout: float | None) -> bool:
        """Wait until every op went out (True) or `timeout` s passed (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.ops:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(left if left is None else min(left, 1.0))
            return True

    def _head(self) -> list[Op]:
        first = self.ops[0]
        if first.metrics is None:
            return [first]
        batch, count = [], 0
        for op in self.ops:
            if op.metrics is None or (batch and count + len(op.metrics) > MAX_METRICS_PER_BATCH):
                break
            batch.append(op)
            count += len(op.metrics)
        return batch

    def _run(self) -> None:
        delay = self.backoff[0]
        last_note = 0.0
        while True:
            with self.cond:
                if not self.ops:
                    self.cond.wait(5.0)
                if not self.ops:  # idle: let the thread end; put() starts another
                    self._running = False
                    return
                batch = self._head()
            started = time.perf_counter()
            try:
                if batch[0].metrics is not None:
                    self.send_metrics(batch)
                else:
                    batch[0].fn()
                took = time.perf_counter() - started
                self.timings.extend((op.what, took / len(batch)) for op in batch)
                log.debug("mlflow: %s took %.3f s", ", ".join(op.what for op in batch), took)
            except Disabled:
                pass
            except Exception as e:  # noqa: BLE001 - nothing may escape into training
                if permanent(e):
                    what = ", ".join(op.what for op in batch)
                    self.dropped.append(what)
                    log.warning("mlflow: %s: %s failed and is not retried: %s", self.name, what,
                                reason(e))
                else:
                    self.failures += 1
                    now = time.monotonic()
                    unreachable.setdefault(self.where, now)
                    if self.down_since is None:
                        self.down_since, last_note = now, now
                        self.outages += 1
                        log.warning("mlflow: %s: cannot reach %s (%s); keeping %d item(s) and "
                                    "retrying with backoff, training goes on", self.name,
                                    self.where, reason(e), self.pending)
                    elif now - last_note > 60:
                        last_note = now
                        log.warning("mlflow: %s: %s still unreachable after %.0f s (%s); %d "
                                    "item(s) kept", self.name, self.where, now - self.down_since,
                                    reason(e), self.pending)
                    with self.cond:  # a new op (an epoch ending) wakes the retry early
                        n = len(self.ops)
                        self.cond.wait_for(lambda: len(self.ops) != n, timeout=delay)
                    delay = min(delay * 2, self.backoff[1])
                    continue
            with self.cond:
                for _ in batch:
                    self.ops.popleft()
                self.cond.notify_all()
            delay = self.backoff[0]
            unreachable.pop(self.where, None)
            if self.down_since is not None:
                log.warning("mlflow: %s: %s reachable again after %.0f s; sent what was kept",
                            self.name, self.where, time.monotonic() - self.down_since)
                self.down_since = None



# Tracking URIs (masked) that a sender failed to reach, and since when; cleared by any success.
# A tracker on such a URI waits seconds, not minutes, for its run to open and its queue to drain:
# its sender keeps retrying in the background while the worker goes on with its trials.
unreachable: dict[str, float] = {}
SHORT_WAIT = 2.0


class Disabled(Exception):
    """The run could not be opened (an error retrying cannot fix): later ops are skipped."""


unfinished: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _drain_at_exit() -> None:
    """At exit, give runs still waiting for MLflow one more chance (one `drain_timeout` for all
    of them together), then say what is lost and where it is kept."""
    pending = [t for t in list(unfinished) if t.outbox.pending]
    if not pending:
        return
    deadline = time.monotonic() + max(t.drain_timeout for t in pending)
    for tracker in pending:
        if not tracker.outbox.drain(max(0.0, deadline - time.monotonic())):
            log.warning("mlflow: run %s: %d item(s) never reached %s; %s holds the metrics",
                        tracker.run_id, tracker.outbox.pending, tracker.outbox.where,
                        Path(tracker.target.config.save_dir) / "metrics.json")


