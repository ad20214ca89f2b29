"""`wno bundle build`: wheels for an offline machine that keeps its own torch (docs/offline.md).

Thin: the work is `wno.platform.bundle`; the installer it ships is `wno.platform.offline_install`.
"""

from __future__ import annotations

import typer

from wno.cli.common import user_errors
from wno.platform.bundle import DEFAULT_OUT, DEFAULT_PLATFORM, DEFAULT_PYTHON


def register(app: typer.Typer) -> None:
    bundle_app = typer.Typer(help="Offline installs: build a bundle of wheels (wno and what a "
                                  "worker needs beyond torch) and install it with its install.py.",
                             no_args_is_help=True)
    app.add_typer(bundle_app, name="bundle")
    bundle_app.command("build")(build_command)


def build_command(
    out: str = typer.Option(DEFAULT_OUT, "--out", help="Folder to write (new or empty)."),
    python: str = typer.Option(DEFAULT_PYTHON, "--python",
                               help="The offline machine's CPython, as 3.N."),
    platform: str = typer.Option(DEFAULT_PLATFORM, "--platform",
                                 help="The offline machine's platform, manylinux_X_Y_ARCH (X.Y "
                                 "at most its glibc version)."),
    replace: bool = typer.Option(False, "--replace", help="Replace a bundle already in --out."),
) -> None:
    """Download the worker's packages as wheels for --python/--platform (pinned to this
    environment's versions), build wno's wheel, write the manifest and install.py."""
    from wno.platform.bundle import build_bundle

    with user_errors():
        report = build_bundle(out, python=python, plat=platform, replace=replace)
    for line in report.lines():
        typer.echo(line)
