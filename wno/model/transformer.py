"""The Wavelet Transformer: wavelet tokens -> scale-aware encodings -> W-MSA blocks -> classes.

    image (B, C, H, W)
      -> WaveletTransform2d (float32, ptwt)          multi-level coefficients
      -> WaveletTokenizer                             tokens (B, N, D) + metadata per token
      -> + ScaleAwarePositionalEncoding               PE_scale + PE_orient + PE_spatial
      -> depth x WMSABlock, kernel bias built once     (B, N, D)
      -> LayerNorm, mean over tokens, Linear          logits (B, num_classes)

The defaults are the original description's (small: 192 wide, 6 deep, 3 heads; db4, 3 levels):

    >>> model = WaveletTransformer(image_size=(32, 32), in_channels=3, num_classes=10,
    ...                            embed_dim=96, depth=4, num_heads=3, n_levels=3, wavelet="db4",
    ...                            use_kernel=True)
    >>> features, metadata = model.forward_features(torch.randn(2, 3, 32, 32))
    >>> features.shape, metadata["scales"].shape
    (torch.Size([2, 1329, 96]), torch.Size([1329]))
"""

from __future__ import annotations

import torch
import torch.nn as nn

from wno.base.datasets import DATASETS
from wno.model.attention_kernel import WaveletAttentionKernel
from wno.model.attention_paths import KernelAttention
from wno.model.positional_encoding import ScaleAwarePositionalEncoding
from wno.model.tokenization import TokenMeta, WaveletTokenizer
from wno.model.vit import ViT
from wno.model.wavelets_2d import WaveletTransform2d
from wno.model.wmsa import init_weights, make_blocks, square_size


class WaveletTransformer(nn.Module):
    """Image classifier over multi-scale wavelet tokens with Wavelet Multi-Scale Attention."""

    def __init__(self, image_size: int | tuple[int, int] = 32, in_channels: int = 3,
                 num_classes: int = 10, embed_dim: int = 192, depth: int = 6, num_heads: int = 3,
                 n_levels: int = 3, wavelet: str = "db4", use_kernel: bool = True,
                 mode: str = "boundary",
                 mlp_ratio: float = 4.0, drop_path: float = 0.1, dropout: float = 0.0,
                 token_layout: str = "seed", token_patch: int = 2, kernel_radius: float = 0.25,
                 kernel_scale_bandwidth: int = 1, attention: str = "auto"):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide embed_dim={embed_dim}")
        image_size = square_size(image_size)
        self.transform = WaveletTransform2d(wavelet, n_levels, mode, image_size)
        self.tokenizer = WaveletTokenizer(in_channels, embed_dim, self.transform.band_sizes(),
                                          layout=token_layout, patch=token_patch)
        meta = self.tokenizer.meta
        self.pos_encoding = ScaleAwarePositionalEncoding(embed_dim, n_levels, meta,
                                                         resolution=float(image_size))
        self.kernel_attention = (
            KernelAttention(WaveletAttentionKernel(meta, n_levels, kernel_radius,
                                                   kernel_scale_bandwidth), attention,
                            num_heads, embed_dim // num_heads)
            if use_kernel else None)
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, dropout, drop_path)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.apply(init_weights)

    @property
    def num_tokens(self) -> int:
        return self.tokenizer.num_tokens

    @property
    def meta(self) -> TokenMeta:
        return self.tokenizer.meta

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, TokenMeta]:
        """(B, C, H, W) images -> ((B, N, D) token features, per-token metadata)."""
        tokens = self.tokenizer(self.transform(x))  # (B, N, D)
        tokens = tokens + self.pos_encoding()
        bias = (self.kernel_attention.build(x.device, batch=x.shape[0])
                if self.kernel_attention else None)
        for block in self.blocks:
            tokens = block(tokens, bias)
        return self.norm(tokens), self.meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, _ = self.forward_features(x)
        return self.head(features.mean(dim=1))  # (B, num_classes)


def build_model(config) -> nn.Module:
    """The model a `TrainConfig` describes: a WaveletTransformer or its ViT twin.

    >>> from wno.training.config import TrainConfig
    >>> build_model(TrainConfig(model="vit", model_size="micro")).num_tokens
    64
    """
    config.validate()
    data = DATASETS[config.dataset]
    dim, depth, heads = config.model_dims()
    if config.model == "vit":
        return ViT(image_size=data.image_size, in_channels=data.in_channels,
                   num_classes=data.num_classes, embed_dim=dim, depth=depth, num_heads=heads,
                   patch_size=config.patch_size, mlp_ratio=config.mlp_ratio,
                   drop_path=config.drop_path, dropout=config.dropout)
    return WaveletTransformer(
        image_size=data.image_size, in_channels=data.in_channels, num_classes=data.num_classes,
        embed_dim=dim, depth=depth, num_heads=heads, n_levels=config.n_levels,
        wavelet=config.wavelet, use_kernel=config.use_kernel, mode=config.mode,
        mlp_ratio=config.mlp_ratio, drop_path=config.drop_path, dropout=config.dropout,
        token_layout=config.token_layout, token_patch=config.token_patch,
        kernel_radius=config.kernel_radius, kernel_scale_bandwidth=config.kernel_scale_bandwidth,
        attention=config.attention)
