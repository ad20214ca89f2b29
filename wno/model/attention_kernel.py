"""The attention kernel K = k_scale(j, j') * k_orient(o, o') * k_spatial(p, p').

Every factor is positive semi-definite, so their product is too (Schur):

- k_scale: an RBF over the level index with a learnable bandwidth sigma, times Wendland's
  compactly supported function of |j - j'| / (b + 1), so levels more than `b` apart
  (`scale_bandwidth`) never attend to each other.
- k_orient: the Gram matrix W W^T of a learnable nonnegative (4, r) matrix W (softplus): PSD and
  entrywise positive.
- k_spatial: Wendland's phi_{3,1}(d / radius) (PSD in up to three dimensions, zero beyond the
  radius) times an RBF with a learnable length scale, on scale-normalised positions in [0, 1]^2.
  (A truncated RBF would not be PSD; Wendland's function is, and gives real zeros.)

Applied to attention as a bias: softmax(QK^T / sqrt(d) + log K) equals multiplying the softmax
weights by K and renormalising. We add the sum of the log-factors (never the log of a product),
and log 0 = -inf marks the pairs that block-sparse attention may skip. Each token attends to
itself with K > 0, so every row keeps a finite entry.

The bias is built once per forward from small learnable tables (a (J+1) x (J+1) scale table, the
4 x 4 orientation table and one spatial length scale) and shared by every layer and head; the
support (which pairs are nonzero) depends only on the radius and bandwidth and is static.

log K splits into a learnable part and a static part:

    log K(i, j) = [-(l_i - l_j)^2 / 2 sigma^2 + log G[o_i, o_j] - |p_i - p_j|^2 / 2 l^2]   learnable
                + [log W(|l_i - l_j| / (b + 1)) + log W(|p_i - p_j| / radius)]              static

and the learnable part is low-rank in simple token features: expanding the squares,
it equals q_feat_i . k_feat_j plus terms that depend on i alone, which softmax ignores
(`query_features`, `key_features`). So the learnable kernel can ride inside QK^T as 8 extra
channels of q and k, and only the static part (with its -inf zeros) remains as a mask that needs
no gradient: exactly what fused attention kernels accept. `wno.model.attention_paths` uses this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from wno.model.tokenization import N_ORIENT, TokenMeta


def log_wendland(r: torch.Tensor) -> torch.Tensor:
    """log of Wendland's phi_{3,1}(r) = (1 - r)^4 (4r + 1) for r < 1, -inf from r >= 1."""
    # Scalars, not zeros_like/full_like: this also runs inside FlexAttention's score_mod.
    inside = r < 1
    rr = torch.where(inside, r, 0.0)
    return torch.where(inside, 4 * torch.log1p(-rr) + torch.log1p(4 * rr), -math.inf)


@dataclass
class KernelTables:
    """The learnable part of log K for one forward: small tables and one scalar."""

    scale: torch.Tensor  # (J+1, J+1) log k_scale indexed by level (1..J)
    orient: torch.Tensor  # (4, 4) log k_orient
    inv_two_l2: torch.Tensor  # () 1 / (2 l^2) of the spatial RBF


