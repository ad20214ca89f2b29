"""What every command shares: turning library errors into a clear message and an exit code."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer

from wno.utils import mask_secrets

# Exit codes: 1 = the work failed, 2 = bad input (usage, config, study file), 3 = a service or
# data set that cannot be reached, 130 = interrupted.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 1, 2, 3


class UserError(Exception):
    """An error whose message is meant for the user as it is (no traceback)."""

    exit_code = EXIT_BAD_INPUT


class Unavailable(UserError):
    """A storage, tracking server or data set that cannot be reached."""

    exit_code = EXIT_UNAVAILABLE


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print `message` to stderr and return the Exit to raise: `raise fail("...")`."""
    typer.secho(f"error: {mask_secrets(message)}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn known library errors into a message and an exit code instead of a traceback."""
    from wno.config import ConfigError

    try:
        yield
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    except (ConfigError, ValueError, FileNotFoundError) as e:
        raise fail(str(e), EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
