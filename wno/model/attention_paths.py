"""Four ways to compute kernel-shaped attention softmax(QK^T s + log K) V, one result.

- ``dense``: `scaled_dot_product_attention` with the (N, N) log-kernel as a float mask. The
  reference: simple, exact, and slow on CPU (a mask that needs grad takes the math path).
- ``fused``: the learnable part of log K rides in 8 extra channels of q and k (it is low-rank in
  token features, `WaveletAttentionKernel.token_features`) and only the static part stays as an
  (N, N) mask that needs no gradient, so SDPA's fused CPU kernel takes it. Exact, no gathers.
- ``sparse``: block-sparse attention in plain PyTorch. Tokens are ordered so that neighbours in
  space and scale share blocks (`wno.model.tokenization`); for every query block we gather only the key
  blocks the kernel's support touches, so the work falls with the kernel's radius and bandwidth.
  Each query block runs through the fused kernel with the same augmented q and k, every
  (batch, head) pair one head of a token-major tensor, so blocks and chunks are contiguous.
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
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from wno.base.variants import ATTENTION_PATHS
from wno.model import path_choice
from wno.model.attention_kernel import N_ORIENT, KernelTables, WaveletAttentionKernel, log_wendland

PATHS = ATTENTION_PATHS  # dense, fused, sparse, flex (auto picks one per device)


# On CPU the block-sparse path beats the fused one only when it skips enough work: its gathers
# and per-block calls cost about what the fused path spends on the pairs it could skip when the
# gathered fraction is around a half (BENCHMARKS.md, attention rows).
SPARSE_MAX_GATHERED = 0.5


def resolve_path(path: str, device: torch.device | str,
                 gathered_fraction: float | None = None) -> str:
    """The attention path `path` runs as on `device`, by rule (no measurement).

    `auto` -> flex on CUDA; on CPU sparse when its layout gathers at most SPARSE_MAX_GATHERED of
    the key blocks (`SparseLayout.gathered_fraction`), else fused. `KernelAttention.resolve`
    measures instead on CPU (`wno.model.path_choice`). Every path computes the same attention
    (tests/test_attention.py), so this is a speed choice only.
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


class _GatherBlocks(torch.autograd.Function):
    """Gathers, for every query block, the key chunks it reads: one index_select forward over
    the leading (chunk) dimension, split into one (chunks, ...) tensor per block; the backward
    adds every block's gradient back into the chunks with one zero fill and an `index_add_` per
    block (autograd's own backward of indexing would fill and sum a full-size tensor per block).
    Chunks lead so that each one is a single contiguous run of memory (bk tokens x B*H x E):
    gathering them is a memcpy per chunk, where chunks inside each (batch, head) row were
    thousands of short copies (3x slower at 4-token chunks, measured)."""

    @staticmethod
    def forward(ctx, x, index, sizes: list[int]):
        ctx.save_for_backward(index)
        ctx.n_chunks, ctx.sizes = x.shape[0], sizes
        return x.index_select(0, index).split(sizes, dim=0)

    @staticmethod
    def backward(ctx, *grads):
        (index,) = ctx.saved_tensors
        first = next(g for g in grads if g is not None)
        out = first.new_zeros((ctx.n_chunks,) + first.shape[1:])
        for block_index, grad in zip(index.split(ctx.sizes), grads):
            if grad is not None:
                out.index_add_(0, block_index, grad)
        return out, None, None


