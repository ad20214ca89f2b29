"""`wno compare`: W-MSA (kernel on and off) against its ViT twin, as a table, JSON and a figure."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from wno.cli.common import user_errors
from wno.base.sizes import MODEL_SIZES


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)


def compare_command(
    model_size: str = typer.Option("tiny", help=f"One of {', '.join(MODEL_SIZES)}."),
    wavelet: str = typer.Option("haar", help="Wavelet of the tokenizer."),
    n_levels: int = typer.Option(3, help="Wavelet decomposition levels."),
    config_file: Path = typer.Option(None, "--config", help="YAML of TrainConfig fields to start "
                                     "from (flags override it)."),
    batch_size: int = typer.Option(32, help="Batch size of the throughput runs."),
    steps: int = typer.Option(3, help="Timed steps per throughput figure; 0 skips the timing."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    plot: Path = typer.Option(Path("wno-runs/compare/kernel.png"), help="Where to draw the "
                              "kernel (a heatmap per pair of scales) and the token layout."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Do not draw the kernel figure."),
) -> None:
    """Compare W-MSA with the kernel on and off against ViT: params, tokens, FLOPs, images/s."""
    from rich.console import Console
    from rich.table import Table

    from wno.cli.train import build_config
    from wno.training.compare import compare, plot_kernel
    from wno.model import build_model

    console = Console(stderr=True)
    with user_errors():
        config = build_config(config_file, dict(model_size=model_size, wavelet=wavelet,
                                                n_levels=n_levels, model="wavelet"), [])
        rows = compare(config, batch_size=batch_size, throughput_steps=steps, device=device,
                       progress=lambda name: console.print(f"measuring {name} ..."))
        figure = None if no_plot else plot_kernel(build_model(config.replace(use_kernel=True)),
                                                  plot)
    if json_out:
        typer.echo(json.dumps({"rows": [r.to_dict() for r in rows],
                               "figure": str(figure) if figure else None}, indent=2))
        return
    table = Table(title=f"W-MSA vs ViT, size {model_size}, {wavelet} x {n_levels} levels "
                  f"(batch {batch_size}, {device})")
    for col in ("model", "params", "tokens", "GFLOPs/img", "attn pairs", "infer img/s",
                "train img/s", "train vs ViT"):
        table.add_column(col, justify="left" if col == "model" else "right")
    vit = rows[-1].train_images_per_s
    for r in rows:
        rel = f"{r.train_images_per_s / vit:.2f}x" if r.train_images_per_s and vit else "-"
        table.add_row(r.name, f"{r.params:,}", f"{r.tokens:,}", f"{r.flops / 1e9:.3f}",
                      f"{r.attention_pairs:,}",
                      f"{r.infer_images_per_s:.1f}" if r.infer_images_per_s else "-",
                      f"{r.train_images_per_s:.1f}" if r.train_images_per_s else "-", rel)
    Console().print(table)
    if figure:
        typer.echo(f"kernel figure: {figure}")
