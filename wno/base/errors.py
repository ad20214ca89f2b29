"""Errors meant for the user, their exit codes, and one way to shorten an error to one line.

The library raises these; the CLI (`wno.cli.common.user_errors`) turns them into a message and an
exit code, and a Python caller catches them like any exception. They live at the bottom so that
every layer can raise them without importing the CLI.
"""

from __future__ import annotations

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
