"""Which code is running: the package version and, when known, the git commit.

Every checkpoint records it (`wno.training.train`), so a run resumed by other code says so. The
commit comes from $WNO_GIT_COMMIT (images built without .git set it), else from `git` in the
checkout the package is imported from; it is None when neither answers (an installed wheel).
The platform's tracking records the same facts as MLflow tags.

    >>> sorted(code_version())
    ['commit', 'dirty', 'version']
    >>> describe_code({"version": "0.1.0", "commit": "0123456789abcdef", "dirty": True})
    'wno 0.1.0, commit 0123456789ab with uncommitted changes'
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any

ENV_GIT_COMMIT = "WNO_GIT_COMMIT"  # the commit of an image built without .git


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """{'version': '0.1.0', 'commit': sha or None, 'dirty': bool or None}, read once per process."""
    from wno import __version__

    commit, dirty = _git_commit()
    return {"version": __version__, "commit": commit, "dirty": dirty}


def _git_commit() -> tuple[str | None, bool | None]:
    if os.environ.get(ENV_GIT_COMMIT):
        return os.environ[ENV_GIT_COMMIT], None
    where = str(Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None, None
        status = subprocess.run(["git", "-C", where, "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip() or None, dirty


def same_code(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two records name the same code: same version and same commit. Uncommitted changes
    are not compared (a dirty tree at both ends may or may not be the same code)."""
    if not a or not b:
        return False
    return a.get("version") == b.get("version") and a.get("commit") == b.get("commit")


def describe_code(info: dict[str, Any] | None) -> str:
    """A readable name for a `code_version()` record (None: a checkpoint that recorded none)."""
    if not info:
        return "a wno version that did not record itself"
    text = f"wno {info.get('version') or '?'}"
    if info.get("commit"):
        text += f", commit {str(info['commit'])[:12]}"
        if info.get("dirty"):
            text += " with uncommitted changes"
    else:
        text += " (commit unknown)"
    return text
