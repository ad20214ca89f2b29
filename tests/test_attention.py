"""The PSD kernel, its log-bias form, and every attention path against the dense reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from wno.model.attention_kernel import WaveletAttentionKernel
from wno.model.attention_paths import PATHS, KernelAttention, SparseLayout, resolve_path
from wno.model.tokenization import WaveletTokenizer
from wno.model.wavelets_2d import WaveletTransform2d


def _meta(levels=3, layout="seed", patch=2):
    wt = WaveletTransform2d("haar", levels)
    return WaveletTokenizer(3, 16, wt.band_sizes(), layout=layout, patch=patch).meta


def _randomise(kernel: WaveletAttentionKernel, seed: int = 0):
    """Move the learnable parameters away from their initial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        kernel.log_sigma.fill_(-0.4)
        kernel.log_length.fill_(math.log(kernel.radius) - 0.5)
        kernel.orient_raw.copy_(torch.randn(kernel.orient_raw.shape, generator=g))


SETTINGS = [(0.1, 0), (0.15, 1), (0.25, 1), (0.5, 2)]


@pytest.mark.parametrize("radius,bandwidth", SETTINGS)
def test_kernel_matrix_is_psd(radius, bandwidth):
    kernel = WaveletAttentionKernel(_meta(), 3, radius, bandwidth)
    _randomise(kernel)
    K = kernel.dense_log_k().detach().double().exp()
    assert torch.allclose(K, K.T)
    assert torch.linalg.eigvalsh(K).min() >= -1e-5


@pytest.mark.parametrize("radius,bandwidth", SETTINGS)
def test_kernel_is_zero_beyond_radius_and_bandwidth(radius, bandwidth):
    meta = _meta()
    kernel = WaveletAttentionKernel(meta, 3, radius, bandwidth)
    K = kernel.dense_log_k().detach().exp()
    dist = torch.cdist(meta.pos, meta.pos)
    dj = (meta.level[:, None] - meta.level[None, :]).abs()
    assert (K[dist >= radius * (1 + 1e-6)] == 0).all()
    assert (K[dj > bandwidth] == 0).all()
    near = (dist < radius * 0.9) & (dj <= bandwidth)
    assert (K[near] > 0).all()
    assert (K.diagonal() > 0).all()  # every token keeps itself: no empty softmax row


def test_kept_pairs_match_the_design_figures():
    # docs/design.md: radius 0.1 / 0.15 / 0.5 with bandwidth 1 keep 3.3%, 6.2%, 45.7% of pairs.
    meta = _meta()
    for radius, expected in ((0.1, 0.033), (0.15, 0.062), (0.25, 0.14), (0.5, 0.45)):
        kept = WaveletAttentionKernel(meta, 3, radius, 1).kept_fraction()
        assert abs(kept - expected) < 0.01, (radius, kept)


def test_log_bias_equals_multiply_and_renormalise():
    kernel = WaveletAttentionKernel(_meta(2, "patch", 2), 2, 0.3, 1)
    _randomise(kernel)
    n = kernel.level.numel()
    scores = torch.randn(n, n)
    logk = kernel.dense_log_k().detach()
    via_bias = torch.softmax(scores + logk, dim=-1)
    weights = torch.softmax(scores, dim=-1) * logk.exp()
    via_product = weights / weights.sum(-1, keepdim=True)
    assert torch.allclose(via_bias, via_product, atol=1e-6)


def test_learnable_part_is_low_rank_in_token_features():
    kernel = WaveletAttentionKernel(_meta(), 3, 0.25, 1)
    _randomise(kernel)
    q_feat, k_feat = kernel.token_features()
    n = kernel.level.numel()
    idx = torch.arange(n)
    full = kernel.dense_log_k()
    rebuilt = q_feat @ k_feat.T + kernel.static_log_k(idx[:, None], idx[None, :])
    finite = torch.isfinite(full)
    assert torch.equal(finite, torch.isfinite(rebuilt))
    diff = torch.where(finite, full - rebuilt, torch.nan)
    row_spread = diff.nan_to_num(-1e9).amax(1) - diff.nan_to_num(1e9).amin(1)
    assert row_spread.abs().max() < 1e-4  # equal up to a constant per query row


