"""Multi-level 2D discrete wavelet transform of batched multi-channel images, through ptwt.

Three kinds of boundary handling:

- ``boundary`` (default): ptwt's boundary-wavelet matrix transform (`MatrixWavedec2`). Every level
  halves the image exactly (32 -> 16 -> 8 -> 4) for every orthogonal wavelet, so the token count
  depends on the number of levels only, not on the filter length. The transform is orthogonal, so
  the inverse is the transpose. We take the per-level analysis matrices from ptwt once and apply
  them as two small dense matmuls per level (`A @ X @ A^T`): identical coefficients, no sparse
  kernels in the training step. No wrap-around, but a level needs a signal at least as long as
  the filter: db4 and sym4 stop at 3 levels on 32x32, coif2 at 2.
- ``periodization``: the image is extended periodically, so every level halves exactly for every
  orthogonal wavelet, down to 1x1 (PyWavelets' ``mode='periodization'``; the tests check the
  coefficients against it). The same matrix machinery: each level's matrix is the transform of the
  unit vectors, orthogonal, applied as two matmuls and inverted by its transpose. The price is a
  wrap-around at the image's edges, so it is the choice where boundary wavelets cannot reach the
  depth asked for (coif2 at 3 levels, db4 at 4).
- a padding mode (``reflect``, ``zero``, ``constant``, ``periodic``, ``symmetric``): ptwt's
  convolution transform (`wavedec2`/`waverec2`). Bands grow to floor((n + L - 1) / 2).

ptwt silently computes fewer levels than asked when the filter is too long for the image; this
module refuses such a request up front (`check_wavelet_levels`), because a run must never be a
different configuration than the one asked for.

Example:
    >>> wt = WaveletTransform2d("db4", levels=3)
    >>> coeffs = wt(torch.randn(8, 3, 32, 32))
    >>> [a.shape[-1] for a in coeffs.approx]       # approximation at every level
    [16, 8, 4]
    >>> torch.allclose(wt.inverse(coeffs), x, atol=1e-5)   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import ptwt
import torch
import torch.nn as nn

# The level checks live apart so that configs validate without torch; re-exported here.
from wno.base.wavelet_levels import (MATRIX_MODES, MODES, PAD_MODES,  # noqa: F401
                                     available_wavelets, check_wavelet_levels, max_levels)


@dataclass
class WaveletCoeffs:
    """Coefficients of a multi-level decomposition, finest level first.

    approx[j]  : (B, C, h_j, w_j) approximation after level j+1 (every level is kept: the seed's
                 token layout uses the intermediate approximations too)
    details[j] : (H, V, D) detail bands of level j+1, each (B, C, h_j, w_j)
    """

    approx: list[torch.Tensor]
    details: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

    @property
    def levels(self) -> int:
        return len(self.details)


@functools.lru_cache(maxsize=64)
def _analysis_matrices(wavelet: str, levels: int, size: int) -> tuple[torch.Tensor, ...]:
    """Per-level (n_j, n_j) orthogonal analysis matrices of ptwt's MatrixWavedec2, lowpass rows
    first. Taken from ptwt itself (in float32, as ptwt builds them for float32 input: the boundary
    filters come out of a QR step whose basis depends on the precision)."""
    wd = ptwt.MatrixWavedec2(wavelet, level=levels)
    with warnings.catch_warnings():
        # ptwt builds its matrices as sparse tensors, which torch flags as beta on every run;
        # they are turned dense here, once, so the warnings only worry the user.
        warnings.filterwarnings("ignore", "Sparse (invariant checks|CSR tensor)", UserWarning)
        wd(torch.zeros(1, size, size))
    return tuple(rows.to_dense() for rows, _cols in wd.fwt_matrix_list)


@functools.lru_cache(maxsize=64)
def _periodized_matrices(wavelet: str, levels: int, size: int) -> tuple[torch.Tensor, ...]:
    """Per-level (n_j, n_j) orthogonal analysis matrices of the periodized DWT, lowpass rows first:
    column i is PyWavelets' one-level transform of the i-th unit vector (the transform is linear),
    so the coefficients are PyWavelets' by construction."""
    import numpy as np
    import pywt

    out = []
    for j in range(levels):
        n = size >> j
        lo, hi = pywt.dwt(np.eye(n), wavelet, mode="periodization", axis=0)  # (n/2, n) each
        out.append(torch.from_numpy(np.concatenate([lo, hi])).float())
    return tuple(out)


