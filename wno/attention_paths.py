"""Four ways to compute kernel-shaped attention softmax(QK^T s + log K) V, one result.

- ``dense``: `scaled_dot_product_attention` with the (N, N) log-kernel as a float mask. The
  reference: simple, exact, and slow on CPU (a mask that needs grad takes the math path).
- ``fused``: the learnable part of log K rides in 8 extra channels of q and k (it is low-rank in
  token features, `WaveletAttentionKernel.token_features`) and only the static part stays as an
  (N, N) mask that needs no gradient, so SDPA's fused CPU kernel takes it. Exact, no gathers.
- ``sparse``: block-sparse attention in plain PyTorch. Tokens are ordered so that neighbours in
  space and scale share blocks (`wno.tokenization`); for every query block we gather only the key
  blocks the kernel's support touches, so the work falls with the kernel's radius and bandwidth.
  Each gathered group runs through the fused kernel with the same augmented q and k. Query
  blocks of 128 keep SDPA's CPU kernel efficient; key chunks of 16 keep the gathers coarse.
- ``flex``: FlexAttention with a `score_mod` that adds log K from the small learnable tables and a
  `block_mask` built from the same support, compiled, for GPUs (on CPU, FlexAttention runs the
  forward only, so it is a reference there).

`KernelAttentionBias.build(kernel, path)` prepares, once per forward, what the chosen path needs;
every layer and head then reuses it.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from wno.attention_kernel import KernelTables, WaveletAttentionKernel

PATHS = ("dense", "fused", "sparse", "flex")


# On CPU the block-sparse path beats the fused one only when it skips enough work: its gathers
# and per-group calls cost about what the fused path spends on the pairs it could skip when the
# gathered fraction is around a half (BENCHMARKS.md, attention rows).
SPARSE_MAX_GATHERED = 0.5


def resolve_path(path: str, device: torch.device | str,
                 gathered_fraction: float | None = None) -> str:
    """The attention path `path` runs as on `device`.

    `auto` -> flex on CUDA; on CPU sparse when its layout gathers at most SPARSE_MAX_GATHERED of
    the key blocks (`SparseLayout.gathered_fraction`), else fused. Every path computes the same
    attention (tests/test_attention.py), so this is a speed choice only.
    """
    if path != "auto":
        if path not in PATHS:
            raise ValueError(f"attention path {path!r} is not one of auto, {', '.join(PATHS)}")
        return path
    if torch.device(device).type == "cuda":
        return "flex"
    if gathered_fraction is not None and gathered_fraction <= SPARSE_MAX_GATHERED:
        return "sparse"
    return "fused"


def _split_by_cost(counts: list[int], max_groups: int) -> list[int]:
    """Split sorted `counts` into <= max_groups contiguous runs minimising sum(len * max).

    Returns the run boundaries (end indices). Padding every query block to the global maximum of
    key blocks wastes work when a few blocks (coarse levels) touch many more keys than the rest.
    """
    n = len(counts)
    best = [[math.inf] * (n + 1) for _ in range(max_groups + 1)]
    cut = [[0] * (n + 1) for _ in range(max_groups + 1)]
    best[0][0] = 0
    for g in range(1, max_groups + 1):
        for end in range(1, n + 1):
            for start in range(end):
                cost = best[g - 1][start] + (end - start) * max(counts[start:end])
                if cost < best[g][end]:
                    best[g][end], cut[g][end] = cost, start
    g = min(range(1, max_groups + 1), key=lambda k: best[k][n])
    bounds, end = [], n
    while end > 0:
        bounds.append(end)
        end, g = cut[g][end], g - 1
    return sorted(bounds)


class _Permute(torch.autograd.Function):
    """index_select along dim 1 by a permutation; the backward is the inverse permutation
    (a gather, not the scatter-add autograd would use, which is ~10x slower on CPU)."""

    @staticmethod
    def forward(ctx, x, perm, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(1, perm)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


class _GatherChunks(torch.autograd.Function):
    """index_select along dim 1 with repeats; the backward sums each chunk's copies back with one
    `index_add_` (autograd's generic backward of indexing builds a dense zero tensor per call)."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.save_for_backward(index)
        ctx.n_chunks = x.shape[1]
        return x.index_select(1, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        out = grad.new_zeros(grad.shape[0], ctx.n_chunks, *grad.shape[2:])
        return out.index_add_(1, index, grad), None


class SparseLayout(nn.Module):
    """Static block structure of the kernel's support, for the `sparse` path.

    Queries are cut into nb blocks of `block_size` tokens, keys into finer chunks of `key_block`
    tokens (a query block gathers only the key chunks its support touches, so finer chunks waste
    less). Query blocks are grouped by how many key chunks they touch (at most `max_groups`
    groups); within a group every query block gathers the same number of chunks (its own active
    ones, padded with masked filler), so each group is one fused attention call. Per group we keep
    the static part of log K for the gathered pairs as a mask: (nq, bs, L), -inf off the support.
    """

    def __init__(self, kernel: WaveletAttentionKernel, block_size: int = 128, key_block: int = 16,
                 max_groups: int = 4):
        super().__init__()
        if block_size % key_block:
            raise ValueError(f"block_size={block_size} must be a multiple of key_block={key_block}")
        n = kernel.level.numel()
        bs, bk = block_size, key_block
        nb = math.ceil(n / bs)
        n_pad = nb * bs
        device = kernel.level.device
        support = torch.zeros(n_pad, n_pad, dtype=torch.bool, device=device)
        support[:n, :n] = kernel.support()
        block_active = support.view(nb, bs, n_pad // bk, bk).any(dim=3).any(dim=1)  # (nb, nk)
        counts = block_active.sum(1)
        q_order = torch.argsort(counts, stable=True)  # query blocks by number of key chunks
        bounds = _split_by_cost(counts[q_order].tolist(), max_groups)
        self.n, self.n_pad, self.nb, self.bs, self.bk = n, n_pad, nb, bs, bk
        self.groups: list[tuple[int, int]] = []  # (number of query blocks, key chunks per query)
        start = 0
        for g, end in enumerate(bounds):
            q_blocks = q_order[start:end]
            kv = int(counts[q_blocks].max())
            index = self._add_group(g, kernel, support, block_active[q_blocks], q_blocks, kv)
            self.register_buffer(f"g{g}_kv", index, persistent=False)  # (nq * kv,) key chunks
            self.groups.append((end - start, kv))
            start = end
        # Queries are processed in q_order (groups are contiguous runs of it) and put back after.
        self.register_buffer("q_order", q_order, persistent=False)
        self.register_buffer("q_inverse", torch.argsort(q_order), persistent=False)
        self.block_density = float(counts.sum()) / (nb * n_pad // bk)
        self.gathered_fraction = sum(q * kv for q, kv in self.groups) / (nb * n_pad // bk)

    def _add_group(self, g: int, kernel, support, active, q_blocks, kv: int) -> torch.Tensor:
        """Registers group g's mask; returns the key chunk of each of its slots, (nq * kv,)."""
        n, bs, bk = self.n, self.bs, self.bk
        # Active key chunks first (stable), then filler slots pointing at chunk 0, masked.
        order = torch.argsort((~active).to(torch.int8), dim=1, stable=True)[:, :kv]
        slot_valid = torch.gather(active, 1, order)  # (nq, kv)
        kv_blocks = torch.where(slot_valid, order, torch.zeros_like(order))
        kv_tok = (kv_blocks[:, :, None] * bk + torch.arange(bk, device=order.device))
        kv_tok = kv_tok.reshape(len(q_blocks), kv * bk)  # (nq, L)
        q_tok = q_blocks[:, None] * bs + torch.arange(bs, device=order.device)  # (nq, bs)
        slot_ok = slot_valid.repeat_interleave(bk, dim=1)[:, None, :]  # (nq, 1, L)
        valid = support[q_tok[:, :, None], kv_tok[:, None, :]] & slot_ok  # (nq, bs, L)
        # Padded query rows are dropped after attention but need a finite entry, or the softmax
        # (and its gradient) turns to NaN: let them see every real key they gathered.
        pad_q = (q_tok >= n)[:, :, None]
        valid = torch.where(pad_q, (kv_tok < n)[:, None, :] & slot_ok, valid)
        qc, kc = q_tok.clamp(max=n - 1), kv_tok.clamp(max=n - 1)
        static = kernel.static_log_k(qc[:, :, None], kc[:, None, :])
        mask = torch.where(valid, torch.where(pad_q, 0.0, static), -math.inf)
        self.register_buffer(f"g{g}_mask", mask[None], persistent=False)  # (1, nq, bs, L)
        return kv_blocks.flatten()

    def group(self, g: int, name: str) -> torch.Tensor:
        return getattr(self, f"g{g}_{name}")


def _augment(q, k, v, q_feat, k_feat):
    """q, k with the kernel's feature channels appended (q's pre-divided by the softmax scale, so
    SDPA's scaling leaves q_feat . k_feat intact) and v zero-padded to the same head size."""
    B, H, N, dh = q.shape
    f = q_feat.shape[-1]
    scale = dh**-0.5
    q = torch.cat([q, (q_feat / scale).to(q.dtype).expand(B, H, N, f)], dim=-1)
    k = torch.cat([k, k_feat.to(k.dtype).expand(B, H, N, f)], dim=-1)
    return q, k, F.pad(v, (0, f)), scale


def fused_attention(q, k, v, q_feat, k_feat, static: torch.Tensor, dropout_p: float = 0.0):
    """softmax(q k^T / sqrt(d) + log K) v as one fused SDPA call (see the module docstring)."""
    dh = q.shape[-1]
    qa, ka, va, scale = _augment(q, k, v, q_feat, k_feat)
    out = F.scaled_dot_product_attention(qa, ka, va, attn_mask=static.to(q.dtype),
                                         dropout_p=dropout_p, scale=scale)
    return out[..., :dh]


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: SparseLayout,
                     q_feat: torch.Tensor, k_feat: torch.Tensor,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """Block-sparse softmax(q k^T / sqrt(d) + log K) v over the blocks in `layout`.

    The learnable part of log K enters as extra channels of q and k (`q_feat . k_feat`, see
    `WaveletAttentionKernel.token_features`), the static part as each group's mask, so every group
    runs through `scaled_dot_product_attention`'s fused kernel with a mask that needs no gradient.
    """
    B, H, N, dh = q.shape  # (B, H, N, dh)
    nb, bs, bk, n_pad = layout.nb, layout.bs, layout.bk, layout.n_pad
    q, k, v, scale = _augment(q, k, v, q_feat, k_feat)
    e = q.shape[-1]
    # Padded to whole blocks; q as query blocks, k and v as key chunks.
    q = F.pad(q, (0, 0, 0, n_pad - N)).view(B * H, nb, bs * e)
    k = F.pad(k, (0, 0, 0, n_pad - N)).view(B * H, n_pad // bk, bk * e)
    v = F.pad(v, (0, 0, 0, n_pad - N)).view(B * H, n_pad // bk, bk * e)
    qb = _Permute.apply(q, layout.q_order, layout.q_inverse)  # groups are runs of q_order
    # split (not slicing): its backward is one concatenation, not a zero-filled tensor per slice.
    q_parts = qb.split([nq for nq, _ in layout.groups], dim=1)
    outs = []
    for g, (nq, chunks) in enumerate(layout.groups):
        qg = q_parts[g].view(B * H, nq, bs, e)  # (BH, nq, bs, E)
        # One gather per group and tensor: contiguous inputs for SDPA, and gradients that go
        # straight back to the chunks (no stacking or concatenation of gathered copies).
        index = layout.group(g, "kv")
        kg = _GatherChunks.apply(k, index).view(B * H, nq, chunks * bk, e)  # (BH, nq, L, E)
        vg = _GatherChunks.apply(v, index).view(B * H, nq, chunks * bk, e)
        mask = layout.group(g, "mask").to(q.dtype)
        outs.append(F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask,
                                                   dropout_p=dropout_p, scale=scale))
    out = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]  # (BH, nb, bs, E) in q order
    out = _Permute.apply(out.view(B * H, nb, bs * e), layout.q_inverse, layout.q_order)
    return out.view(B, H, n_pad, e)[:, :, :N, :dh]


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


_flex_fallback_warned = False


def flex_score_mod(kernel: WaveletAttentionKernel):
    """FlexAttention score_mod adding log K for (q_idx, kv_idx).

    Built once per device and reused every step: it reads the kernel's parameters themselves
    (stable objects, gradients flow to them through FlexAttention's backward) and the static
    token buffers, so the compiled kernel is not re-specialised each step.
    """
    level, orient = kernel.level, kernel.orient
    px, py = kernel.pos[:, 0].contiguous(), kernel.pos[:, 1].contiguous()
    log_sigma, log_length, orient_raw = kernel.log_sigma, kernel.log_length, kernel.orient_raw
    radius, span = kernel.radius, kernel.scale_bandwidth + 1
    rank = orient_raw.shape[1]

    def log_wendland(r):
        rr = torch.where(r < 1, r, 0.0)
        return torch.where(r < 1, 4 * torch.log1p(-rr) + torch.log1p(4 * rr), -float("inf"))

    def score_mod(score, b, h, q_idx, kv_idx):
        dj = (level[q_idx] - level[kv_idx]).abs().to(torch.float32)
        d2 = (px[q_idx] - px[kv_idx]) ** 2 + (py[q_idx] - py[kv_idx]) ** 2
        log_scale = -dj * dj * 0.5 * torch.exp(-2 * log_sigma) + log_wendland(dj / span)
        gram = F.softplus(orient_raw[orient[q_idx], 0]) * F.softplus(orient_raw[orient[kv_idx], 0])
        for r in range(1, rank):
            gram = gram + (F.softplus(orient_raw[orient[q_idx], r])
                           * F.softplus(orient_raw[orient[kv_idx], r]))
        log_space = -d2 * 0.5 * torch.exp(-2 * log_length) + log_wendland(torch.sqrt(d2) / radius)
        return score + log_scale + torch.log(gram) + log_space

    return score_mod


def flex_block_mask(kernel: WaveletAttentionKernel, device: torch.device, block_size: int = 128):
    """BlockMask of the kernel's support (static: radius and bandwidth are fixed)."""
    from torch.nn.attention.flex_attention import create_block_mask

    level = kernel.level.to(device)
    px, py = kernel.pos[:, 0].to(device), kernel.pos[:, 1].to(device)
    # A hair wider than the support: the score_mod's -inf decides exactly.
    r2 = (kernel.radius * (1 + 1e-6)) ** 2
    bw = kernel.scale_bandwidth

    def mask_mod(b, h, q_idx, kv_idx):
        d2 = (px[q_idx] - px[kv_idx]) ** 2 + (py[q_idx] - py[kv_idx]) ** 2
        return ((level[q_idx] - level[kv_idx]).abs() <= bw) & (d2 < r2)

    n = level.numel()
    return create_block_mask(mask_mod, None, None, n, n, device=device, BLOCK_SIZE=block_size)


@dataclass
class KernelAttentionBias:
    """What one forward's attention layers need to apply the kernel on the chosen path."""

    path: str
    dense: torch.Tensor | None = None  # (N, N) for "dense"
    layout: SparseLayout | None = None  # for "sparse"
    q_feat: torch.Tensor | None = None  # for "sparse" and "fused"
    k_feat: torch.Tensor | None = None
    static: torch.Tensor | None = None  # (N, N) for "fused"
    score_mod: object = None  # for "flex"
    block_mask: object = None
    fallback: object = None  # "flex": builds the dense bias if compiling FlexAttention fails

    def attend(self, q, k, v, dropout_p: float = 0.0) -> torch.Tensor:
        global _flex_fallback_warned
        if self.path == "sparse":
            return sparse_attention(q, k, v, self.layout, self.q_feat, self.k_feat, dropout_p)
        if self.path == "fused":
            return fused_attention(q, k, v, self.q_feat, self.k_feat, self.static, dropout_p)
        if self.path == "flex":
            if q.device.type != "cuda":  # CPU: the eager forward-only reference
                from torch.nn.attention.flex_attention import flex_attention

                return flex_attention(q, k, v, score_mod=self.score_mod,
                                      block_mask=self.block_mask)
            if not _flex_fallback_warned:
                try:
                    return _compiled_flex()(q, k, v, score_mod=self.score_mod,
                                            block_mask=self.block_mask)
                except Exception as e:  # same math on the dense path rather than a dead run
                    warnings.warn(f"FlexAttention failed ({type(e).__name__}: {e}); using dense "
                                  f"SDPA with the same kernel from now on", stacklevel=2)
                    _flex_fallback_warned = True
            if self.dense is None:
                self.dense = self.fallback()
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.dense.to(q.dtype),
                                              dropout_p=dropout_p)


class KernelAttention(nn.Module):
    """Owns the kernel and the static structures of every path; builds the per-forward bias."""

    def __init__(self, kernel: WaveletAttentionKernel, path: str = "auto",
                 sparse_block_size: int = 128, sparse_key_block: int = 16,
                 flex_block_size: int = 128):
        super().__init__()
        if path != "auto" and path not in PATHS:
            raise ValueError(f"attention path {path!r} is not one of auto, {', '.join(PATHS)}")
        self.kernel, self.path = kernel, path
        self.flex_block_size = flex_block_size
        self.sparse_layout = SparseLayout(kernel, sparse_block_size, sparse_key_block)
        self._block_masks: dict[str, object] = {}  # per device: flex BlockMask, static log K

    def build(self, device: torch.device) -> KernelAttentionBias:
        path = resolve_path(self.path, device, self.sparse_layout.gathered_fraction)
        if path in ("sparse", "fused"):
            q_feat, k_feat = self.kernel.token_features()
            if path == "fused":
                return KernelAttentionBias(path, q_feat=q_feat, k_feat=k_feat,
                                           static=self._static(device))
            return KernelAttentionBias(path, layout=self.sparse_layout, q_feat=q_feat,
                                       k_feat=k_feat)
        t = self.kernel.tables()
        if path == "flex":
            key = str(device)
            if key not in self._block_masks:  # after .to(device): the buffers live there now
                self._block_masks[key] = (flex_block_mask(self.kernel, device,
                                                          self.flex_block_size),
                                          flex_score_mod(self.kernel))
            block_mask, score_mod = self._block_masks[key]
            return KernelAttentionBias(path, score_mod=score_mod, block_mask=block_mask,
                                       fallback=functools.partial(self._dense, t, device))
        return KernelAttentionBias(path, dense=self._dense(t, device))

    def _static(self, device: torch.device) -> torch.Tensor:
        """(N, N) static log K (no parameters), built once per device."""
        key = f"static:{device}"
        if key not in self._block_masks:
            idx = torch.arange(self.kernel.level.numel(), device=device)
            self._block_masks[key] = self.kernel.static_log_k(idx[:, None], idx[None, :])
        return self._block_masks[key]

    def _dense(self, t: KernelTables, device: torch.device) -> torch.Tensor:
        idx = torch.arange(self.kernel.level.numel(), device=device)
        return self.kernel.combine(t, *self.kernel.pair_features(idx[:, None], idx[None, :]))
