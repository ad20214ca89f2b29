"""`wno data pack`: write CIFAR-10 as image sheets, the compact layout for offline machines.

Thin: the work is `wno.training.pack.pack_cifar10`; the layout is `wno.training.sheets`, and
docs/offline.md says when to use it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from wno.cli.common import Unavailable, user_errors


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Data sets: pack CIFAR-10 into image sheets (about 32 MB) for a "
                                "machine that cannot download it.", no_args_is_help=True)
    app.add_typer(data_app, name="data")
    data_app.command("pack")(pack_command)


def pack_command(
    out: Path = typer.Option(..., "--out", help="Folder to write the sheet set to (new or empty); "
                             "name it <data dir>/cifar10-sheets for the loaders to find it."),
    data_dir: str = typer.Option(None, help="Where CIFAR-10 is now: torchvision's files, an "
                                 "ImageFolder tree, its zip, or another sheet set.",
                                 show_default="$WNO_DATA_DIR or ./data"),
    quality: int = typer.Option(95, min=50, max=100, help="JPEG quality of the sheets (95: mean "
                                "absolute error about 0.7 grey levels against the quality-75 zip)."),
    replace: bool = typer.Option(False, "--replace", help="Replace a sheet set already in --out."),
) -> None:
    """Write CIFAR-10 as JPEG sheets (4:4:4, 32x32-aligned) with a checked manifest, read it back
    and print its size and its pixel error against the source."""
    from wno.platform.defaults import data_dir as default_data_dir
    from wno.training.data import DataMissing
    from wno.training.pack import pack_cifar10

    with user_errors():
        try:
            report = pack_cifar10(default_data_dir(data_dir), out, quality=quality, replace=replace)
        except DataMissing as e:
            raise Unavailable(str(e)) from None
    for line in report.lines():
        typer.echo(line)
