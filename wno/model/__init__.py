"""The model layer: images -> wavelet tokens -> W-MSA -> classes, and the ViT twin.

    wavelets_2d          WaveletTransform2d: multi-level 2D DWT/IDWT (ptwt), perfect reconstruction
    tokenization         WaveletTokenizer: coefficients -> tokens + metadata (scale, orientation, position)
    positional_encoding  ScaleAwarePositionalEncoding: PE_scale + PE_orient + PE_spatial
    attention_kernel     the PSD kernel k_scale * k_orient * k_spatial, applied as a log-bias
    attention_paths      dense, fused, block-sparse and FlexAttention ways to apply it
    wmsa                 WaveletMultiScaleAttention, WMSABlock
    vit                  the ViT baseline
    transformer          WaveletTransformer, build_model(config)

It imports only `wno.base`. The original description's calls work from here:

    >>> from wno.model import WaveletTransformer
    >>> WaveletTransformer(embed_dim=64, depth=2, num_heads=2).num_tokens
    1329
"""

from wno.base.sizes import MODEL_SIZES, ModelSize
from wno.model.transformer import WaveletTransformer, build_model

__all__ = ["MODEL_SIZES", "ModelSize", "WaveletTransformer", "build_model"]
