"""Wavelet Multi-Scale Attention (W-MSA) and the transformer block built on it.

The block, its stochastic-depth ramp and the weight init are shared with the ViT twin
(`wno.model.vit`), so W-MSA and ViT differ in their tokens and their attention only.

With the kernel off, attention is plain `scaled_dot_product_attention` (its fastest path). With the
kernel on, the per-forward `KernelAttentionBias` (see `wno.model.attention_paths`) applies
softmax(QK^T / sqrt(d) + log K) on the dense, block-sparse or FlexAttention path.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from wno.model.attention_paths import KernelAttentionBias


class WaveletMultiScaleAttention(nn.Module):
    """Multi-head self-attention over wavelet tokens, optionally shaped by the kernel."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide embed_dim={dim}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop, self.proj_drop = attn_drop, nn.Dropout(proj_drop)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of tokens `x` (B, N, D), each (B, H, N, dh)."""
        B, N, _ = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def forward(self, x: torch.Tensor, bias: KernelAttentionBias | None = None) -> torch.Tensor:
        B, N, D = x.shape  # (B, N, D)
        q, k, v = self.heads(x)  # each (B, H, N, dh)
        p = self.attn_drop if self.training else 0.0
        if bias is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            out = bias.attend(q, k, v, dropout_p=p)
        out = out.transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        return self.proj_drop(self.proj(out))


class DropPath(nn.Module):
    """Stochastic depth per sample: drop the residual branch of a whole image with probability p
    and scale the kept ones by 1 / (1 - p). The same computation and random draws as
    torchvision's `StochasticDepth(p, "row")`, without importing torchvision.ops (2.6 s of every
    start: it pulls in torch._dynamo)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1)
        if keep > 0.0:
            noise.div_(keep)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class WMSABlock(nn.Module):
    """Pre-norm block: x + DropPath(W-MSA(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WaveletMultiScaleAttention(dim, num_heads, attn_drop=drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)  # per sample, as in ViT

    def forward(self, x: torch.Tensor, bias: KernelAttentionBias | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), bias))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def make_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0,
                drop_path: float = 0.1) -> nn.ModuleList:
    """`depth` pre-norm blocks whose stochastic depth rises linearly from 0 to `drop_path`."""
    rates = torch.linspace(0, drop_path, depth).tolist()
    return nn.ModuleList(WMSABlock(dim, num_heads, mlp_ratio, drop, r) for r in rates)


def init_weights(m: nn.Module) -> None:
    """Truncated-normal linear layers (std 0.02), unit LayerNorms: both models' trunks alike."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def square_size(image_size: int | tuple[int, int]) -> int:
    """The side of a square image given as an int or an (H, W) pair (the models take squares)."""
    if isinstance(image_size, int):
        return image_size
    h, w = (int(s) for s in image_size)
    if h != w:
        raise ValueError(f"image_size={tuple(image_size)}: only square images are supported "
                         f"(the wavelet levels halve both sides alike); give an int or (n, n)")
    return h
