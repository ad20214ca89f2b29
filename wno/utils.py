"""Small helpers shared across the package."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]+):(?P<pw>[^@\s]*)@")


def mask_url(url: str) -> str:
    """Hide the password of a database or server URL, for logs, params and messages.

    >>> mask_url("postgresql+psycopg://wno:secret@db:5432/wno")
    'postgresql+psycopg://wno:***@db:5432/wno'
    """
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", url)


def mask_secrets(text: str) -> str:
    """Mask every URL password that appears anywhere in `text` (error messages, tracebacks)."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
