"""WaveletTransformer and its ViT twin: shapes, sizes, costs, invalid configurations."""

import pytest
import torch

from wno.training.config import ConfigError, TrainConfig
from wno.training.measure import model_cost
from wno.model import MODEL_SIZES, WaveletTransformer, build_model
from wno.model.vit import build_vit


def _expected_vit_params(dim, depth, classes=10, patch=4, mlp=4):
    tokens = (32 // patch) ** 2 + 1
    block = 2 * 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (
        dim * mlp * dim + mlp * dim + mlp * dim * dim + dim)
    return (3 * patch * patch * dim + dim) + dim + tokens * dim + depth * block + 2 * dim + (
        dim * classes + classes)


def _expected_wmsa_params(dim, depth, levels=3, classes=10, mlp=4, kernel=True, patch=1):
    block = 2 * 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (
        dim * mlp * dim + mlp * dim + mlp * dim * dim + dim)
    tokenizer = 4 * 3 * patch * patch * dim + 4 * dim  # one projection per orientation
    pos = (levels + 1) * dim + 4 * dim
    kern = (1 + 1 + 16) if kernel else 0
    return tokenizer + pos + kern + depth * block + 2 * dim + dim * classes + classes


@pytest.mark.parametrize("size", list(MODEL_SIZES))
def test_every_size_of_both_models_has_the_right_shapes_and_parameters(size):
    s = MODEL_SIZES[size]
    x = torch.randn(2, 3, 32, 32)
    vit = build_model(TrainConfig(model="vit", model_size=size))
    assert vit(x).shape == (2, 10)
    assert sum(p.numel() for p in vit.parameters()) == _expected_vit_params(s.embed_dim, s.depth)
    wmsa = build_model(TrainConfig(model="wavelet", model_size=size, token_layout="patch",
                                   token_patch=4))
    assert isinstance(wmsa, WaveletTransformer)
    assert len(wmsa.blocks) == s.depth and wmsa.blocks[0].attn.num_heads == s.num_heads
    assert sum(p.numel() for p in wmsa.parameters()) == _expected_wmsa_params(s.embed_dim, s.depth,
                                                                                patch=4)


def test_seed_sizes_match_the_table():
    assert (MODEL_SIZES["tiny"].embed_dim, MODEL_SIZES["tiny"].depth,
            MODEL_SIZES["tiny"].num_heads) == (96, 4, 3)
    assert (MODEL_SIZES["small"].embed_dim, MODEL_SIZES["small"].depth) == (192, 6)
    assert (MODEL_SIZES["base"].embed_dim, MODEL_SIZES["base"].num_heads) == (384, 6)


def test_forward_features_returns_tokens_and_metadata():
    model = WaveletTransformer(embed_dim=32, depth=1, num_heads=2, n_levels=3)
    features, meta = model.forward_features(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 1329, 32) and len(meta) == 1329
    assert set(meta.orient.unique().tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("use_kernel,layout", [(True, "seed"), (False, "seed"), (True, "pool")])
def test_gradients_reach_the_input_and_every_parameter(use_kernel, layout):
    model = WaveletTransformer(embed_dim=32, depth=2, num_heads=2, n_levels=2, wavelet="db2",
                               use_kernel=use_kernel, drop_path=0.0, token_layout=layout)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    model(x).logsumexp(-1).sum().backward()
    assert x.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_kernel_changes_the_model_and_sizes_are_otherwise_equal():
    torch.manual_seed(0)
    on = WaveletTransformer(embed_dim=32, depth=1, num_heads=2, use_kernel=True).eval()
    torch.manual_seed(0)
    off = WaveletTransformer(embed_dim=32, depth=1, num_heads=2, use_kernel=False).eval()
    x = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(on(x), off(x))
    diff = sum(p.numel() for p in on.parameters()) - sum(p.numel() for p in off.parameters())
    assert diff == 18  # sigma, length scale, 4x4 orientation factor


def test_cost_counts_attention_and_the_kernel_removes_pairs():
    on = model_cost(WaveletTransformer(embed_dim=32, depth=2, num_heads=2))
    off = model_cost(WaveletTransformer(embed_dim=32, depth=2, num_heads=2, use_kernel=False))
    assert on.tokens == off.tokens == 1329
    assert off.attention_pairs == 1329**2
    assert 0.1 < on.attention_pairs / off.attention_pairs < 0.2
    # Attention is counted: 4 * D per pair per layer on top of the rest.
    # (plus 128 FLOPs: the kernel's 4x4 orientation Gram matrix)
    assert off.flops - on.flops + 128 == 4 * 32 * 2 * (off.attention_pairs - on.attention_pairs)
    vit = model_cost(build_vit(embed_dim=32, depth=2, num_heads=2))
    assert vit.tokens == 65 and vit.attention_pairs == 65**2
    assert vit.flops > 4 * 32 * 2 * 65**2  # linear layers on top of attention
    assert on.train_flops == 3 * on.flops


@pytest.mark.parametrize("changes,needle", [
    ({"num_heads": 5}, "does not divide embed_dim=96"),
    ({"wavelet": "db44"}, "unknown wavelet"),
    ({"wavelet": "db4", "n_levels": 4}, "at most 3 level"),
    ({"model_size": "huge"}, "model_size='huge'"),
    ({"model": "cnn"}, "model='cnn'"),
    ({"attention": "blocky"}, "attention='blocky'"),
])
def test_invalid_configurations_raise_value_error_naming_the_problem(changes, needle):
    with pytest.raises(ValueError, match="invalid configuration") as err:
        build_model(TrainConfig(**changes))
    assert needle in str(err.value)
    assert isinstance(err.value, ConfigError)


def test_direct_construction_rejects_bad_heads():
    with pytest.raises(ValueError, match="num_heads=5 does not divide embed_dim=96"):
        WaveletTransformer(embed_dim=96, num_heads=5)
    with pytest.raises(ValueError, match="does not divide"):
        build_vit(embed_dim=96, num_heads=5)


def test_drop_path_draws_and_scales_as_torchvisions_stochastic_depth():
    from torchvision.ops import StochasticDepth

    from wno.model.wmsa import DropPath

    x = torch.randn(64, 5, 8)
    for p in (0.0, 0.3, 1.0):
        ours, theirs = DropPath(p).train(), StochasticDepth(p, "row").train()
        torch.manual_seed(1)
        a = ours(x)
        torch.manual_seed(1)
        assert torch.equal(a, theirs(x)), p
        assert torch.equal(ours.eval()(x), x)
    dropped = (DropPath(0.5).train()(x) == 0).all(dim=(1, 2))
    assert 0 < dropped.sum() < 64  # whole images dropped, not single features


def test_training_a_wmsa_model_does_not_import_torchvision(tmp_path):
    """torchvision.ops pulls in torch._dynamo: 2.6 s of every `wno train` and worker start.
    A W-MSA run (model, cost, data loader, one epoch, checkpoint) needs none of it."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from wno.training.config import TrainConfig\n"
            "from wno.training import train\n"
            "cfg = TrainConfig(model_size='micro', token_layout='patch', token_patch=4,\n"
            "                  dataset='synthetic', train_size=32, val_size=16, test_size=16,\n"
            "                  batch_size=16, epochs=1, warmup_epochs=0.0,\n"
            f"                  save_dir={str(tmp_path)!r})\n"
            "train(cfg)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
    assert (tmp_path / "last.pt").is_file()