class _Pack(torch.autograd.Function):
    """(B, H, N, dh) head tensor -> (B * H, n_pad, dh + f), or token-major (n_pad, B * H, dh + f):
    `feat * factor` appended as f channels (zeros when feat is None, for v), zeros for the padded
    tokens. One copy forward and views backward, where concatenating, padding and reshaping cost
    a copy each, both ways.

    Token-major is the sparse path's order: a chunk of tokens is one contiguous run for every
    (batch, head) at once, so gathering chunks is a memcpy each. Sequence-major is the fused
    path's: SDPA's CPU kernel reads a whole sequence 10% faster when its tokens are adjacent
    (measured at 1,329 tokens), and gathers nothing."""

    @staticmethod
    def forward(ctx, x, feat, n_pad: int, f: int, factor: float, token_major: bool = False):
        B, H, N, dh = x.shape
        if token_major:
            buf = x.new_empty(n_pad, B, H, dh + f)
            out = buf.permute(1, 2, 0, 3)  # (B, H, n_pad, E) view of the token-major buffer
        else:
            out = buf = x.new_empty(B, H, n_pad, dh + f)
        out[:, :, :N, :dh] = x
        out[:, :, N:] = 0
        if feat is None:
            out[:, :, :N, dh:] = 0
        else:
            out[:, :, :N, dh:] = (feat * factor).to(x.dtype)
        ctx.shape, ctx.factor, ctx.has_feat = (B, H, N, dh), factor, feat is not None
        ctx.token_major = token_major
        return buf.view(n_pad, B * H, dh + f) if token_major else buf.view(B * H, n_pad, dh + f)

    @staticmethod
    def backward(ctx, grad):
        B, H, N, dh = ctx.shape
        if ctx.token_major:
            grad = grad.view(-1, B, H, grad.shape[-1]).permute(1, 2, 0, 3)
        else:
            grad = grad.view(B, H, -1, grad.shape[-1])
        grad = grad[:, :, :N]  # (B, H, N, E)
        grad_feat = None
        if ctx.has_feat and ctx.needs_input_grad[1]:
            grad_feat = grad[..., dh:].sum((0, 1)) * ctx.factor
        return grad[..., :dh], grad_feat, None, None, None, None


def _heads(x: torch.Tensor) -> torch.Tensor:
    """Token-major (L, BH, E) -> the (1, BH, L, E) view SDPA takes (every sequence one head)."""
    return x.unsqueeze(0).transpose(1, 2)


