"""The ViT baseline: torchvision's VisionTransformer at 32x32 with 4x4 patches.

Every W-MSA size has a twin here with the same width, depth and heads (wno.model.MODEL_SIZES), so
a comparison changes the tokens and the attention, not the capacity of the trunk.
"""

from __future__ import annotations

from torchvision.models.vision_transformer import VisionTransformer


def build_vit(image_size: int = 32, in_channels: int = 3, num_classes: int = 10,
              embed_dim: int = 96, depth: int = 4, num_heads: int = 3, patch_size: int = 4,
              mlp_ratio: float = 4.0, dropout: float = 0.0) -> VisionTransformer:
    """torchvision VisionTransformer sized like a W-MSA model: (image_size/patch)^2 + 1 tokens.

    >>> vit = build_vit(embed_dim=96, depth=4, num_heads=3)
    >>> vit.seq_length
    65
    """
    if embed_dim % num_heads:
        raise ValueError(f"num_heads={num_heads} does not divide embed_dim={embed_dim}")
    if image_size % patch_size:
        raise ValueError(f"patch_size={patch_size} does not divide the image size {image_size}")
    if in_channels != 3:
        raise ValueError("torchvision's VisionTransformer takes 3-channel images")
    return VisionTransformer(
        image_size=image_size, patch_size=patch_size, num_layers=depth, num_heads=num_heads,
        hidden_dim=embed_dim, mlp_dim=int(embed_dim * mlp_ratio), num_classes=num_classes,
        dropout=dropout, attention_dropout=dropout)