class WaveletAttentionKernel(nn.Module):
    """Learnable PSD kernel over (level, orientation, position) of the tokens in `meta`."""

    def __init__(self, meta: TokenMeta, n_levels: int, radius: float = 0.25,
                 scale_bandwidth: int = 1, orient_rank: int = N_ORIENT):
        super().__init__()
        if radius <= 0:
            raise ValueError(f"kernel radius must be > 0, got {radius}")
        if scale_bandwidth < 0:
            raise ValueError(f"kernel scale bandwidth must be >= 0, got {scale_bandwidth}")
        self.n_levels, self.radius, self.scale_bandwidth = n_levels, radius, scale_bandwidth
        self.log_sigma = nn.Parameter(torch.zeros(()))  # scale RBF bandwidth, sigma = 1 at init
        self.log_length = nn.Parameter(torch.tensor(math.log(radius)))  # spatial RBF length
        # Diagonal-dominant start: each orientation prefers its own kind, others still attend.
        self.orient_raw = nn.Parameter(2.0 * torch.eye(N_ORIENT, orient_rank) - 1.0)
        self.register_buffer("level", meta.level.clone(), persistent=False)
        self.register_buffer("orient", meta.orient.clone(), persistent=False)
        self.register_buffer("pos", meta.pos.clone(), persistent=False)

    # --- the learnable tables, once per forward ------------------------------------------------
    def tables(self) -> KernelTables:
        lv = torch.arange(self.n_levels + 1, device=self.pos.device, dtype=torch.float32)
        dj = (lv[:, None] - lv[None, :]).abs()  # (J+1, J+1)
        sigma2 = torch.exp(2 * self.log_sigma)
        scale = -dj**2 / (2 * sigma2) + log_wendland(dj / (self.scale_bandwidth + 1))
        w = F.softplus(self.orient_raw)  # (4, r) nonnegative
        orient = torch.log(w @ w.T)  # (4, 4), PSD Gram matrix with positive entries
        inv_two_l2 = 0.5 * torch.exp(-2 * self.log_length)
        return KernelTables(scale, orient, inv_two_l2)

    # --- log K for arbitrary index pairs ---------------------------------------------------------
    def pair_features(self, qi: torch.Tensor, ki: torch.Tensor):
        """Static per-pair features for index tensors qi, ki (broadcastable): the flat indices into
        the scale and orientation tables, the squared distance and log Wendland of the distance."""
        lq, lk = self.level[qi], self.level[ki]
        oq, ok = self.orient[qi], self.orient[ki]
        d2 = ((self.pos[qi] - self.pos[ki]) ** 2).sum(-1)
        scale_idx = lq * (self.n_levels + 1) + lk
        orient_idx = oq * N_ORIENT + ok
        log_w = log_wendland(d2.sqrt() / self.radius)
        return scale_idx, orient_idx, d2, log_w

    @staticmethod
    def combine(t: KernelTables, scale_idx, orient_idx, d2, log_w) -> torch.Tensor:
        """log K from the static pair features and this forward's tables."""
        return (t.scale.flatten()[scale_idx] + t.orient.flatten()[orient_idx]
                - d2 * t.inv_two_l2 + log_w)

    def static_log_k(self, qi: torch.Tensor, ki: torch.Tensor) -> torch.Tensor:
        """The parameter-free part of log K (the two Wendland factors; -inf off the support)."""
        dj = (self.level[qi] - self.level[ki]).abs().float()
        d = ((self.pos[qi] - self.pos[ki]) ** 2).sum(-1).sqrt()
        return log_wendland(dj / (self.scale_bandwidth + 1)) + log_wendland(d / self.radius)

    def token_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 8) query and key features whose dot product is the learnable part of log K,
        up to terms constant along each query's row.

        With l the (centred) level, p the (centred) position, s2 = sigma^2, L2 = l^2:
            q_feat = [l / s2, p / L2, 1, log G[o, :]]
            k_feat = [l, p, -l^2 / (2 s2) - |p|^2 / (2 L2), onehot(o)]
        """
        t = self.tables()
        lv = self.level.float() - (self.n_levels + 1) / 2  # centred: smaller terms to cancel
        p = self.pos - 0.5
        inv_s2 = torch.exp(-2 * self.log_sigma)
        inv_l2 = 2 * t.inv_two_l2
        log_g = t.orient  # (4, 4)
        ones = torch.ones_like(lv)
        q_feat = torch.cat([(lv * inv_s2)[:, None], p * inv_l2, ones[:, None], log_g[self.orient]],
                           dim=1)
        k_const = -0.5 * lv**2 * inv_s2 - 0.5 * (p**2).sum(-1) * inv_l2
        k_feat = torch.cat([lv[:, None], p, k_const[:, None],
                            F.one_hot(self.orient, N_ORIENT).float()], dim=1)
        return q_feat, k_feat  # each (N, 8)

    def log_k(self, qi: torch.Tensor, ki: torch.Tensor) -> torch.Tensor:
        return self.combine(self.tables(), *self.pair_features(qi, ki))

    def dense_log_k(self) -> torch.Tensor:
        """(N, N) log K with -inf outside the support (the dense reference)."""
        n = self.level.numel()
        idx = torch.arange(n, device=self.level.device)
        return self.log_k(idx[:, None], idx[None, :])

    def dense_static_log_k(self) -> torch.Tensor:
        """(N, N) parameter-free part of log K (-inf outside the support)."""
        idx = torch.arange(self.level.numel(), device=self.level.device)
        return self.static_log_k(idx[:, None], idx[None, :])

    def support(self) -> torch.Tensor:
        """(N, N) bool: the pairs with K > 0 (depends on radius and bandwidth only)."""
        return torch.isfinite(self.dense_static_log_k())

    def kept_fraction(self) -> float:
        return self.support().float().mean().item()
