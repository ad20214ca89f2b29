"""`wno compare`: W-MSA (kernel on and off) against its ViT twin, as a table, JSON and figures.

With `--checkpoint`, a trained W-MSA model: its learned kernel, and the original description's
feature visualization (what its tokens carry per scale and orientation, where its attention goes)
on a test image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from wno.base.sizes import MODEL_SIZES
from wno.cli.common import UserError, given, user_errors
from wno.training import TrainConfig

D = TrainConfig()


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)


def compare_command(
    ctx: typer.Context,
    model_size: str = typer.Option(D.model_size, help=f"One of {', '.join(MODEL_SIZES)}."),
    wavelet: str = typer.Option(D.wavelet, help="Wavelet of the tokenizer."),
    n_levels: int = typer.Option(D.n_levels, help="Wavelet decomposition levels."),
    config_file: Path = typer.Option(None, "--config", help="YAML of TrainConfig fields to start "
                                     "from (flags override it)."),
    batch_size: int = typer.Option(32, help="Batch size of the throughput runs."),
    steps: int = typer.Option(3, help="Timed steps per throughput figure; 0 skips the timing."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    plot: Path = typer.Option(Path("wno-runs/compare/kernel.png"), help="Where to draw the "
                              "kernel (a heatmap per pair of scales) and the token layout; the "
                              "feature figure goes beside it (features.png)."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Do not draw the figures."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A trained W-MSA checkpoint "
                                    "(last.pt or best.pt of a run): compare its configuration, "
                                    "draw its learned kernel and what its tokens carry."),
    image: int = typer.Option(0, "--image", help="Test image shown with --checkpoint."),
    data_dir: str = typer.Option(None, "--data-dir", help="Data folder (with --checkpoint).",
                                 show_default="$WNO_DATA_DIR or ./data"),
) -> None:
    """Compare W-MSA with the kernel on and off against ViT: params, tokens, FLOPs (counted and
    executed), images/s; draw the kernel, and a trained model's tokens with --checkpoint."""
    from rich.console import Console
    from rich.table import Table

    from wno.cli.train import build_config
    from wno.model import build_model
    from wno.platform import defaults
    from wno.training.compare import (compare, load_trained, plot_features, plot_kernel,
                                      test_image)

    console = Console(stderr=True)
    features = None
    with user_errors():
        if checkpoint is not None:
            asked = [f"--{n.replace('_', '-')}" for n in ("model_size", "wavelet", "n_levels")
                     if given(ctx, n)] + (["--config"] if config_file is not None else [])
            if asked:
                raise UserError(f"--checkpoint takes its configuration from the checkpoint; "
                                f"drop {', '.join(asked)}")
            trained, config = load_trained(checkpoint)
            if config.model != "wavelet" or not config.use_kernel:
                raise UserError(f"{checkpoint} holds a {config.model} model"
                                f"{'' if config.model != 'wavelet' else ' without the kernel'}; "
                                "the kernel and token figures need a W-MSA model with the kernel")
            config = config.replace(data_dir=defaults.data_dir(data_dir))
        else:
            flags = {k: v for k, v in dict(model_size=model_size, wavelet=wavelet,
                                           n_levels=n_levels).items() if given(ctx, k)}
            config = build_config(config_file, {**flags, "model": "wavelet"}, [])
            trained = None
        rows = compare(config, batch_size=batch_size, throughput_steps=steps, device=device,
                       progress=lambda name: console.print(f"measuring {name} ..."))
        figure = None
        if not no_plot:
            model = trained or build_model(config.replace(use_kernel=True))
            figure = plot_kernel(model, plot)
            if trained is not None:
                x, label = test_image(config, image)
                features = plot_features(trained, x, plot.with_name("features.png"),
                                         title=f"{checkpoint}: test image {image} ({label}); "
                                               "feature norm per scale and orientation (left), "
                                               "attention of the last block (right)")
    if json_out:
        typer.echo(json.dumps({"rows": [r.to_dict() for r in rows],
                               "figure": str(figure) if figure else None,
                               "features": str(features) if features else None}, indent=2))
        return
    table = Table(title=f"W-MSA vs ViT, size {config.model_size}, {config.wavelet} x "
                  f"{config.n_levels} levels "
                  f"(batch {batch_size}, {device})")
    for col in ("model", "params", "tokens", "GFLOPs/img", "executed", "path", "attn pairs",
                "infer img/s", "train img/s", "train vs ViT"):
        table.add_column(col, justify="left" if col == "model" else "right")
    vit = rows[-1].train_images_per_s
    for r in rows:
        rel = f"{r.train_images_per_s / vit:.2f}x" if r.train_images_per_s and vit else "-"
        table.add_row(r.name, f"{r.params:,}", f"{r.tokens:,}", f"{r.flops / 1e9:.3f}",
                      f"{r.executed_flops / 1e9:.3f}", r.path, f"{r.attention_pairs:,}",
                      f"{r.infer_images_per_s:.1f}" if r.infer_images_per_s else "-",
                      f"{r.train_images_per_s:.1f}" if r.train_images_per_s else "-", rel)
    # Piped into a log, rich would squeeze the table into 80 columns and cut the numbers short.
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    console.print("GFLOPs/img counts the pairs the model needs (with the kernel: its support); "
                  "executed, the pairs the attention path computes on this device.")
    if figure:
        typer.echo(f"kernel figure: {figure}")
    if features:
        typer.echo(f"feature figure: {features}")
