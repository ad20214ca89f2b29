"""Scale-aware positional encoding: PE_scale + PE_orient + PE_spatial.

PE_scale is learnable per level and PE_orient learnable per orientation; PE_spatial is a fixed
sinusoidal code of the scale-normalised position, so a level-1 token and the level-3 token above
it (same place in the image) get the same spatial code and differ only by PE_scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from wno.model.tokenization import N_ORIENT, TokenMeta


def sinusoidal_2d(pos: torch.Tensor, dim: int, resolution: float = 32.0) -> torch.Tensor:
    """(N, 2) positions in [0, 1] -> (N, dim) sin/cos code; half the channels per axis.

    Positions are scaled to `resolution` units (the image's pixel grid) so that neighbouring
    coefficients of the finest level differ in the highest frequencies.
    """
    if dim % 4:
        raise ValueError(f"sinusoidal 2D encoding needs dim divisible by 4, got {dim}")
    n_freq = dim // 4
    freqs = torch.exp(-math.log(10000.0) * torch.arange(n_freq, dtype=torch.float32) / n_freq)
    angles = pos.float()[:, :, None] * resolution * freqs  # (N, 2, n_freq)
    code = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (N, 2, 2*n_freq)
    return code.flatten(1)  # (N, dim)


class ScaleAwarePositionalEncoding(nn.Module):
    """Returns the (N, D) encoding to add to the tokens described by `meta`."""

    def __init__(self, embed_dim: int, n_levels: int, meta: TokenMeta, resolution: float = 32.0):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(n_levels + 1, embed_dim))  # index by level (1..J)
        self.orient = nn.Parameter(torch.zeros(N_ORIENT, embed_dim))
        nn.init.trunc_normal_(self.scale, std=0.02)
        nn.init.trunc_normal_(self.orient, std=0.02)
        self.register_buffer("spatial", sinusoidal_2d(meta.pos, embed_dim, resolution),
                             persistent=False)
        self.register_buffer("level", meta.level.clone(), persistent=False)
        self.register_buffer("orient_idx", meta.orient.clone(), persistent=False)

    def forward(self) -> torch.Tensor:
        return self.scale[self.level] + self.orient[self.orient_idx] + self.spatial  # (N, D)
