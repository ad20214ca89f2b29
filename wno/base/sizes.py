"""The named model sizes, shared by W-MSA and its ViT twin (`wno.model.vit`).

Torch-free, so a configuration validates (`TrainConfig.problems`) without importing torch:
`wno study create`, `status` and `report` check every trial's configuration. `wno.model`
re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSize:
    embed_dim: int
    depth: int
    num_heads: int


# The seed's table (embed_dim / depth / heads), plus `micro` for CPU tests and smoke studies.
# Every size has a ViT twin of the same width, depth and heads (wno.model.vit).
MODEL_SIZES: dict[str, ModelSize] = {
    "micro": ModelSize(64, 2, 2),
    "tiny": ModelSize(96, 4, 3),
    "small": ModelSize(192, 6, 3),
    "base": ModelSize(384, 12, 6),
}
