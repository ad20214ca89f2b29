"""W-MSA (kernel on and off) against its ViT twin: parameters, tokens, FLOPs, throughput.

The seed's `compare_models.py`, as a library: `compare(config)` returns one row per model,
`plot_kernel(model, path)` draws what the kernel does (a heatmap per pair of scales, and the token
layout) so a researcher can see which tokens may attend to which, and `plot_features(model, image,
path)` draws the original description's feature visualization of a trained model: what its tokens
carry per scale and orientation, and where its attention goes.

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
    flops: int  # forward, per image, counting the pairs the model needs (the kernel's support)
    executed_flops: int  # forward, per image, as the device's attention path computes them
    path: str  # the attention path measured (sdpa without a kernel)
    attention_pairs: int
    infer_images_per_s: float | None
    train_images_per_s: float | None

    def to_dict(self) -> dict:
        return asdict(self)


ORIENTATIONS = "AHVD"  # approximation, horizontal, vertical, diagonal detail

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
        cost = model_cost(model, cfg.replace(batch_size=batch_size))  # the path timed below
        infer = train = None
        if throughput_steps:
            kwargs = dict(batch_size=batch_size, image_size=info.image_size,
                          in_channels=info.in_channels, num_classes=info.num_classes,
                          steps=throughput_steps, warmup=1, device=device)
            infer = throughput(model, train=False, **kwargs)
            train = throughput(model, train=True, **kwargs)
        rows.append(ComparisonRow(name, cfg.to_dict(machine=False), cost.params, cost.tokens,
                                  cost.flops, cost.executed_flops, cost.path,
                                  cost.attention_pairs, infer, train))
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
                   title=f"{meta.num_tokens} tokens, colour = level")
        elif a == 2:
            t = kernel.tables()
            im = ax.imshow(t.orient.exp().detach().cpu().numpy(), cmap="magma")
            ax.set(xticks=range(4), yticks=range(4), xticklabels=list(ORIENTATIONS),
                   yticklabels=list(ORIENTATIONS), title="k_orient")
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


@torch.no_grad()
def token_maps(model: WaveletTransformer, image: torch.Tensor, query: int | None = None
               ) -> dict[str, object]:
    """What `model`'s tokens carry for one (C, H, W) image, and where its last block attends.

    Returns {"norm": (N,) L2 norm of each token's feature at the end of the blocks (before the
    final LayerNorm, which would make every norm sqrt(D)), "attention": (N,) the last
    block's attention weights (mean over heads) from token `query` to every token, "query": the
    query's index (default: the finest-level H token nearest the image centre), "meta": the
    tokens' metadata}. Attention is recomputed from the block's own q and k and the kernel's
    dense log K, the reference every attention path is tested against.
    """
    model.eval()
    block = model.blocks[-1]
    seen = {}
    hooks = [block.norm1.register_forward_hook(lambda m, i, out: seen.__setitem__("x", out)),
             model.norm.register_forward_hook(lambda m, i, out: seen.__setitem__("h", i[0]))]
    try:
        _, meta = model.forward_features(image[None].to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    attn = block.attn
    x = seen["x"]  # (1, N, D): the last block's normalised input
    q, k, _ = attn.heads(x)
    scores = q @ k.transpose(-2, -1) / attn.head_dim**0.5  # (1, H, N, N)
    if model.kernel_attention is not None:
        scores = scores + model.kernel_attention.kernel.dense_log_k()
    weights = scores.softmax(-1).mean(1)[0]  # (N, N)
    if query is None:
        fine = ((meta.level == 1) & (meta.orient == 1)).nonzero().flatten()
        query = int(fine[((meta.pos[fine] - 0.5) ** 2).sum(1).argmin()])
    return {"norm": seen["h"][0].norm(dim=-1).cpu(), "attention": weights[query].cpu(),
            "query": query, "meta": meta}


def plot_features(model: WaveletTransformer, image: torch.Tensor, path: str | Path,
                  title: str = "") -> Path:
    """Draw `token_maps` as images: a row per level, a column per orientation, each token at its
    place in its band; left half the feature norms, right half the attention from the query
    (marked with a red cross on its own band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = token_maps(model, image)
    meta = maps["meta"]
    level, orient = meta.level.cpu(), meta.orient.cpu()
    row, col = meta.row.cpu(), meta.col.cpu()
    levels = int(level.max())
    fig, axes = plt.subplots(levels, 8, figsize=(17, 2.2 * levels), squeeze=False,
                             layout="constrained")
    q = maps["query"]
    for half, (key, cmap) in enumerate((("norm", "viridis"), ("attention", "magma"))):
        values = maps[key]
        lo, hi = float(values.min()), float(values.max())  # one scale per half: bands compare
        for j in range(1, levels + 1):
            for o in range(4):
                ax = axes[j - 1][4 * half + o]
                ax.set(xticks=[], yticks=[])
                sel = ((level == j) & (orient == o)).nonzero().flatten()
                if j == 1:
                    ax.set_title(f"{key}: {ORIENTATIONS[o]}", fontsize=9)
                if o == 0:
                    ax.set_ylabel(f"level {j}", fontsize=9)
                if sel.numel() == 0:
                    ax.axis("off")
                    continue
                grid = torch.full((int(row[sel].max()) + 1, int(col[sel].max()) + 1), float("nan"))
                grid[row[sel], col[sel]] = values[sel].float()
                im = ax.imshow(grid.numpy(), cmap=cmap, interpolation="nearest", vmin=lo, vmax=hi)
                if key == "attention" and q in set(sel.tolist()):
                    ax.plot(int(col[q]), int(row[q]), "c+", ms=10, mew=2)
        fig.colorbar(im, ax=axes[:, 4 * half + 3].tolist(), fraction=0.05)
    fig.suptitle(title or f"tokens of a trained model: feature norm per scale and orientation "
                 f"(left), attention of the last block from token {q} (right)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def load_trained(checkpoint: str | Path) -> tuple[torch.nn.Module, TrainConfig]:
    """The model a training checkpoint (`last.pt`, `best.pt`, MLflow's `final.pt`) holds."""
    from wno.training.train_utils import load_checkpoint

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (a training run's "
                                f"last.pt or best.pt)")
    ckpt = load_checkpoint(path)
    if "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path} is not a wno training checkpoint (no config or model weights)")
    config = TrainConfig.from_dict(ckpt["config"])
    model = build_model(config.replace(device="cpu"))
    model.load_state_dict(ckpt["model"])
    return model.eval(), config


def test_image(config: TrainConfig, index: int = 0) -> tuple[torch.Tensor, str]:
    """Test image `index` of `config`'s data set, normalised as training saw it, and its class."""
    from wno.training.data import load_data

    data = load_data(config.replace(device="cpu"))
    if not 0 <= index < len(data.test):
        raise ValueError(f"--image {index} is not a test image index: 0 to {len(data.test) - 1}")
    # the training loader's own normalisation, so the figure shows what training saw: (C, H, W)
    x = data.loader("test", batch_size=1).normalize(data.test.images[index:index + 1])[0]
    label = int(data.test.labels[index])
    classes = data.info.classes
    return x, classes[label] if label < len(classes) else str(label)
