"""WaveletTokenizer: the token table, metadata, ordering and orientation-aware projection."""

import pytest
import torch

from wno.model.positional_encoding import ScaleAwarePositionalEncoding
from wno.model.tokenization import WaveletTokenizer, morton_order
from wno.model.wavelets_2d import WaveletTransform2d


def _tokenizer(wavelet="haar", levels=3, layout="seed", patch=2, mode="boundary"):
    wt = WaveletTransform2d(wavelet, levels, mode)
    return wt, WaveletTokenizer(3, 32, wt.band_sizes(), layout=layout, patch=patch)


@pytest.mark.parametrize("wavelet", ["haar", "db4", "sym4"])
def test_seed_layout_has_1329_tokens_at_3_levels(wavelet):
    wt, tok = _tokenizer(wavelet)
    assert tok.num_tokens == (256 + 768) + (64 + 192) + (1 + 48) == 1329
    out = tok(wt(torch.randn(2, 3, 32, 32)))
    assert out.shape == (2, 1329, 32)
    counts = torch.bincount(tok.level)[1:].tolist()
    assert counts == [1024, 256, 49]
    # The coarsest approximation is pooled to a single token.
    assert ((tok.level == 3) & (tok.orient == 0)).sum() == 1


@pytest.mark.parametrize("layout", ["patch", "pool"])
@pytest.mark.parametrize("levels,patch,expected", [(3, 2, 64 * 4 + 16 * 4 + 1 + 12),
                                                   (3, 4, 16 * 4 + 4 * 4 + 1 + 3),
                                                   (2, 2, 64 * 4 + 1 + 16 * 3)])
def test_patch_and_pool_layouts_cut_the_token_count(layout, levels, patch, expected):
    wt, tok = _tokenizer(levels=levels, layout=layout, patch=patch)
    assert tok.num_tokens == expected
    assert tok(wt(torch.randn(2, 3, 32, 32))).shape == (2, expected, 32)
    # A patch token holds its p x p coefficients; a pooled one their mean: C values.
    assert tok.proj_weight.shape[1] == (3 * patch**2 if layout == "patch" else 3)


def _token_index(tok, level, orient, row, col):
    sel = (tok.level == level) & (tok.orient == orient) & (tok.row == row) & (tok.col == col)
    return sel.nonzero().item()


@pytest.mark.parametrize("wavelet,mode,level,row,col", [
    ("haar", "boundary", 1, 3, 6),    # an inner window of the 16 x 16 band
    ("db4", "reflect", 1, 9, 4),      # the band is 19 x 19: the last window row holds one row
    ("db4", "reflect", 2, 6, 6),      # 13 x 13: the corner window holds one coefficient
    ("haar", "boundary", 2, 1, 2),    # 8 x 8 at p = 3: windows of 3, 3 and 2 coefficients
])
def test_pool_tokens_are_the_projected_mean_of_their_window(wavelet, mode, level, row, col):
    p = 3 if (wavelet, mode) == ("haar", "boundary") and level == 2 else 2
    wt, tok = _tokenizer(wavelet, levels=2, layout="pool", patch=p, mode=mode)
    coeffs = wt(torch.randn(1, 3, 32, 32))
    tokens = tok(coeffs)
    band = coeffs.details[level - 1][0][0]  # H band of that level: (C, h, w)
    window = band[:, p * row:p * row + p, p * col:p * col + p]  # cut by the edge, never padded
    expected = window.mean((1, 2)) @ tok.proj_weight[1] + tok.proj_bias[1]
    assert torch.allclose(tokens[0, _token_index(tok, level, 1, row, col)], expected, atol=1e-5)
    # The coarsest approximation is one token: the band's mean, edge windows not overweighted.
    approx = coeffs.approx[-1][0].mean((1, 2)) @ tok.proj_weight[0] + tok.proj_bias[0]
    assert torch.allclose(tokens[0, _token_index(tok, 2, 0, 0, 0)], approx, atol=1e-5)


@pytest.mark.parametrize("layout", ["patch", "pool"])
def test_one_by_one_patches_and_pools_are_the_seed_layout(layout):
    wt, seed = _tokenizer(layout="seed")
    _, other = _tokenizer(layout=layout, patch=1)
    other.load_state_dict(seed.state_dict())
    coeffs = wt(torch.randn(2, 3, 32, 32))
    # equal up to the order of a sum (the coarsest approximation's mean)
    assert torch.allclose(other(coeffs), seed(coeffs), rtol=0, atol=1e-6)
    assert torch.equal(other.pos, seed.pos) and torch.equal(other.level, seed.level)


