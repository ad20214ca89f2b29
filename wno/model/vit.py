"""The ViT baseline: W-MSA's twin over image patches.

Everything but the tokens and the attention is W-MSA's own (`wno.model.wmsa`): the same pre-norm
blocks with the same stochastic-depth ramp and dropout, the same LayerNorm, MLP ratio and weight
init, the same final norm, mean pooling over tokens and linear head. What differs is what a
comparison is about: the tokens are (image_size / patch_size)^2 linear patch embeddings plus a
learned position embedding (no class token), and attention is plain softmax attention over them
(W-MSA's block with no kernel bias). A comparison therefore changes the tokens and the attention,
not the regularisation or the capacity of the trunk (tests/test_model.py pins the parity).

Example:
    >>> vit = ViT(embed_dim=96, depth=4, num_heads=3, patch_size=4)
    >>> vit.num_tokens, vit(torch.randn(2, 3, 32, 32)).shape
    (64, torch.Size([2, 10]))
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from wno.model.wmsa import init_weights, make_blocks, square_size


class ViT(nn.Module):
    """Vision Transformer sized like a W-MSA model, over (image_size / patch_size)^2 tokens."""

    def __init__(self, image_size: int | tuple[int, int] = 32, in_channels: int = 3,
                 num_classes: int = 10, embed_dim: int = 192, depth: int = 6, num_heads: int = 3,
                 patch_size: int = 4, mlp_ratio: float = 4.0, drop_path: float = 0.1,
                 dropout: float = 0.0):
        super().__init__()
        image_size = square_size(image_size)
        if embed_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide embed_dim={embed_dim}")
        if image_size % patch_size:
            raise ValueError(f"patch_size={patch_size} does not divide the image size {image_size}")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid**2, embed_dim))
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, dropout, drop_path)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.apply(init_weights)
        # The patch embedding is a linear map of a patch, initialised as W-MSA's tokenizer
        # initialises its projection of a token: std 1/sqrt(inputs).
        fan_in = in_channels * patch_size**2
        nn.init.trunc_normal_(self.patch_embed.weight, std=1.0 / math.sqrt(fan_in))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @property
    def num_tokens(self) -> int:
        return self.grid**2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N, D) token features."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        tokens = tokens + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=1))  # (B, num_classes)
