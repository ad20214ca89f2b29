"""Errors meant for the user, their exit codes, and the few ways messages are worded: an error
shortened to one line, a value shown short, a close match suggested.

The library raises these; the CLI (`wno.cli.common.user_errors`) turns them into a message and an
exit code, and a Python caller catches them like any exception. They live at the bottom so that
every layer can raise them without importing the CLI.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from wno.base.utils import mask_secrets

# Exit codes: 1 = the work failed, 2 = bad input (usage, config, study file), 3 = a service or
# data set that cannot be reached, 130 = interrupted.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 1, 2, 3, 130


class UserError(Exception):
    """An error whose message is meant for the user as it is (no traceback)."""

    exit_code = EXIT_BAD_INPUT


class Unavailable(UserError):
    """A storage, tracking server or data set that cannot be reached."""

    exit_code = EXIT_UNAVAILABLE


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """An error as one bounded line with URL passwords masked: for logs, messages and storage.

    A database error wrapped by SQLAlchemy shows the driver's own message (without SQLAlchemy's
    "Background on this error" link); lines are joined with " | ".

    >>> one_line(RuntimeError("connection to postgresql://u:pw@db failed\\n  is it running?"))
    'connection to postgresql://u:***@db failed | is it running?'
    """
    if isinstance(error, BaseException):
        orig = getattr(error, "orig", None)  # sqlalchemy.exc.DBAPIError wraps the driver's error
        cause = orig if isinstance(orig, BaseException) else error
        text = str(cause).strip() or type(cause).__name__
    else:
        text = str(error)
    text = " | ".join(line.strip() for line in mask_secrets(text).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters: a hostile file's value never floods a message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `options`, or ''.

    >>> did_you_mean("wavlet", ["wavelet", "n_levels"])
    " (did you mean 'wavelet'?)"
    """
    if len(word) > 64:  # no name is that long; difflib's cost grows with the product of lengths
        return ""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
