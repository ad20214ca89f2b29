"""CPU workers of one machine share its cores: a registry of lock files, one per worker.

torch starts as many threads as there are cores in every process, so two CPU workers on a 2-core
machine ran 4 threads that spun against each other (the smoke study's epochs took 3 to 33 s
instead of 1.3 s alone). Each CPU worker therefore holds an exclusive `flock` on a file of its own
in `registry_folder()` (under WNO_HOME, per host) for as long as it runs, and takes its share of
the cores: `cores // n`, the first `cores % n` workers (by file name) one more, at least 1,
never more than OMP_NUM_THREADS when that is set. The worker recounts before each trial and after
each epoch, so shares follow workers that start and stop.

Why lock files: the kernel drops a lock when its process dies, SIGKILL included, so a file whose
lock can be taken is a dead worker's (and is removed by whoever notices); no pid is trusted (pids
are reused) and nothing needs cleaning up by hand. A worker's file is locked before it gets its
final name, so no counter ever sees it unlocked. Workers that do not share WNO_HOME do not see
each other: give them the same WNO_HOME, or `--threads`.

    >>> share_of(2, 2, 0), share_of(16, 3, 0), share_of(16, 3, 2), share_of(2, 4, 3)
    (1, 6, 5, 1)
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: every worker counts itself alone
    fcntl = None

SUFFIX = ".lock"


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity: taskset, cpusets), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def share_of(cores: int, workers: int, rank: int) -> int:
    """Threads for the worker at `rank` (0-based) of `workers` sharing `cores`: at least 1."""
    base, extra = divmod(cores, max(1, workers))
    return max(1, base + (1 if rank < extra else 0))


def omp_limit() -> int | None:
    """OMP_NUM_THREADS as a number, when set to one (the usual way to ask for fewer threads)."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def registry_folder(home: str | Path) -> Path:
    """Where the CPU workers of this host register: `<home>/cpu-workers/<host>/` (the host in the
    path, so a WNO_HOME on a shared file system does not pool several machines' cores)."""
    return Path(home).resolve() / "cpu-workers" / socket.gethostname()


class CpuShare:
    """This worker's registration among the CPU workers of the machine; `threads()` its share.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with CpuShare(d, cores=4) as a:
    ...         with CpuShare(d, cores=4) as b:
    ...             both = len(a.workers())
    ...         alone = len(a.workers())
    >>> both, alone
    (2, 1)
    """

    def __init__(self, folder: str | Path, *, cores: int | None = None):
        self.folder = Path(folder)
        self.cores = cores or machine_cores()
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        self._fd: int | None = None

    def __enter__(self) -> CpuShare:
        self.register()
        return self

    def __exit__(self, *exc) -> None:
        self.unregister()

    def register(self) -> None:
        if fcntl is None or self._fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{self.name}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"pid {os.getpid()}\n".encode())
            os.replace(tmp, self.folder / self.name)  # visible only once locked
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self._fd = fd

    def unregister(self) -> None:
        if self._fd is None:
            return
        (self.folder / self.name).unlink(missing_ok=True)
        os.close(self._fd)  # releases the lock
        self._fd = None

    def workers(self) -> list[str]:
        """File names of the live CPU workers registered here (this one included), sorted; a dead
        worker's file is removed on the way."""
        if fcntl is None or self._fd is None:
            return [self.name]
        live = []
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            if path.name == self.name or _held(path):
                live.append(path.name)
        return live

    def threads(self) -> int:
        """This worker's share of the cores now (capped by OMP_NUM_THREADS when set)."""
        live = self.workers()
        rank = live.index(self.name) if self.name in live else len(live)
        n = share_of(self.cores, max(len(live), rank + 1), rank)
        limit = omp_limit()
        return min(n, limit) if limit else n


def _held(path: Path) -> bool:
    """Whether a live process holds `path`'s lock; removes the file of a dead one."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True  # cannot tell: count it rather than take its cores
    else:
        # Dead: unlink only the file we locked (a new worker cannot have taken the name: names
        # carry a random part).
        path.unlink(missing_ok=True)
        return False
    finally:
        os.close(fd)
