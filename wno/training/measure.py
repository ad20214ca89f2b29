"""What a model costs: parameters, tokens, FLOPs per image, throughput.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` for everything except attention,
which is counted analytically: FlopCounterMode prices CPU `scaled_dot_product_attention` at zero
(and a masked call at the full dense cost), so its numbers would be wrong either way. W-MSA and
its ViT twin run the same blocks, so both are counted the same way (torchvision's ViT took torch's
native multi-head-attention fast path in eval, which FlopCounterMode does not see at all).
Attention costs 4 * D FLOPs per (query, key) pair per layer (QK^T and AV, 2 FLOPs per
multiply-add). A training step is counted as 3x the forward (forward + backward).

Two counts of a kernel-on model, since they differ and a comparison must say which it uses:

- `flops` (counted): only the pairs in the kernel's support, the work the idea needs;
- `executed_flops`: the pairs the attention path chosen for the device computes. The fused and
  dense paths compute every pair, the sparse one the key blocks it gathers, FlexAttention the
  blocks its block mask keeps; fused and sparse also carry the kernel's 8 feature channels per
  head in QK^T.

Kernel off and the ViT compute every pair: both counts are equal.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

_SDPA_OPS = ("_scaled_dot_product", "scaled_dot_product")


@dataclass
class ModelCost:
    params: int
    flops: int  # forward FLOPs per image, attention included
    tokens: int
    attention_pairs: int  # (query, key) pairs per layer that the model needs (the support)
    train_flops: int  # FLOPs of one training step per image (3x forward)
    executed_flops: int = 0  # forward FLOPs the device's attention path computes (module doc)
    path: str = "sdpa"  # the attention path: sdpa (no kernel), dense, fused, sparse or flex

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _attention_layout(model: nn.Module) -> tuple[int, int, int]:
    """(tokens, attention pairs per layer, attention layers x width) of a W-MSA model or a ViT."""
    from wno.model import WaveletTransformer
    from wno.model.vit import ViT

    if not isinstance(model, (WaveletTransformer, ViT)):
        raise TypeError(f"cannot measure attention of {type(model).__name__}")
    n = model.num_tokens
    ka = getattr(model, "kernel_attention", None)
    pairs = int(ka.kernel.support().sum()) if ka is not None else n * n
    return n, pairs, len(model.blocks) * model.head.in_features


def _executed_attention(model: nn.Module, device: torch.device, batch: int
                        ) -> tuple[int, str]:
    """(forward FLOPs of attention as the device's path computes it, the path's name)."""
    from wno.model.attention_paths import flex_block_mask

    n, _, layers_x_dim = _attention_layout(model)
    ka = getattr(model, "kernel_attention", None)
    if ka is None:
        return _pair_flops(layers_x_dim) * n * n, "sdpa"
    path = ka.resolve(device, batch)
    heads = model.blocks[0].attn.num_heads
    features = ka.kernel.token_features()[0].shape[1]  # channels appended to q and k per head
    if path == "sparse":
        layout = ka.sparse_layout
        pairs = sum(layout.sizes) * layout.bs * layout.bk
    elif path == "flex":
        mask = flex_block_mask(ka.kernel, device)
        pairs = int(mask.to_dense().sum()) * mask.BLOCK_SIZE[0] * mask.BLOCK_SIZE[1]
        features = 0  # the kernel is added per score (score_mod), not through q and k
    else:
        pairs = n * n
        features = features if path == "fused" else 0
    layers = len(model.blocks)
    per_pair = _pair_flops(layers_x_dim) + 2 * features * heads * layers
    return per_pair * pairs, path


def attention_flops_per_pair(model: nn.Module) -> int:
    """Forward FLOPs one (query, key) pair costs over all of `model`'s attention layers."""
    return _pair_flops(_attention_layout(model)[2])


def _pair_flops(layers_x_dim: int) -> int:
    return 4 * layers_x_dim  # q.k and p.v: a multiply-add per channel each, in every layer


def model_cost(model: nn.Module, config=None, image_size: int = 32, in_channels: int = 3) -> ModelCost:
    """Parameters, tokens and FLOPs per image of `model` (a W-MSA model or a ViT).

    >>> from wno.model import WaveletTransformer
    >>> cost = model_cost(WaveletTransformer(embed_dim=64, depth=2, num_heads=2))
    >>> cost.tokens
    1329
    """
    if config is not None:
        from wno.base.datasets import DATASETS

        info = DATASETS[config.dataset]
        image_size, in_channels = info.image_size, info.in_channels
    tokens, pairs, layers_x_dim = _attention_layout(model)
    device = next(model.parameters()).device
    x = torch.zeros(1, in_channels, image_size, image_size, device=device)
    was_training = model.training
    model.eval()
    # The dense path keeps attention inside one SDPA call, which we drop and count ourselves.
    ka = getattr(model, "kernel_attention", None)
    saved_path = ka.path if ka is not None else None
    if ka is not None:
        ka.path = "dense"
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        if ka is not None:
            ka.path = saved_path
        model.train(was_training)
    other = sum(count for op, count in counter.get_flop_counts()["Global"].items()
                if not any(s in str(op) for s in _SDPA_OPS))
    flops = int(other + _pair_flops(layers_x_dim) * pairs)
    executed, path = _executed_attention(model, device,
                                         config.batch_size if config is not None else 32)
    return ModelCost(count_params(model), flops, tokens, pairs, 3 * flops,
                     int(other + executed), path)


def throughput(model: nn.Module, batch_size: int = 32, image_size: int = 32, in_channels: int = 3,
               num_classes: int = 10, train: bool = True, steps: int = 5, warmup: int = 2,
               device: str | torch.device = "cpu", autocast_dtype: torch.dtype | None = None) -> float:
    """Images per second of inference (`train=False`) or training steps (`train=True`)."""
    device = torch.device(device)
    model = model.to(device).train(train)
    x = torch.randn(batch_size, in_channels, image_size, image_size, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None

    def step():
        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            if train:
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                with torch.no_grad():
                    model(x)

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch_size * steps / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