class SparseLayout(nn.Module):
    """Static block structure of the kernel's support, for the `sparse` path.

    Block sizes (BENCHMARKS.md, attention rows; W-MSA tiny, 2 CPU cores): query blocks of 64
    (a 4 x 4 patch of positions at the finest level, in Z-order) with key chunks of 4 (one
    position, its four bands) gather 31% of the seed layout's keys; 128/16 gathered 45%. Smaller
    query blocks gather less still (16/4: 27%) but SDPA's CPU kernel costs about twice as much
    per pair on 16 queries as on 64.

    Queries are cut into nb blocks of `block_size` tokens, keys into finer chunks of `key_block`
    tokens: a query block gathers only the key chunks its support touches (finer chunks waste
    less, coarser ones gather faster). For every query block we keep the chunks it reads and the
    static part of log K for the gathered pairs as a mask: (1, 1, bs, L_b), -inf off the support.
    """

    def __init__(self, kernel: WaveletAttentionKernel, block_size: int = 64, key_block: int = 4):
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
        active = support.view(nb, bs, n_pad // bk, bk).any(dim=3).any(dim=1)  # (nb, n_pad // bk)
        self.n, self.n_pad, self.nb, self.bs, self.bk = n, n_pad, nb, bs, bk
        chunks = [torch.nonzero(row).flatten() for row in active]
        self.sizes = [len(c) for c in chunks]  # key chunks each query block reads
        self.register_buffer("kv_index", torch.cat(chunks), persistent=False)
        for b, c in enumerate(chunks):
            self.register_buffer(f"mask{b}", self._mask(kernel, support, b, c), persistent=False)
        self.gathered_fraction = sum(self.sizes) / (nb * n_pad // bk)

    def _mask(self, kernel, support, b: int, chunks: torch.Tensor) -> torch.Tensor:
        n, bs, bk = self.n, self.bs, self.bk
        kv_tok = (chunks[:, None] * bk + torch.arange(bk, device=chunks.device)).flatten()  # (L,)
        q_tok = b * bs + torch.arange(bs, device=chunks.device)  # (bs,)
        valid = support[q_tok[:, None], kv_tok[None, :]]  # (bs, L)
        # Padded query rows are dropped after attention but need a finite entry, or the softmax
        # (and its gradient) turns to NaN: let them see every real key they gathered.
        pad_q = (q_tok >= n)[:, None]
        valid = torch.where(pad_q, (kv_tok < n)[None, :], valid)
        qc, kc = q_tok.clamp(max=n - 1), kv_tok.clamp(max=n - 1)
        static = kernel.static_log_k(qc[:, None], kc[None, :])
        mask = torch.where(valid, torch.where(pad_q, 0.0, static), -math.inf)
        return mask[None, None]  # (1, 1, bs, L)

    def mask(self, b: int) -> torch.Tensor:
        return getattr(self, f"mask{b}")

    def masks(self, dtype: torch.dtype) -> list[torch.Tensor]:
        """Every block's mask in `dtype` (the dtype attention runs in under autocast)."""
        return [self.mask(b).to(dtype) for b in range(self.nb)]


def fused_attention(q, k, v, q_feat, k_feat, static: torch.Tensor, dropout_p: float = 0.0):
    """softmax(q k^T / sqrt(d) + log K) v as one fused SDPA call (see the module docstring).

    `static` is the (N, N) parameter-free part of log K, already in q's dtype.
    """
    B, H, N, dh = q.shape  # (B, H, N, dh)
    f = q_feat.shape[-1]
    scale = dh**-0.5
    # q's features pre-divided by the softmax scale, so SDPA's scaling leaves q_feat . k_feat
    # intact; v gets zero channels to match the head size.
    qa = _Pack.apply(q, q_feat, N, f, 1 / scale).view(B, H, N, dh + f)
    ka = _Pack.apply(k, k_feat, N, f, 1.0).view(B, H, N, dh + f)
    va = _Pack.apply(v, None, N, f, 1.0).view(B, H, N, dh + f)
    out = F.scaled_dot_product_attention(qa, ka, va, attn_mask=static, dropout_p=dropout_p,
                                         scale=scale)
    return out[..., :dh]


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: SparseLayout,
                     q_feat: torch.Tensor, k_feat: torch.Tensor, dropout_p: float = 0.0,
                     masks: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Block-sparse softmax(q k^T / sqrt(d) + log K) v over the blocks in `layout`.

    The learnable part of log K enters as extra channels of q and k (`q_feat . k_feat`, see
    `WaveletAttentionKernel.token_features`), the static part as each query block's mask, so every
    block runs through `scaled_dot_product_attention`'s fused kernel with a mask that needs no
    gradient. `masks`: the layout's masks in q's dtype (cast once per forward by the caller).
    """
    B, H, N, dh = q.shape  # (B, H, N, dh)
    nb, bs, bk, n_pad = layout.nb, layout.bs, layout.bk, layout.n_pad
    f = q_feat.shape[-1]
    e, scale = dh + f, dh**-0.5
    # q's features pre-divided by the softmax scale, so SDPA's scaling leaves q_feat . k_feat
    # intact; v gets zero channels to match the head size.
    q = _Pack.apply(q, q_feat, n_pad, f, 1 / scale, True).view(nb, bs, B * H, e)  # query blocks
    k = _Pack.apply(k, k_feat, n_pad, f, 1.0, True).view(n_pad // bk, bk, B * H, e)  # key chunks
    v = _Pack.apply(v, None, n_pad, f, 1.0, True).view(n_pad // bk, bk, B * H, e)
    kg = _GatherBlocks.apply(k, layout.kv_index, layout.sizes)
    vg = _GatherBlocks.apply(v, layout.kv_index, layout.sizes)
    if masks is None:
        masks = layout.masks(q.dtype)
    outs = []
    for b, (qb, kb, vb) in enumerate(zip(q.unbind(0), kg, vg)):
        out = F.scaled_dot_product_attention(
            _heads(qb), _heads(kb.flatten(0, 1)), _heads(vb.flatten(0, 1)),
            attn_mask=masks[b], dropout_p=dropout_p, scale=scale)  # (1, BH, bs, E)
        outs.append(out[0].transpose(0, 1))  # (bs, BH, E): token-major, as SDPA wrote it
    out = torch.cat(outs).view(n_pad, B, H, e)
    return out[:N, ..., :dh].permute(1, 2, 0, 3)  # (B, H, N, dh)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


# (device, with gradients) -> whether compiled FlexAttention runs there: probed once per process.
_FLEX_USABLE: dict[tuple[str, bool], bool] = {}


def flex_usable(flex, q, k, v, score_mod, block_mask) -> bool:
    """Whether `flex` runs forward (and, for q that needs gradients, backward) on these inputs.

    torch.compile builds FlexAttention's backward lazily, at the first `backward()`, outside any
    try around the forward; so the first call on a device runs one forward and backward on
    detached copies (gradients for the copies only: parameters are untouched) and the answer is
    kept. Where it fails, the caller takes the fused path, with a warning naming the error.
    """
    key = (str(q.device), q.requires_grad)
    if key not in _FLEX_USABLE:
        try:
            probe = [t.detach().requires_grad_(q.requires_grad) for t in (q, k, v)]
            out = flex(*probe, score_mod=score_mod, block_mask=block_mask)
            if q.requires_grad:
                torch.autograd.grad(out.float().sum(), probe)
            _FLEX_USABLE[key] = True
        except Exception as e:  # the same math on the fused path rather than a dead run
            warnings.warn(f"FlexAttention failed on {q.device} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:300] if str(e) else ''}); using the fused "
                          f"SDPA path with the same kernel instead", stacklevel=3)
            _FLEX_USABLE[key] = False
    return _FLEX_USABLE[key]


def flex_fell_back() -> bool:
    """Whether FlexAttention failed somewhere in this process (its callers ran the fused path)."""
    return not all(_FLEX_USABLE.values())


def flex_score_mod(kernel: WaveletAttentionKernel, t: KernelTables):
    """FlexAttention score_mod adding log K for (q_idx, kv_idx), from this forward's tables `t`.

    FlexAttention's compiled backward (torch 2.11 on an H200) rejects a score_mod that indexes a
    tensor needing gradients twice, or captures a 0-d one (pytorch#145208), so every learnable
    input is a small table indexed exactly once: the scale table and 1 / (2 l^2) (repeated) by
    level pair, the orientation table by orientation pair. Built every forward from the same code
    over same-shaped tensors, so the compiled kernel is reused (tests/test_attention.py checks
    that nothing recompiles). The compiled backward of this version is not yet verified on a GPU
    (BENCHMARKS.md, gpu); where it fails, training continues on the fused path with a warning.
    """
    level, orient = kernel.level, kernel.orient
    px, py = kernel.pos[:, 0].contiguous(), kernel.pos[:, 1].contiguous()
    radius, n_scale = kernel.radius, kernel.n_levels + 1
    scale_table, orient_table = t.scale.flatten(), t.orient.flatten()
    # One entry per level pair (all equal), indexed like the scale table: torch 2.11's backward
    # could not lower the gradient scatter of an index that depends on the query alone (H200).
    inv_two_l2 = t.inv_two_l2.reshape(1).repeat(n_scale * n_scale)

    def score_mod(score, b, h, q_idx, kv_idx):
        level_pair = level[q_idx] * n_scale + level[kv_idx]
        d2 = (px[q_idx] - px[kv_idx]) ** 2 + (py[q_idx] - py[kv_idx]) ** 2
        log_scale = scale_table[level_pair]
        log_orient = orient_table[orient[q_idx] * N_ORIENT + orient[kv_idx]]
        log_space = -d2 * inv_two_l2[level_pair] + log_wendland(torch.sqrt(d2) / radius)
        return score + log_scale + log_orient + log_space

    return score_mod


def flex_block_mask(kernel: WaveletAttentionKernel, device: torch.device, block_size: int = 128):
    """BlockMask of the kernel's support (static: radius and bandwidth are fixed)."""
    from torch.nn.attention.flex_attention import create_block_mask

    support = kernel.support().to(device)  # (N, N) bool

    def mask_mod(b, h, q_idx, kv_idx):
        return support[q_idx, kv_idx]

    n = support.shape[0]
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
    fallback: object = None  # "flex": builds the fused path's bias, used where flex cannot run
    _cast: dict = field(default_factory=dict)  # masks in the dtype attention runs in (autocast)

    def attend(self, q, k, v, dropout_p: float = 0.0) -> torch.Tensor:
        if self.path == "sparse":
            return sparse_attention(q, k, v, self.layout, self.q_feat, self.k_feat, dropout_p,
                                    masks=self._in(q.dtype, "masks"))
        if self.path == "fused":
            return fused_attention(q, k, v, self.q_feat, self.k_feat, self._in(q.dtype, "static"),
                                   dropout_p)
        if self.path == "flex":
            if dropout_p > 0:  # FlexAttention has no attention dropout: the same math, fused
                return self._fallback().attend(q, k, v, dropout_p)
            if q.device.type != "cuda":  # CPU: the eager forward-only reference
                from torch.nn.attention.flex_attention import flex_attention

                return flex_attention(q, k, v, score_mod=self.score_mod,
                                      block_mask=self.block_mask)
            flex = _compiled_flex()
            if flex_usable(flex, q, k, v, self.score_mod, self.block_mask):
                return flex(q, k, v, score_mod=self.score_mod, block_mask=self.block_mask)
            return self._fallback().attend(q, k, v, dropout_p)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self._in(q.dtype, "dense"),
                                              dropout_p=dropout_p)

    def _in(self, dtype: torch.dtype, name: str):
        """This forward's static mask(s) `name` in `dtype`, cast once for every layer."""
        if (name, dtype) not in self._cast:
            self._cast[name, dtype] = (self.layout.masks(dtype) if name == "masks"
                                       else getattr(self, name).to(dtype))
        return self._cast[name, dtype]

    def _fallback(self) -> "KernelAttentionBias":
        if not isinstance(self.fallback, KernelAttentionBias):
            self.fallback = self.fallback()
        return self.fallback


class KernelAttention(nn.Module):
    """Owns the kernel and the static structures of every path; builds the per-forward bias."""

    def __init__(self, kernel: WaveletAttentionKernel, path: str = "auto", num_heads: int = 1,
                 head_dim: int = 32):
        super().__init__()
        if path != "auto" and path not in PATHS:
            raise ValueError(f"attention path {path!r} is not one of auto, {', '.join(PATHS)}")
        self.kernel, self.path = kernel, path
        self.num_heads, self.head_dim = num_heads, head_dim
        self.sparse_layout = SparseLayout(kernel)
        self._static: dict[tuple[str, str], object] = {}  # (what, device): built once per device
        self._chosen: dict[tuple[str, int], str] = {}  # (device, batch) -> path, for `auto`

    def resolve(self, device: torch.device | str, batch: int = 32) -> str:
        """The path this attention runs on `device` for batches of `batch`: the one asked for,
        else (`auto`) on CPU the faster of fused and sparse as measured once on this machine
        (`wno.model.path_choice`), on CUDA FlexAttention."""
        device = torch.device(device)
        if self.path != "auto" or device.type != "cpu" or not path_choice.autotune_enabled():
            return resolve_path(self.path, device, self.sparse_layout.gathered_fraction)
        batch = min(batch, path_choice.MAX_BATCH)  # both paths scale alike past a few images
        if (str(device), batch) not in self._chosen:
            shape = (batch, self.num_heads, self.kernel.level.numel(), self.head_dim)
            self._chosen[str(device), batch] = path_choice.choose(
                {p: self._attention_step(p, device, shape) for p in ("fused", "sparse")},
                path_choice.key(shape, self.sparse_layout.gathered_fraction))
        return self._chosen[str(device), batch]

    def _attention_step(self, path: str, device: torch.device, shape: tuple[int, ...]):
        """One forward and backward of attention on `path` with random q, k, v of `shape`; the
        kernel's parameters take no part in the backward (they get no gradient from a timing)."""
        def step() -> None:
            with torch.no_grad():
                bias = self._bias(path, device)
            # A generator of its own: timing must not move the global RNG that training draws
            # from, or a run that measured would differ from one that read the cached choice.
            gen = torch.Generator(device=device).manual_seed(0)
            with torch.enable_grad():
                q, k, v = (torch.randn(shape, device=device, generator=gen, requires_grad=True)
                           for _ in range(3))
                bias.attend(q, k, v).sum().backward()

        return step

    def build(self, device: torch.device, batch: int = 32) -> KernelAttentionBias:
        return self._bias(self.resolve(device, batch), device)

    def _bias(self, path: str, device: torch.device) -> KernelAttentionBias:
        if path == "fused":
            return self._fused(device)
        if path == "sparse":
            q_feat, k_feat = self.kernel.token_features()
            return KernelAttentionBias(path, layout=self.sparse_layout, q_feat=q_feat,
                                       k_feat=k_feat)
        t = self.kernel.tables()
        if path == "flex":
            block_mask = self._once("block_mask", device,
                                    lambda: flex_block_mask(self.kernel, device))
            return KernelAttentionBias(path, score_mod=flex_score_mod(self.kernel, t),
                                       block_mask=block_mask,
                                       fallback=functools.partial(self._fused, device))
        idx = torch.arange(self.kernel.level.numel(), device=device)
        dense = self.kernel.combine(t, *self.kernel.pair_features(idx[:, None], idx[None, :]))
        return KernelAttentionBias(path, dense=dense)

    def _fused(self, device: torch.device) -> KernelAttentionBias:
        q_feat, k_feat = self.kernel.token_features()
        static = self._once("static", device, self.kernel.dense_static_log_k)
        return KernelAttentionBias("fused", q_feat=q_feat, k_feat=k_feat, static=static)

    def _once(self, what: str, device: torch.device, make):
        """`make()` the first time `what` is asked for on `device` (after .to(device) the
        kernel's buffers live there), the kept value after."""
        key = (what, str(device))
        if key not in self._static:
            self._static[key] = make()
        return self._static[key]
