"""W-MSA (kernel on and off) against its ViT twin: parameters, tokens, FLOPs, throughput.

The seed's `compare_models.py`, as a library: `compare(config)` returns one row per model and
`plot_kernel(model, path)` draws what the kernel does (a heatmap per pair of scales, and the token
layout) so a researcher can see which tokens may attend to which.

Example:
    >>> rows = compare(TrainConfig(model_size="micro"), throughput_steps=0)
    >>> [r.name for r in rows]
    ['W-MSA (kernel on)', 'W-MSA (kernel off)', 'ViT']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from wno.training.config import TrainConfig
from wno.training.measure import model_cost, throughput
from wno.model import WaveletTransformer, build_model


@dataclass
class ComparisonRow:
    name: str
    config: dict
    params: int
    tokens: int
    flops: int  # forward, per image
    attention_pairs: int
    infer_images_per_s: float | None
    train_images_per_s: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def variants(config: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """The three models compared: W-MSA with and without the kernel, and the ViT twin."""
    return [("W-MSA (kernel on)", config.replace(model="wavelet", use_kernel=True)),
            ("W-MSA (kernel off)", config.replace(model="wavelet", use_kernel=False)),
            ("ViT", config.replace(model="vit"))]


def compare(config: TrainConfig, *, batch_size: int = 32, throughput_steps: int = 3,
            device: str = "cpu", progress=None) -> list[ComparisonRow]:
    """Measure every variant of `config`; `throughput_steps=0` skips the timing."""
    from wno.base.datasets import DATASETS

    info = DATASETS[config.dataset]
    rows = []
    for name, cfg in variants(config):
        if progress:
            progress(name)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg).to(device)
        cost = model_cost(model, cfg)
        infer = train = None
        if throughput_steps:
            kwargs = dict(batch_size=batch_size, image_size=info.image_size,
                          in_channels=info.in_channels, num_classes=info.num_classes,
                          steps=throughput_steps, warmup=1, device=device)
            infer = throughput(model, train=False, **kwargs)
            train = throughput(model, train=True, **kwargs)
        rows.append(ComparisonRow(name, cfg.to_dict(machine=False), cost.params, cost.tokens,
                                  cost.flops, cost.attention_pairs, infer, train))
    return rows


def plot_kernel(model: WaveletTransformer, path: str | Path) -> Path:
    """Draw the kernel per (query level, key level) and the token layout into an image file.

    Row a, column b shows K(q, k) for q the level-a token nearest the image centre (orientation
    H) and every level-b key, placed at its position: what one token may attend to, and how much.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ka = model.kernel_attention
    if ka is None:
        raise ValueError("the model has no kernel (use_kernel=False): nothing to draw")
    kernel = ka.kernel
    meta = model.meta
    levels = int(meta.level.max())
    with torch.no_grad():
        K = kernel.dense_log_k().exp().cpu()  # (N, N)
    K = K.numpy()
    pos, level, orient = meta.pos.cpu().numpy(), meta.level.cpu().numpy(), meta.orient.cpu().numpy()
    fig, axes = plt.subplots(levels, levels + 1, figsize=(3.2 * (levels + 1), 3.0 * levels),
                             squeeze=False)
    for a in range(1, levels + 1):
        cand = ((level == a) & (orient == 1)).nonzero()[0]
        q = cand[((pos[cand] - 0.5) ** 2).sum(1).argmin()]
        for b in range(1, levels + 1):
            ax = axes[a - 1][b - 1]
            keys = ((level == b) & (orient == 1)).nonzero()[0]
            sc = ax.scatter(pos[keys, 1], pos[keys, 0], c=K[q, keys], cmap="viridis", s=18,
                            marker="s", vmin=0, vmax=max(float(K[q, keys].max()), 1e-6))
            ax.plot(pos[q, 1], pos[q, 0], "r+", ms=10)
            ax.set(xlim=(0, 1), ylim=(1, 0), aspect="equal", xticks=[], yticks=[],
                   title=f"query level {a} -> keys level {b}")
            fig.colorbar(sc, ax=ax, fraction=0.046)
        # Last column: orientation factor for this row, then (first row) the token layout.
        ax = axes[a - 1][levels]
        if a == 1:
            ax.scatter(pos[:, 1], pos[:, 0], c=level, cmap="tab10", s=4)
            ax.set(xlim=(0, 1), ylim=(1, 0), aspect="equal", xticks=[], yticks=[],
                   title=f"{len(meta)} tokens, colour = level")
        elif a == 2:
            t = kernel.tables()
            im = ax.imshow(t.orient.exp().detach().cpu().numpy(), cmap="magma")
            ax.set(xticks=range(4), yticks=range(4), xticklabels="AHVD", yticklabels="AHVD",
                   title="k_orient")
            fig.colorbar(im, ax=ax, fraction=0.046)
        else:
            ax.axis("off")
    fig.suptitle(f"W-MSA kernel: radius {kernel.radius}, scale bandwidth "
                 f"{kernel.scale_bandwidth}, {kernel.kept_fraction():.1%} of pairs kept")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
