"""Wavelet coefficients -> tokens (B, N, D) plus metadata per token.

Layouts (`layout=`):

- ``seed``: one token per coefficient position and band. Every level contributes its
  approximation and its three detail bands, except the coarsest, whose approximation is pooled to
  a single token. For 32x32 at 3 levels: (256 + 768) + (64 + 192) + (1 + 48) = 1,329 tokens.
- ``patch``: p x p coefficient patches per band (p = `patch`), the same bands, so the token count
  falls by about p^2 (32x32, 3 levels, p=2: 333 tokens; p=4: 84). Nothing is lost: a token's
  vector holds its p x p coefficients (C * p^2 values).
- ``pool``: the same grid as ``patch``, but each band is average-pooled over the p x p window, so
  a token holds C values. The same token count as ``patch`` with the fine detail averaged away:
  the two layouts separate "fewer tokens" from "less information" in a token-budget study
  (studies/tokens.yaml). With p = 1 both are the seed layout (`TrainConfig.canonical`).

Each token carries its level (1 = finest), orientation (0..3 = A, H, V, D), row and column in its
band's (patch) grid, and a scale-normalised position in [0, 1]^2 (the centre of its footprint), so
tokens of different levels that cover the same part of the image sit at the same position.

Token order: level by level (finest first); within a level, positions in Z-order (Morton) with the
orientations of one position next to each other. Neighbours in space and scale therefore sit in
the same blocks, which is what lets block-sparse attention skip the pairs the kernel zeroes.

Projection is orientation-aware: one linear map per orientation, because an H band and a V band
mean different things even with the same coefficient values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from wno.base.variants import TOKEN_LAYOUTS as LAYOUTS
from wno.model.wavelets_2d import WaveletCoeffs

N_ORIENT = 4


_META_KEYS = {"scales": "level", "orientations": "orient", "positions": "pos", "rows": "row",
              "cols": "col"}


@dataclass(frozen=True, eq=False)
class TokenMeta(Mapping):
    """Per-token metadata, each a tensor of length N (pos: (N, 2)).

    Also a read-only mapping, as the original description has it ("a dict with scales,
    orientations, positions"): ``meta["scales"]`` is ``meta.level``, ``meta["orientations"]``
    ``meta.orient``, ``meta["positions"]`` ``meta.pos`` (plus ``"rows"`` and ``"cols"``).
    ``len(meta)`` is therefore the number of keys; the number of tokens is ``meta.num_tokens``.
    """

    level: torch.Tensor  # (N,) long, 1 = finest
    orient: torch.Tensor  # (N,) long, 0..3 = A, H, V, D
    row: torch.Tensor  # (N,) long, in the band's (patch) grid
    col: torch.Tensor  # (N,) long
    pos: torch.Tensor  # (N, 2) float, scale-normalised centre in [0, 1]^2

    @property
    def num_tokens(self) -> int:
        return self.level.numel()

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in _META_KEYS:
            raise KeyError(f"{key!r}; token metadata has {', '.join(map(repr, _META_KEYS))}")
        return getattr(self, _META_KEYS[key])

    def __iter__(self) -> Iterator[str]:
        return iter(_META_KEYS)

    def __len__(self) -> int:
        return len(_META_KEYS)


def morton_order(h: int, w: int) -> torch.Tensor:
    """Indices of an (h, w) grid (row-major) sorted in Z-order."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    code = torch.zeros_like(rows)
    for bit in range(max(h, w).bit_length()):
        code |= ((rows >> bit) & 1) << (2 * bit + 1) | ((cols >> bit) & 1) << (2 * bit)
    return torch.argsort(code, stable=True)


class WaveletTokenizer(nn.Module):
    """Coefficients of `WaveletTransform2d` -> tokens (B, N, embed_dim) and `TokenMeta`.

    `band_sizes` are the (h, w) of each level's bands, finest first (`WaveletTransform2d.band_sizes`).

    Example:
        >>> from wno.model.wavelets_2d import WaveletTransform2d
        >>> wt = WaveletTransform2d("haar", 3)
        >>> tok = WaveletTokenizer(3, 96, wt.band_sizes(), layout="seed")
        >>> tok(wt(torch.randn(2, 3, 32, 32))).shape
        torch.Size([2, 1329, 96])
    """

    def __init__(self, in_channels: int, embed_dim: int, band_sizes: list[tuple[int, int]],
                 layout: str = "seed", patch: int = 2):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"token layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        if patch < 1:
            raise ValueError(f"token patch size must be >= 1, got {patch}")
        self.layout, self.band_sizes = layout, list(band_sizes)
        self.patch = patch if layout in ("patch", "pool") else 1
        self.in_channels = in_channels
        token_dim = in_channels * self.patch**2 if layout == "patch" else in_channels
        # One projection per orientation: weight (4, token_dim, D).
        self.proj_weight = nn.Parameter(torch.empty(N_ORIENT, token_dim, embed_dim))
        self.proj_bias = nn.Parameter(torch.zeros(N_ORIENT, embed_dim))
        nn.init.trunc_normal_(self.proj_weight, std=1.0 / math.sqrt(token_dim))
        self._build_layout()

    @property
    def num_tokens(self) -> int:
        return self.level.numel()

    def _grid(self, h: int, w: int) -> tuple[int, int]:
        p = self.patch
        return math.ceil(h / p), math.ceil(w / p)

    def _build_layout(self) -> None:
        """Token metadata and the permutation from band order into the sparse-friendly order."""
        levels, orients, rows, cols, pos = [], [], [], [], []
        coarsest = len(self.band_sizes)
        for j, (h, w) in enumerate(self.band_sizes, start=1):
            gh, gw = self._grid(h, w)
            z = morton_order(gh, gw)
            r, c = z // gw, z % gw
            centre = torch.stack([(r + 0.5) / gh, (c + 0.5) / gw], dim=1)  # (h*w, 2)
            if j == coarsest:  # pooled approximation token first, then the 3 detail bands
                levels.append(torch.tensor([j]))
                orients.append(torch.tensor([0]))
                rows.append(torch.tensor([0]))
                cols.append(torch.tensor([0]))
                pos.append(torch.tensor([[0.5, 0.5]]))
                band_orients = (1, 2, 3)
            else:
                band_orients = (0, 1, 2, 3)
            k = len(band_orients)
            levels.append(torch.full((gh * gw * k,), j))
            orients.append(torch.tensor(band_orients).repeat(gh * gw))
            rows.append(r.repeat_interleave(k))
            cols.append(c.repeat_interleave(k))
            pos.append(centre.repeat_interleave(k, dim=0))
        # Z-order of each level's (patch) grid, applied to the coefficients every forward.
        for j, (h, w) in enumerate(self.band_sizes):
            self.register_buffer(f"zorder{j}", morton_order(*self._grid(h, w)), persistent=False)
        self.register_buffer("level", torch.cat(levels), persistent=False)
        self.register_buffer("orient", torch.cat(orients), persistent=False)
        self.register_buffer("row", torch.cat(rows), persistent=False)
        self.register_buffer("col", torch.cat(cols), persistent=False)
        self.register_buffer("pos", torch.cat(pos).float(), persistent=False)

    @property
    def meta(self) -> TokenMeta:
        return TokenMeta(self.level, self.orient, self.row, self.col, self.pos)

    def _patches(self, band: torch.Tensor, j: int) -> torch.Tensor:
        """(B, K, C, h, w) bands of level j+1 -> (B, gh*gw in Z-order, K, token_dim) vectors:
        each position's p x p coefficients (patch layout) or their mean (pool layout)."""
        B, K, C, h, w = band.shape
        p = self.patch
        gh, gw = self._grid(h, w)
        if self.layout == "pool":
            # A window cut by the band's edge averages the coefficients it holds (no zero padding:
            # avg_pool2d without padding divides by the window's part inside the band).
            x = F.avg_pool2d(band.reshape(B * K, C, h, w), p, p, ceil_mode=True)  # (BK, C, gh, gw)
            x = x.view(B, K, C, gh * gw).permute(0, 3, 1, 2)  # (B, gh*gw, K, C)
            return x[:, getattr(self, f"zorder{j}")]
        if (gh * p, gw * p) != (h, w):  # padding modes give odd band sizes: pad with zeros
            band = F.pad(band, (0, gw * p - w, 0, gh * p - h))
        x = band.reshape(B, K, C, gh, p, gw, p).permute(0, 3, 5, 1, 2, 4, 6)  # (B,gh,gw,K,C,p,p)
        x = x.reshape(B, gh * gw, K, C * p * p)
        return x[:, getattr(self, f"zorder{j}")]

    def _pooled_approx(self, approx: torch.Tensor, j: int) -> torch.Tensor:
        """(B, C, h, w) coarsest approximation -> its single token's vector (B, 1, token_dim)."""
        if self.layout == "pool":  # the band's mean (a mean of window means would overweight
            return approx.mean((-2, -1))[:, None]  # the windows its edge cuts)
        return self._patches(approx.unsqueeze(1), j).mean(dim=1)  # mean patch vector

    def forward(self, coeffs: WaveletCoeffs) -> torch.Tensor:
        coarsest = coeffs.levels
        parts = []
        for j in range(coarsest):
            h, v, d = coeffs.details[j]
            if j + 1 < coarsest:
                bands = torch.stack([coeffs.approx[j], h, v, d], dim=1)  # (B, 4, C, h, w)
                x = self._patches(bands, j)  # (B, P, 4, token_dim)
                y = torch.einsum("bpkc,kcd->bpkd", x, self.proj_weight) + self.proj_bias
                parts.append(y.flatten(1, 2))  # (B, P*4, D)
            else:
                x = self._patches(torch.stack([h, v, d], dim=1), j)  # (B, P, 3, token_dim)
                y = torch.einsum("bpkc,kcd->bpkd", x, self.proj_weight[1:]) + self.proj_bias[1:]
                a = self._pooled_approx(coeffs.approx[j], j)  # (B, 1, token_dim)
                a = a @ self.proj_weight[0] + self.proj_bias[0]  # (B, 1, D)
                parts.extend([a, y.flatten(1, 2)])
        return torch.cat(parts, dim=1)  # (B, N, D)
