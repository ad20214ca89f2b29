"""What every command shares: turning library errors into a clear message and an exit code."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import typer

from wno.base.errors import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED,  # noqa: F401
                             EXIT_UNAVAILABLE, Unavailable, UserError)
from wno.base.utils import mask_secrets


def given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given on the command line (or through its environment variable),
    not left at its default: only such flags override a --config file."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print `message` to stderr and return the Exit to raise: `raise fail("...")`."""
    typer.secho(f"error: {mask_secrets(message)}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn known library errors into a message and an exit code instead of a traceback.

    `UserError` (and `Unavailable`) carry their exit code; a `ValueError` (a `ConfigError`, a
    `SpecError`) or a missing file is bad input.
    """
    try:
        yield
    except UserError as e:
        raise fail(str(e), e.exit_code) from None
    except (ValueError, FileNotFoundError) as e:
        raise fail(str(e), EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
