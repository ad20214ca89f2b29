"""What a wavelet can reach on an image of a given size: the level checks, without torch.

Every configuration of a study file goes through `check_wavelet_levels` (`TrainConfig.problems`),
also in `wno study create`, `status` and `report`; keeping these on PyWavelets alone keeps those
commands from importing torch (seconds per call). `wno.model.wavelets_2d` re-exports them.
"""

from __future__ import annotations

import difflib
import math

import pywt

from wno.base.variants import MATRIX_MODES, MODES, PAD_MODES  # noqa: F401 (re-exported)


def available_wavelets() -> list[str]:
    """Discrete wavelets known to PyWavelets (and therefore to ptwt)."""
    return pywt.wavelist(kind="discrete")


def max_levels(wavelet: str, mode: str, size: int) -> int:
    """Deepest decomposition reachable on a `size` x `size` image (what ptwt would compute)."""
    filt = pywt.Wavelet(wavelet).dec_len
    if mode == "periodization":  # halves while the size is even, whatever the filter's length
        levels = 0
        while size >= 2 and size % 2 == 0:
            size, levels = size // 2, levels + 1
        return levels
    if mode != "boundary":
        return pywt.dwt_max_level(size, filt)
    # ptwt's matrix transform stops when the current signal is shorter than the filter.
    levels = 0
    while size >= filt and size >= 2:
        size = (size + size % 2) // 2
        levels += 1
    return levels


def check_wavelet_levels(wavelet: str, n_levels: int, mode: str, image_size: int) -> str | None:
    """Return why (`wavelet`, `n_levels`, `mode`) cannot run on `image_size` images, or None.

    >>> print(check_wavelet_levels("db4", 4, "boundary", 32))   # doctest: +ELLIPSIS
    n_levels=4 is not reachable for wavelet 'db4' ... at most 3 ...
    """
    known = available_wavelets()
    if wavelet not in known:
        close = difflib.get_close_matches(wavelet, known, n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        return (f"unknown wavelet {wavelet!r}{hint}; allowed: discrete PyWavelets wavelets, e.g. "
                f"haar, db1-db38, sym2-sym20, coif1-coif17 (`pywt.wavelist(kind='discrete')`)")
    if mode not in MODES:
        return f"mode={mode!r} is not one of {', '.join(MODES)}"
    if mode in MATRIX_MODES and not pywt.Wavelet(wavelet).orthogonal:
        return (f"wavelet {wavelet!r} is not orthogonal, and mode {mode!r} needs an orthogonal "
                f"wavelet (haar, dbN, symN, coifN); use a padding mode ({', '.join(PAD_MODES)}) "
                f"for biorthogonal wavelets")
    if n_levels < 1:
        return f"n_levels={n_levels} must be >= 1"
    reachable = max_levels(wavelet, mode, image_size)
    if n_levels > reachable:
        alternatives = [w for w in ("haar", "db2", "db4", "sym4", "coif1", "coif2")
                        if w != wavelet and max_levels(w, mode, image_size) >= n_levels]
        alt = (f", or a shorter wavelet that reaches {n_levels} levels: {', '.join(alternatives)}"
               if alternatives else "")
        if mode == "boundary" and max_levels(wavelet, "periodization", image_size) >= n_levels:
            alt += (", or mode 'periodization' (circular extension: every orthogonal wavelet "
                    "halves exactly down to 1x1)")
        return (f"n_levels={n_levels} is not reachable for wavelet {wavelet!r} with mode {mode!r} "
                f"on {image_size}x{image_size} images: at most {reachable} level(s) (its filter has "
                f"{pywt.Wavelet(wavelet).dec_len} taps); use n_levels <= {reachable}{alt}")
    return None


def band_sizes(wavelet: str, n_levels: int, mode: str, image_size: int) -> list[int]:
    """The side of each level's bands, finest first: halved exactly in the matrix modes,
    floor((n + L - 1) / 2) in the padding modes (L: the filter's length).

    >>> band_sizes("db4", 3, "boundary", 32), band_sizes("db4", 2, "reflect", 32)
    ([16, 8, 4], [19, 13])
    """
    taps = pywt.Wavelet(wavelet).dec_len
    sizes, n = [], image_size
    for _ in range(n_levels):
        n = n // 2 if mode in MATRIX_MODES else (n + taps - 1) // 2
        sizes.append(n)
    return sizes


def token_count(wavelet: str, n_levels: int, mode: str, image_size: int, layout: str = "seed",
                patch: int = 1) -> int:
    """Tokens of a W-MSA model (`wno.model.tokenization`), without building it: every level's
    approximation and three detail bands on a (patch) grid, except the coarsest approximation,
    pooled to one token.

    >>> token_count("haar", 3, "boundary", 32), token_count("haar", 3, "boundary", 32, "patch", 4)
    (1329, 84)
    """
    p = patch if layout in ("patch", "pool") else 1
    grids = [math.ceil(n / p) ** 2 for n in band_sizes(wavelet, n_levels, mode, image_size)]
    return sum(4 * g for g in grids[:-1]) + 1 + 3 * grids[-1]