class WaveletTransform2d(nn.Module):
    """Multi-level 2D DWT (and inverse) over the last two axes of (B, C, H, W) images.

    Always computes in float32 (ptwt rejects half precision), also inside an autocast region.
    """

    def __init__(self, wavelet: str = "haar", levels: int = 3, mode: str = "boundary",
                 image_size: int = 32):
        super().__init__()
        err = check_wavelet_levels(wavelet, levels, mode, image_size)
        if err:
            raise ValueError(err)
        self.wavelet, self.levels, self.mode, self.image_size = wavelet, levels, mode, image_size
        if mode in MATRIX_MODES:
            if image_size % (2**levels):
                raise ValueError(f"mode {mode!r} needs image sizes divisible by 2**n_levels="
                                 f"{2**levels}; got {image_size}x{image_size}")
            build = _analysis_matrices if mode == "boundary" else _periodized_matrices
            for j, A in enumerate(build(wavelet, levels, image_size)):
                self.register_buffer(f"A{j}", A.clone(), persistent=False)

    def band_sizes(self) -> list[tuple[int, int]]:
        """(h_j, w_j) of the bands at each level, finest first."""
        x = torch.zeros(1, 1, self.image_size, self.image_size)
        return [tuple(a.shape[-2:]) for a in self.forward(x).approx]

    def forward(self, x: torch.Tensor) -> WaveletCoeffs:
        with torch.autocast(device_type=x.device.type, enabled=False):
            a = x.float()  # (B, C, H, W)
            approx, details = [], []
            for j in range(self.levels):
                a, bands = self._analyse(a, j)
                approx.append(a)
                details.append(bands)
        return WaveletCoeffs(approx, details)

    def inverse(self, coeffs: WaveletCoeffs) -> torch.Tensor:
        """Reconstruct images from the coarsest approximation and every detail band."""
        with torch.autocast(device_type=coeffs.approx[-1].device.type, enabled=False):
            a = coeffs.approx[-1].float()
            if self.mode not in MATRIX_MODES:
                return ptwt.waverec2([a, *[ptwt.WaveletDetailTuple2d(*d) for d in
                                           reversed(coeffs.details)]], self.wavelet)
            for j in reversed(range(self.levels)):
                a = self._synthesise(a, coeffs.details[j], j)
        return a

    # --- one level ------------------------------------------------------------------------------
    def _analyse(self, x: torch.Tensor, j: int):
        if self.mode not in MATRIX_MODES:
            a, (h, v, d) = ptwt.wavedec2(x, self.wavelet, mode=self.mode, level=1)
            return a, (h, v, d)
        A = getattr(self, f"A{j}")  # (n, n): rows [lowpass; highpass]
        half = A.shape[0] // 2
        y = A @ x @ A.T  # (B, C, n, n): [[LL, LH], [HL, HH]] in (row, column) filter order
        # pywt naming (also ptwt.wavedec2's): H = highpass along rows (height), V = highpass along
        # columns. ptwt's MatrixWavedec2 returns the same bands with H and V swapped.
        ll, lh = y[..., :half, :half], y[..., :half, half:]
        hl, hh = y[..., half:, :half], y[..., half:, half:]
        return ll, (hl, lh, hh)

    def _synthesise(self, a: torch.Tensor, bands, j: int) -> torch.Tensor:
        h, v, d = bands
        y = torch.cat([torch.cat([a, v], dim=-1), torch.cat([h, d], dim=-1)], dim=-2)
        A = getattr(self, f"A{j}")
        return A.T @ y @ A  # orthogonal: the inverse is the transpose