def _attention_inputs(n, heads=2, dh=16, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dh, generator=g, requires_grad=True) for _ in range(3)]


def _run_path(ka: KernelAttention, path: str, q, k, v, backward: bool = True):
    ka.path = path
    for p in ka.parameters():
        p.grad = None
    for t in (q, k, v):
        t.grad = None
    out = ka.build(torch.device("cpu")).attend(q, k, v)
    grads = None
    if backward:
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        grads = [t.grad.clone() for t in (q, k, v)] + [p.grad.clone() for p in ka.parameters()]
    return out.detach(), grads


@pytest.mark.parametrize("path", ["fused", "sparse"])
@pytest.mark.parametrize("layout,patch,radius,bandwidth", [
    ("seed", 1, 0.25, 1), ("patch", 2, 0.15, 0), ("patch", 2, 0.5, 2)])
def test_paths_match_dense_reference_outputs_and_gradients(path, layout, patch, radius, bandwidth):
    kernel = WaveletAttentionKernel(_meta(3, layout, patch), 3, radius, bandwidth)
    _randomise(kernel)
    ka = KernelAttention(kernel, "dense")
    q, k, v = _attention_inputs(kernel.level.numel())
    ref_out, ref_grads = _run_path(ka, "dense", q, k, v)
    out, grads = _run_path(ka, path, q, k, v)
    assert torch.allclose(out, ref_out, atol=1e-5)
    for a, b in zip(grads, ref_grads):  # q, k, v, then every kernel parameter
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3), (a - b).abs().max()
    assert all(g.abs().sum() > 0 for g in grads[3:])  # gradients reach every kernel parameter


@pytest.mark.parametrize("block,key_block", [(16, 4), (32, 8), (64, 4), (64, 16), (128, 16)])
def test_sparse_layouts_of_every_granularity_agree(block, key_block):
    kernel = WaveletAttentionKernel(_meta(), 3, 0.25, 1)
    _randomise(kernel)
    ka = KernelAttention(kernel, "dense")
    ka.sparse_layout = SparseLayout(kernel, block, key_block)
    q, k, v = _attention_inputs(kernel.level.numel(), batch=1)
    ref_out, ref_grads = _run_path(ka, "dense", q, k, v)
    out, grads = _run_path(ka, "sparse", q, k, v)
    assert torch.allclose(out, ref_out, atol=1e-5)
    for a, b in zip(grads, ref_grads):  # q, k, v, then every kernel parameter
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3), (a - b).abs().max()
    layout = ka.sparse_layout
    # it reads every kept pair and skips work
    assert kernel.kept_fraction() <= layout.gathered_fraction < 1.0


def test_flex_path_forward_matches_dense_on_cpu():
    # FlexAttention runs only the forward on CPU; its gradients are checked where CUDA exists.
    kernel = WaveletAttentionKernel(_meta(2, "patch", 2), 2, 0.3, 1)
    _randomise(kernel)
    ka = KernelAttention(kernel, "dense")
    q, k, v = (t.detach() for t in _attention_inputs(kernel.level.numel()))
    ref_out, _ = _run_path(ka, "dense", q, k, v, backward=False)
    out, _ = _run_path(ka, "flex", q, k, v, backward=False)
    assert torch.allclose(out, ref_out, atol=1e-5)


