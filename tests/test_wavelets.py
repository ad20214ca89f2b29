"""WaveletTransform2d: perfect reconstruction, agreement with ptwt / PyWavelets, level checks."""

import numpy as np
import ptwt
import pytest
import pywt
import torch

from wno.model.wavelets_2d import PAD_MODES, WaveletTransform2d, check_wavelet_levels, max_levels

WAVELETS = ["haar", "db2", "db4", "sym4", "coif2"]


def _cases():
    for w in WAVELETS:
        for mode in ("boundary", "periodization", "reflect", "periodic"):
            for levels in range(1, max_levels(w, mode, 32) + 1):
                yield w, mode, levels


@pytest.mark.parametrize("wavelet,mode,levels", list(_cases()))
def test_perfect_reconstruction(wavelet, mode, levels):
    x = torch.randn(3, 3, 32, 32)
    wt = WaveletTransform2d(wavelet, levels, mode)
    coeffs = wt(x)
    assert coeffs.levels == levels
    assert (wt.inverse(coeffs) - x).abs().max() < 1e-5


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_boundary_mode_equals_ptwt_matrix_transform_and_halves_exactly(wavelet):
    levels = max_levels(wavelet, "boundary", 32)
    x = torch.randn(2, 3, 32, 32)
    ours = WaveletTransform2d(wavelet, levels)(x)
    ref = ptwt.MatrixWavedec2(wavelet, level=levels)(x)  # [cA_J, details_J, ..., details_1]
    assert torch.allclose(ours.approx[-1], ref[0], atol=1e-5)
    for j in range(levels):
        h, v, d = ours.details[j]
        ref_h, ref_v, ref_d = ref[levels - j]
        # ptwt's matrix transform names the bands with H and V swapped w.r.t. pywt/ptwt.wavedec2.
        assert torch.allclose(h, ref_v, atol=1e-5)
        assert torch.allclose(v, ref_h, atol=1e-5)
        assert torch.allclose(d, ref_d, atol=1e-5)
    assert [a.shape[-1] for a in ours.approx] == [32 >> (j + 1) for j in range(levels)]


def test_haar_equals_pywavelets_periodization():
    x = torch.randn(2, 3, 32, 32)
    ours = WaveletTransform2d("haar", 3)(x)
    ref = pywt.wavedec2(x.numpy(), "haar", mode="periodization", level=3, axes=(-2, -1))
    np.testing.assert_allclose(ours.approx[-1].numpy(), ref[0], atol=1e-5)
    for j in range(3):
        for ours_band, ref_band in zip(ours.details[j], ref[3 - j]):
            np.testing.assert_allclose(ours_band.numpy(), ref_band, atol=1e-5)


@pytest.mark.parametrize("wavelet,levels", [("db4", 3), ("db4", 4), ("sym4", 4), ("coif2", 3),
                                            ("coif2", 4), ("coif5", 5), ("haar", 5), ("db8", 2)])
def test_periodization_equals_pywavelets_at_every_depth(wavelet, levels):
    """The periodized transform is PyWavelets' mode='periodization', band by band, including the
    depths boundary wavelets cannot reach (coif2 at 3 levels, db4 and sym4 at 4, down to 1x1)."""
    import warnings

    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    wt = WaveletTransform2d(wavelet, levels, "periodization")
    ours = wt(x.float())
    with warnings.catch_warnings():  # "all coefficients will experience boundary effects"
        warnings.simplefilter("ignore", UserWarning)
        ref = pywt.wavedec2(x.numpy(), wavelet, mode="periodization", level=levels, axes=(-2, -1))
    np.testing.assert_allclose(ours.approx[-1].double().numpy(), ref[0], atol=2e-5)
    for j in range(levels):
        for ours_band, ref_band in zip(ours.details[j], ref[levels - j], strict=True):
            np.testing.assert_allclose(ours_band.double().numpy(), ref_band, atol=2e-5)
    assert [a.shape[-1] for a in ours.approx] == [32 >> (j + 1) for j in range(levels)]
    inp = torch.randn(1, 3, 32, 32, requires_grad=True)
    wt(inp).approx[-1].sum().backward()  # differentiable: training backpropagates through it
    assert inp.grad is not None and inp.grad.abs().sum() > 0


def test_periodization_reaches_what_boundary_cannot_and_the_message_says_so():
    assert max_levels("coif2", "boundary", 32) == 2 and max_levels("coif2", "periodization", 32) == 5
    assert max_levels("db4", "periodization", 32) == 5 and max_levels("db4", "periodization", 24) == 3
    err = check_wavelet_levels("coif2", 3, "boundary", 32)
    assert "at most 2 level" in err and "mode 'periodization'" in err
    assert check_wavelet_levels("coif2", 3, "periodization", 32) is None
    assert "not orthogonal" in check_wavelet_levels("bior2.2", 2, "periodization", 32)


@pytest.mark.parametrize("mode", PAD_MODES)
def test_padding_modes_match_ptwt_wavedec2(mode):
    x = torch.randn(2, 3, 32, 32)
    ours = WaveletTransform2d("db2", 2, mode)(x)
    ref = ptwt.wavedec2(x, "db2", mode=mode, level=2)
    assert torch.allclose(ours.approx[-1], ref[0], atol=1e-5)
    for j in range(2):
        for ours_band, ref_band in zip(ours.details[j], ref[2 - j]):
            assert torch.allclose(ours_band, ref_band, atol=1e-5)


def test_float32_under_autocast_and_gradients_flow():
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    wt = WaveletTransform2d("db4", 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coeffs = wt(x)
    assert all(a.dtype == torch.float32 for a in coeffs.approx)
    sum(band.square().sum() for d in coeffs.details for band in d).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("wavelet,levels,mode,maximum", [
    ("db4", 4, "boundary", 3), ("sym4", 4, "boundary", 3), ("coif2", 3, "boundary", 2),
    ("haar", 6, "boundary", 5), ("db4", 3, "reflect", 2)])
def test_unreachable_level_names_the_maximum_and_alternatives(wavelet, levels, mode, maximum):
    msg = check_wavelet_levels(wavelet, levels, mode, 32)
    assert msg is not None
    assert f"at most {maximum} level" in msg and wavelet in msg
    if levels <= 5:
        assert "haar" in msg  # a shorter wavelet that reaches the depth is offered
    with pytest.raises(ValueError, match=f"at most {maximum} level"):
        WaveletTransform2d(wavelet, levels, mode)


def test_unknown_wavelet_and_non_orthogonal_boundary_are_refused():
    assert "did you mean" in check_wavelet_levels("db44", 3, "boundary", 32)
    assert "orthogonal" in check_wavelet_levels("bior2.2", 2, "boundary", 32)
    assert check_wavelet_levels("bior2.2", 1, "reflect", 32) is None
    assert "mode" in check_wavelet_levels("haar", 2, "mirror", 32)
    with pytest.raises(ValueError, match="unknown wavelet"):
        WaveletTransform2d("nope", 2)


def test_building_the_transform_does_not_print_ptwts_sparse_warnings():
    """ptwt builds its boundary matrices as sparse tensors and torch warns about them on every
    run; users saw two 'beta' warnings per process. Other warnings still come through."""
    import warnings

    from wno.model.wavelets_2d import _analysis_matrices

    _analysis_matrices.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        WaveletTransform2d("db2", 2, image_size=24)(torch.randn(1, 3, 24, 24))
        warnings.warn("an unrelated warning", UserWarning)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "Sparse" in m], messages
    assert "an unrelated warning" in messages
