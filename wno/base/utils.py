"""Small helpers shared across the package."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]+):(?P<pw>[^@\s]*)@")


ENV_CACHE_DIR = "WNO_CACHE_DIR"


def user_cache_dir() -> Path:
    """$WNO_CACHE_DIR, else ~/.cache/wno: where wno keeps what it can compute again (decoded data
    sets it may not write beside, measured attention-path choices)."""
    return Path(os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "wno")


def mask_url(url: str) -> str:
    """Hide the password of a database or server URL, for logs, params and messages.

    >>> mask_url("postgresql+psycopg://wno:secret@db:5432/wno")
    'postgresql+psycopg://wno:***@db:5432/wno'
    """
    return mask_secrets(url)


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


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the kernel.

    By default every allocation over 32 MB (attention scores, gathered key blocks) is a fresh
    mmap that page-faults on first touch and is unmapped on free: on CPU that costs more than the
    copy itself (measured in BENCHMARKS.md). With mmap off and trimming off, a training step's
    large tensors reuse the same pages every step. The price is a process that keeps its peak
    memory. Idempotent; a no-op off glibc or with WNO_CPU_ALLOCATOR=system. Returns whether the
    setting is in effect.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("WNO_CPU_ALLOCATOR", "").lower() == "system":
        return False
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
        ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    _ALLOCATOR_TUNED = ok
    return ok


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what `platform` knows)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
