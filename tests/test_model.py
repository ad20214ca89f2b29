"""WaveletTransformer and its ViT twin: the original description's API, shapes, sizes, the twin's
parity, costs against an analytic count, invalid configurations."""

import pytest
import torch

from wno.training.config import ConfigError, TrainConfig
from wno.training.measure import model_cost
from wno.model import MODEL_SIZES, WaveletTransformer, build_model
from wno.model.vit import ViT
from wno.model.wmsa import WMSABlock


def _expected_vit_params(dim, depth, classes=10, patch=4, mlp=4):
    tokens = (32 // patch) ** 2  # no class token: mean pooling, as W-MSA
    block = 2 * 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (
        dim * mlp * dim + mlp * dim + mlp * dim * dim + dim)
    return (3 * patch * patch * dim + dim) + tokens * dim + depth * block + 2 * dim + (
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


def test_the_original_descriptions_call_works_as_written():
    """The description's constructor call, forward_features and its metadata "dict"."""
    model = WaveletTransformer(image_size=(32, 32), in_channels=3, num_classes=10, embed_dim=192,
                               depth=6, num_heads=3, n_levels=3, wavelet="db4", use_kernel=True)
    images = torch.randn(2, 3, 32, 32)
    features, metadata = model.forward_features(images)
    assert features.shape == (2, 1329, 192)
    assert set(metadata) == {"scales", "orientations", "positions", "rows", "cols"}
    assert metadata["scales"].shape == metadata["orientations"].shape == (1329,)
    assert metadata["positions"].shape == (1329, 2) and metadata.num_tokens == 1329
    assert torch.equal(metadata["scales"], metadata.level)
    assert set(metadata["orientations"].unique().tolist()) == {0, 1, 2, 3}
    assert model(images).shape == (2, 10)
    with pytest.raises(KeyError, match="'scales', 'orientations', 'positions'"):
        metadata["levels"]
    with pytest.raises(TypeError):
        metadata["scales"] = None  # read-only
    with pytest.raises(ValueError, match="only square images"):
        WaveletTransformer(image_size=(32, 48))
    defaults = WaveletTransformer()  # the description's defaults: small, db4, 3 levels
    assert (defaults.transform.wavelet, defaults.transform.levels, len(defaults.blocks),
            defaults.head.in_features) == ("db4", 3, 6, 192)


def test_forward_features_values_equal_an_independent_computation():
    """Not only shapes: the features are the blocks applied, in order, to the tokenizer's output
    plus the positional encoding, then the final norm; the logits are the head over their mean."""
    torch.manual_seed(0)
    model = WaveletTransformer(embed_dim=32, depth=2, num_heads=2, n_levels=2, wavelet="db2",
                               attention="dense").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features, meta = model.forward_features(x)
        tokens = model.tokenizer(model.transform(x)) + model.pos_encoding()
        log_k = model.kernel_attention.kernel.dense_log_k()
        for block in model.blocks:  # the block written out: pre-norm attention, then the MLP
            h = block.norm1(tokens)
            B, N, D = h.shape
            q, k, v = block.attn.qkv(h).view(B, N, 3, 2, D // 2).permute(2, 0, 3, 1, 4)
            w = (q @ k.transpose(-2, -1) / (D // 2) ** 0.5 + log_k).softmax(-1)
            tokens = tokens + block.attn.proj((w @ v).transpose(1, 2).reshape(B, N, D))
            tokens = tokens + block.mlp(block.norm2(tokens))
        expected = model.norm(tokens)
        assert torch.allclose(features, expected, atol=1e-5)
        assert torch.allclose(model(x), model.head(expected.mean(1)), atol=1e-5)
    assert meta.num_tokens == features.shape[1] == 4 * 16 * 16 + 1 + 3 * 8 * 8


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
    vit = model_cost(ViT(embed_dim=32, depth=2, num_heads=2))
    assert vit.tokens == 64 and vit.attention_pairs == 64**2
    assert vit.flops > 4 * 32 * 2 * 64**2  # linear layers on top of attention
    assert on.train_flops == 3 * on.flops


@pytest.mark.parametrize("changes,needle", [
    ({"num_heads": 5}, "does not divide embed_dim=192"),
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
        ViT(embed_dim=96, num_heads=5)


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


# --- the ViT twin ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", list(MODEL_SIZES))
def test_the_vit_twin_shares_w_msas_trunk(size):
    """Same block structure and trunk parameters, the same stochastic-depth ramp, dropout, norms
    and pooling: the two differ in their tokens and their attention only."""
    cfg = TrainConfig(model_size=size, token_layout="patch", token_patch=4, dropout=0.1)
    wmsa, vit = build_model(cfg), build_model(cfg.replace(model="vit"))
    trunk = lambda m: [(n, p.shape) for n, p in m.named_parameters()  # noqa: E731
                       if n.startswith(("blocks.", "norm.", "head."))]
    assert trunk(wmsa) == trunk(vit)
    assert all(type(b) is WMSABlock for b in [*wmsa.blocks, *vit.blocks])
    assert [b.drop_path.p for b in wmsa.blocks] == [b.drop_path.p for b in vit.blocks]
    assert wmsa.blocks[-1].drop_path.p == pytest.approx(cfg.drop_path)
    assert [b.attn.attn_drop for b in vit.blocks] == [b.attn.attn_drop for b in wmsa.blocks]
    assert [b.mlp.drop.p for b in vit.blocks] == [b.mlp.drop.p for b in wmsa.blocks] == \
        [0.1] * len(vit.blocks)
    assert vit.norm.eps == wmsa.norm.eps and vit.blocks[0].norm1.eps == wmsa.blocks[0].norm1.eps


def test_the_vit_twin_regularises_in_train_mode_as_w_msa():
    """Stochastic depth and dropout act in train mode (outputs vary between calls) and not in eval
    mode, for both models alike."""
    x = torch.randn(4, 3, 32, 32)
    for model in (ViT(embed_dim=32, depth=4, num_heads=2, drop_path=0.5, dropout=0.2),
                  WaveletTransformer(embed_dim=32, depth=4, num_heads=2, n_levels=2,
                                     wavelet="haar", drop_path=0.5, dropout=0.2,
                                     token_layout="patch", token_patch=4)):
        model.train()
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        assert not torch.allclose(a, model(x))
        model.eval()
        assert torch.allclose(model(x), model(x))


def test_the_vit_twin_is_initialised_as_w_msas_trunk():
    torch.manual_seed(0)
    vit = ViT(embed_dim=192, depth=6, num_heads=3)
    torch.manual_seed(0)
    wmsa = WaveletTransformer(embed_dim=192, depth=6, num_heads=3, token_layout="patch",
                              token_patch=4)
    for a, b in ((vit.blocks[0].attn.qkv.weight, wmsa.blocks[0].attn.qkv.weight),
                 (vit.blocks[3].mlp.fc1.weight, wmsa.blocks[3].mlp.fc1.weight)):
        assert a.std().item() == pytest.approx(0.02, rel=0.05)  # truncated normal, std 0.02
        assert b.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(vit.norm.weight, torch.ones(192)) and torch.equal(vit.head.bias,
                                                                         torch.zeros(10))


# --- costs against an analytic count ------------------------------------------------------------------
def _trunk_flops(n: int, pairs: int, dim: int, depth: int, mlp: int = 4, classes: int = 10) -> int:
    """Forward FLOPs of the shared trunk: per block qkv, projection, MLP and attention (4 D per
    pair), then the head; 2 FLOPs per multiply-add."""
    per_block = 2 * n * dim * 3 * dim + 2 * n * dim * dim + 2 * 2 * n * dim * mlp * dim
    return depth * (per_block + 4 * dim * pairs) + 2 * dim * classes


@pytest.mark.parametrize("size", list(MODEL_SIZES))
@pytest.mark.parametrize("heads", [None, 1, 2, 4])
def test_vit_flops_equal_the_analytic_count_for_every_size_and_head_count(size, heads):
    """An even head count sent torchvision's ViT down torch's native attention fast path, which
    FlopCounterMode does not see (micro and base were counted 28-32% low)."""
    s = MODEL_SIZES[size]
    cfg = TrainConfig(model="vit", model_size=size, num_heads=heads)
    vit = build_model(cfg)
    n, dim = 64, s.embed_dim
    patch_embed = 2 * n * 3 * 16 * dim
    assert model_cost(vit, cfg).flops == patch_embed + _trunk_flops(n, n * n, dim, s.depth)


@pytest.mark.parametrize("size", ["micro", "small"])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_wmsa_flops_equal_the_analytic_count(size, use_kernel):
    s = MODEL_SIZES[size]
    cfg = TrainConfig(model_size=size, wavelet="db4", n_levels=3, use_kernel=use_kernel)
    model = build_model(cfg)
    cost = model_cost(model, cfg)
    n, dim = 1329, s.embed_dim
    pairs = int(model.kernel_attention.kernel.support().sum()) if use_kernel else n * n
    transform = sum(4 * 3 * (32 >> j) ** 3 for j in range(3))  # A @ X @ A^T per level, 3 channels
    tokenizer = 2 * n * 3 * dim  # one projection of each token's 3 coefficients
    expected = transform + tokenizer + _trunk_flops(n, pairs, dim, s.depth)
    assert cost.flops == pytest.approx(expected, rel=1e-6)  # the kernel's 4x4 Gram matrix: 128


def test_executed_flops_say_what_the_path_computes():
    cfg = TrainConfig(model_size="micro", wavelet="haar")
    fused = model_cost(build_model(cfg.replace(attention="fused")))
    sparse = model_cost(build_model(cfg.replace(attention="sparse")))
    dense = model_cost(build_model(cfg.replace(attention="dense")))
    off = model_cost(build_model(cfg.replace(use_kernel=False)))
    assert fused.flops == sparse.flops == dense.flops < off.flops  # the support, counted
    assert off.executed_flops == off.flops and off.path == "sdpa"
    # dense computes every pair; fused every pair with 8 more channels per head in QK^T
    assert dense.executed_flops == pytest.approx(off.executed_flops, abs=128)
    depth, heads = MODEL_SIZES["micro"].depth, MODEL_SIZES["micro"].num_heads
    assert fused.executed_flops - dense.executed_flops == 2 * 8 * heads * depth * 1329**2
    assert dense.flops < sparse.executed_flops < fused.executed_flops
