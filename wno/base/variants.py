"""The named choices every layer agrees on: what a configuration may name, and nothing more.

The model layer builds what these name, the training layer validates configurations against them,
and the platform lists them in messages; keeping them here keeps the model layer from importing
the configuration module above it.
"""

from __future__ import annotations

MODELS = ("wavelet", "vit")  # W-MSA Wavelet Transformer, or its ViT twin
TOKEN_LAYOUTS = ("seed", "patch", "pool")  # see wno.model.tokenization
ATTENTION_PATHS = ("dense", "fused", "sparse", "flex")  # see wno.model.attention_paths
AUGMENTATIONS = ("none", "standard", "randaugment")
PRECISIONS = ("auto", "fp32", "bf16")
# Wavelet boundary handling (wno.model.wavelets_2d). The matrix modes halve every level exactly
# (32 -> 16 -> 8 -> ...): boundary wavelets (no wrap-around, but the filter must fit the signal)
# and periodization (circular, every depth down to 1x1); the padding modes grow the bands.
PAD_MODES = ("reflect", "zero", "constant", "periodic", "symmetric")
MATRIX_MODES = ("boundary", "periodization")
MODES = (*MATRIX_MODES, *PAD_MODES)