def test_flex_path_applies_attention_dropout_through_the_fused_path():
    # FlexAttention has no dropout: asked for it, the flex path must not silently skip it.
    kernel = WaveletAttentionKernel(_meta(2, "patch", 2), 2, 0.3, 1)
    ka = KernelAttention(kernel, "flex")
    q, k, v = (t.detach() for t in _attention_inputs(kernel.level.numel()))
    outs = {}
    for path in ("flex", "fused"):
        ka.path = path
        torch.manual_seed(0)
        outs[path] = ka.build(torch.device("cpu")).attend(q, k, v, dropout_p=0.5)
    ka.path = "fused"
    no_dropout = ka.build(torch.device("cpu")).attend(q, k, v)
    assert torch.equal(outs["flex"], outs["fused"])
    assert not torch.allclose(outs["flex"], no_dropout)


def test_flex_score_mod_rebuilt_every_forward_reuses_the_compiled_kernel():
    # The score_mod captures this forward's orientation table (a new tensor each step); the
    # compiled FlexAttention must be reused, not re-specialised per step. Dynamo's guards are the
    # same for every backend, so the eager backend checks this on CPU.
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention

    kernel = WaveletAttentionKernel(_meta(2, "patch", 2), 2, 0.3, 1)
    ka = KernelAttention(kernel, "dense")
    q, k, v = (t.detach() for t in _attention_inputs(kernel.level.numel()))
    torch._dynamo.reset()
    compiled = torch.compile(flex_attention, backend="eager", dynamic=False)
    with torch.no_grad():
        for step in range(3):
            kernel.orient_raw.add_(0.3)  # an optimiser step: new table values
            ka.path = "dense"
            ref = ka.build(torch.device("cpu")).attend(q, k, v)
            ka.path = "flex"
            bias = ka.build(torch.device("cpu"))
            with torch._dynamo.config.patch(error_on_recompile=step > 0):
                out = compiled(q, k, v, score_mod=bias.score_mod, block_mask=bias.block_mask)
            assert torch.allclose(out, ref, atol=1e-5)  # and it reads this step's table


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention backward needs CUDA")
def test_flex_path_gradients_match_dense_on_cuda():
    kernel = WaveletAttentionKernel(_meta(), 3, 0.25, 1).cuda()
    _randomise(kernel)
    ka = KernelAttention(kernel, "dense").cuda()
    q, k, v = (t.detach().cuda().requires_grad_() for t in _attention_inputs(1329))
    grads = {}
    for path in ("dense", "flex"):
        for t in [q, k, v, *ka.parameters()]:
            t.grad = None
        ka.path = path
        out = ka.build(q.device).attend(q, k, v)
        (out * torch.linspace(-1, 1, out.shape[-1], device=q.device)).sum().backward()
        grads[path] = (out.detach(), [t.grad.clone() for t in [q, k, v, *ka.parameters()]])
    from wno.model.attention_paths import flex_fell_back

    assert not flex_fell_back()  # FlexAttention itself ran, not the fused fallback
    assert torch.allclose(grads["flex"][0], grads["dense"][0], atol=1e-4)
    for a, b in zip(grads["flex"][1], grads["dense"][1]):  # q, k, v, every kernel parameter
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), (a - b).abs().max()


def test_resolve_path():
    assert resolve_path("auto", "cpu") == "fused"
    assert resolve_path("auto", "cpu", gathered_fraction=0.45) == "sparse"
    assert resolve_path("auto", "cpu", gathered_fraction=0.8) == "fused"
    assert resolve_path("auto", "cuda", gathered_fraction=0.45) == "flex"
    assert resolve_path("auto", "cuda") == "flex"
    assert resolve_path("sparse", "cuda") == "sparse"
    assert set(PATHS) == {"dense", "fused", "sparse", "flex"}
    with pytest.raises(ValueError, match="attention path"):
        resolve_path("blocky", "cpu")