def test_padding_mode_bands_of_odd_size_are_tokenized():
    wt, tok = _tokenizer("db4", 2, layout="patch", patch=2, mode="reflect")  # bands 19 and 13
    assert tok(wt(torch.randn(1, 3, 32, 32))).shape[1] == tok.num_tokens


def test_metadata_positions_are_scale_normalised_and_consistent():
    _, tok = _tokenizer()
    assert tok.pos.min() > 0 and tok.pos.max() < 1
    for level, size in ((1, 16), (2, 8), (3, 4)):
        sel = (tok.level == level) & (tok.orient == 1)
        expected = torch.stack([(tok.row[sel] + 0.5) / size, (tok.col[sel] + 0.5) / size], 1)
        assert torch.allclose(tok.pos[sel], expected)
    # Every (level, orientation, row, col) is a distinct token.
    keys = tok.level * 10**6 + tok.orient * 10**4 + tok.row * 100 + tok.col
    assert keys.unique().numel() == tok.num_tokens


def test_tokens_follow_the_coefficients_they_describe():
    wt, tok = _tokenizer()
    x = torch.randn(1, 3, 32, 32)
    coeffs = wt(x)
    tokens = tok(coeffs)
    # Token of level 1, orientation V, at (row 5, col 9) = V-projection of that coefficient.
    i = ((tok.level == 1) & (tok.orient == 2) & (tok.row == 5) & (tok.col == 9)).nonzero().item()
    coeff = coeffs.details[0][1][0, :, 5, 9]  # (C,)
    expected = coeff @ tok.proj_weight[2] + tok.proj_bias[2]
    assert torch.allclose(tokens[0, i], expected, atol=1e-6)


def test_orientations_use_their_own_projection():
    wt, tok = _tokenizer()
    with torch.no_grad():
        tok.proj_weight[1].zero_()  # silence H only
        tok.proj_bias.zero_()
    tokens = tok(wt(torch.randn(1, 3, 32, 32)))
    assert tokens[0, tok.orient == 1].abs().max() == 0
    assert tokens[0, tok.orient == 2].abs().max() > 0


def test_morton_order_keeps_neighbours_together():
    z = morton_order(4, 4)
    assert z[:4].tolist() == [0, 1, 4, 5]  # the first 2x2 quad
    assert sorted(z.tolist()) == list(range(16))


def test_positional_encoding_is_scale_plus_orientation_plus_spatial():
    _, tok = _tokenizer()
    pe = ScaleAwarePositionalEncoding(32, 3, tok.meta)
    with torch.no_grad():
        pe.scale.normal_()
        pe.orient.normal_()
    enc = pe()
    assert enc.shape == (1329, 32)
    # Same level and place, orientations A and H: they differ exactly by PE_orient.
    a = ((tok.level == 1) & (tok.orient == 0) & (tok.row == 3) & (tok.col == 7)).nonzero().item()
    h = ((tok.level == 1) & (tok.orient == 1) & (tok.row == 3) & (tok.col == 7)).nonzero().item()
    assert torch.allclose(enc[a] - enc[h], pe.orient[0] - pe.orient[1], atol=1e-6)
    # Same orientation, different level: PE_scale plus the two spatial codes.
    b = ((tok.level == 2) & (tok.orient == 1) & (tok.row == 1) & (tok.col == 3)).nonzero().item()
    expected = pe.scale[1] - pe.scale[2] + pe.spatial[h] - pe.spatial[b]
    assert torch.allclose(enc[h] - enc[b], expected, atol=1e-6)
    enc.sum().backward()
    assert pe.scale.grad.abs().sum() > 0 and pe.orient.grad.abs().sum() > 0


def test_bad_layout_and_patch_are_refused():
    wt = WaveletTransform2d("haar", 2)
    with pytest.raises(ValueError, match="layout"):
        WaveletTokenizer(3, 32, wt.band_sizes(), layout="grid")
    for layout in ("patch", "pool"):
        with pytest.raises(ValueError, match="patch"):
            WaveletTokenizer(3, 32, wt.band_sizes(), layout=layout, patch=0)