# --- auto: measured once per machine, torch version and shape ----------------------------------------
def _auto(tmp_path, monkeypatch, seconds: dict[str, float]):
    """An `auto` KernelAttention whose timings are `seconds` (the measuring is faked, so the
    test pins the choosing and caching, not this machine's speed); returns it and the calls."""
    from wno.model import path_choice

    monkeypatch.setenv("WNO_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(path_choice.ENV_AUTOTUNE, raising=False)
    calls: list[str] = []
    ka = KernelAttention(WaveletAttentionKernel(_meta(2), 2), "auto", num_heads=2, head_dim=8)

    def fake_step(path, device, shape):
        def step():
            calls.append(path)
        return step

    monkeypatch.setattr(ka, "_attention_step", fake_step)
    monkeypatch.setattr(path_choice, "_time", lambda step: (step(), seconds[calls[-1]])[1])
    return ka, calls


@pytest.mark.parametrize("faster", ["fused", "sparse"])
def test_auto_takes_the_path_measured_faster_on_this_cpu_and_remembers_it(tmp_path, monkeypatch,
                                                                          faster):
    import json

    from wno.model import path_choice

    slower = {"fused": "sparse", "sparse": "fused"}[faster]
    ka, calls = _auto(tmp_path, monkeypatch, {faster: 0.1, slower: 0.3})
    assert ka.resolve("cpu", batch=8) == faster and sorted(calls) == ["fused", "sparse"]
    assert ka.resolve("cpu", batch=8) == faster and len(calls) == 2  # remembered in the module
    stored = json.loads(path_choice.cache_file().read_text())
    (key,) = [k for k in stored if not k.endswith("seconds")]
    assert stored[key] == faster and f"torch {torch.__version__}" in key and "B=8 H=2" in key
    assert path_choice.cpu_name() in key
    # A new process (a fresh module) reads the file instead of measuring again ...
    again, calls2 = _auto(tmp_path, monkeypatch, {faster: 9.0, slower: 0.1})
    assert again.resolve("cpu", batch=8) == faster and calls2 == []
    # ... but another shape (batch) or torch version is measured anew.
    assert again.resolve("cpu", batch=4) == slower and len(calls2) == 2
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    third, calls3 = _auto(tmp_path, monkeypatch, {faster: 9.0, slower: 0.1})
    assert third.resolve("cpu", batch=8) == slower and len(calls3) == 2


def test_auto_uses_the_rule_when_told_or_on_cuda_and_survives_a_damaged_cache(tmp_path,
                                                                            monkeypatch):
    from wno.model import path_choice

    ka, calls = _auto(tmp_path, monkeypatch, {"fused": 0.1, "sparse": 0.3})
    monkeypatch.setenv(path_choice.ENV_AUTOTUNE, "0")
    rule = resolve_path("auto", "cpu", ka.sparse_layout.gathered_fraction)
    assert ka.resolve("cpu", batch=8) == rule and calls == []
    assert ka.resolve("cuda", batch=8) == "flex" and calls == []
    monkeypatch.setenv(path_choice.ENV_AUTOTUNE, "1")
    path_choice.cache_file().write_text("{not json")
    assert ka.resolve("cpu", batch=8) == "fused" and len(calls) == 2
    fixed = KernelAttention(ka.kernel, "dense")
    assert fixed.resolve("cpu", batch=8) == "dense"  # an explicit path is never measured


def test_measuring_leaves_the_kernels_parameters_without_gradients(tmp_path, monkeypatch):
    from wno.model import path_choice

    monkeypatch.setenv("WNO_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(path_choice.ENV_AUTOTUNE, raising=False)
    ka = KernelAttention(WaveletAttentionKernel(_meta(2), 2), "auto", num_heads=2, head_dim=8)
    assert ka.resolve("cpu", batch=2) in ("fused", "sparse")
    assert all(p.grad is None for p in ka.parameters())


def test_kernel_off_attention_is_plain_sdpa():
    from wno.model.wmsa import WaveletMultiScaleAttention

    attn = WaveletMultiScaleAttention(32, 2).eval()
    x = torch.randn(2, 10, 32)
    q, k, v = attn.qkv(x).view(2, 10, 3, 2, 16).permute(2, 0, 3, 1, 4)
    expected = attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 10, 32))
    assert torch.allclose(attn(x), expected, atol=1e-6)
