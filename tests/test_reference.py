"""The oracle itself: entmax properties, agreement with dense attention, gradients, causality."""

import math

import pytest
import torch
import torch.nn.functional as F

from dash_flex.reference import dash_attention_reference, entmax_bisect


def sparsemax_closed_form(z: torch.Tensor) -> torch.Tensor:
    """Sort-based sparsemax (Martins & Astudillo 2016) along the last dim."""
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    cumsum = zs.cumsum(-1)
    support = 1 + k * zs > cumsum
    k_z = support.sum(-1, keepdim=True)
    tau = (cumsum.gather(-1, k_z - 1) - 1) / k_z.to(z.dtype)
    return torch.clamp(z - tau, min=0)


def rand(*shape, seed, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1, 2, 7, 64, 300])
def test_alpha_two_is_closed_form_sparsemax(seed, n):
    z = rand(16, n, seed=seed, scale=3.0)
    torch.testing.assert_close(entmax_bisect(z, alpha=2.0), sparsemax_closed_form(z), atol=1e-12, rtol=0)


@pytest.mark.parametrize("alpha", [1.05, 1.25, 1.5, 1.8, 2.0])
@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0, 1e4])
def test_entmax_is_a_distribution_with_exact_support(alpha, scale):
    z = rand(32, 50, seed=int(alpha * 100 + scale), scale=scale)
    z[0, 10:] = -math.inf  # masked entries
    p = entmax_bisect(z, alpha=alpha)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(32, dtype=z.dtype), atol=1e-10, rtol=0)
    assert (p[0, 10:] == 0).all()
    # τ recovered from any support entry: p_i^{α-1} = (α-1) z_i − τ. It must be the same for all of
    # them, and the zeros must be exactly the entries with (α-1) z ≤ τ.
    s = (alpha - 1) * z
    tau_each = torch.where(p > 0, s - p.pow(alpha - 1), torch.nan)
    tau = torch.nanmean(tau_each, dim=-1, keepdim=True)
    spread = (tau_each - tau).abs().nan_to_num(0).amax()
    assert spread <= 1e-9 * max(1.0, scale)
    margin = 1e-9 * max(1.0, scale)
    assert ((p > 0) == (s > tau)).logical_or((s - tau).abs() < margin).all()


def test_entmax_masked_rows_and_gradients():
    z = rand(3, 9, seed=1).requires_grad_()
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[1] = True  # all-masked row
    mask[2, :4] = True
    p = entmax_bisect(z.masked_fill(mask, -math.inf), alpha=1.5)
    assert torch.equal(p[1], torch.zeros(9, dtype=z.dtype))
    (p * rand(3, 9, seed=2)).sum().backward()
    assert torch.isfinite(z.grad).all()
    assert (z.grad[1] == 0).all() and (z.grad[2, :4] == 0).all()


@pytest.mark.parametrize("alpha", [1.3, 1.5, 2.0])
def test_entmax_gradcheck(alpha):
    z = rand(4, 12, seed=3, scale=2.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: entmax_bisect(x, alpha=alpha), (z,), eps=1e-6, atol=1e-6)


def _explicit_causal_sdpa(q, k, v):
    Sq, Skv = q.shape[2], k.shape[2]
    mask = torch.arange(Skv)[None, :] <= (torch.arange(Sq) + Skv - Sq)[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


@pytest.mark.parametrize("Hq,Hkv", [(2, 2), (4, 2), (8, 1)])
@pytest.mark.parametrize("Sq,Skv", [(40, 40), (17, 40), (1, 33)])
def test_single_block_equals_dense_causal_sdpa(Hq, Hkv, Sq, Skv):
    q, k, v = rand(2, Hq, Sq, 16, seed=4), rand(2, Hkv, Skv, 16, seed=5), rand(2, Hkv, Skv, 16, seed=6)
    out = dash_attention_reference(q, k, v, block_size=64, causal=True, pool_query=rand(Hkv, 16, seed=7))
    torch.testing.assert_close(out, _explicit_causal_sdpa(q, k, v), atol=1e-12, rtol=1e-12)
    if Sq == Skv:
        dense = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=Hq != Hkv)
        torch.testing.assert_close(out, dense, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("sigma", [1.0, 0.3])
def test_reference_gradcheck(share, sigma):
    B, Hq, Hkv, S, D = 1, 2, 1, 48, 8
    q = rand(B, Hq, S, D, seed=8, scale=2.0).requires_grad_()
    k = rand(B, Hkv, S, D, seed=9, scale=2.0).requires_grad_()
    v = rand(B, Hkv, S, D, seed=10).requires_grad_()
    u = rand(Hkv, D, seed=11).requires_grad_()

    def fn(q, k, v, u):
        return dash_attention_reference(
            q, k, v, block_size=16, alpha=1.5, sigma=sigma, pool_query=u, share_kv_groups=share
        )

    _, sel = dash_attention_reference(q, k, v, block_size=16, pool_query=u, sigma=sigma, return_selection=True)
    # The check is meaningful only if the coarse stage picks something to differentiate.
    assert sel.selected.any() and (sel.prior != 0).any()
    assert torch.autograd.gradcheck(fn, (q, k, v, u), eps=1e-6, atol=1e-5, fast_mode=True)


def test_coarse_stage_gradient_is_nonzero():
    q = rand(1, 2, 64, 8, seed=12, scale=2.0).requires_grad_()
    k = rand(1, 2, 64, 8, seed=13, scale=2.0).requires_grad_()
    v = rand(1, 2, 64, 8, seed=14)
    u = rand(2, 8, seed=15).requires_grad_()
    dash_attention_reference(q, k, v, block_size=16, pool_query=u).square().sum().backward()
    assert u.grad.abs().sum() > 0  # pool_query only acts through the summaries → the coarse stage


@pytest.mark.parametrize("Sq", [64, 23])
def test_future_keys_never_change_outputs(Sq):
    Skv = 64
    q, k, v = rand(1, 4, Sq, 8, seed=16), rand(1, 2, Skv, 8, seed=17), rand(1, 2, Skv, 8, seed=18)
    out = dash_attention_reference(q, k, v, block_size=16)
    for t in [0, Sq // 3, Sq - 2]:
        a_t = t + Skv - Sq
        k2, v2 = k.clone(), v.clone()
        k2[:, :, a_t + 1 :] += rand(1, 2, Skv - a_t - 1, 8, seed=19 + t, scale=5.0)
        v2[:, :, a_t + 1 :] += rand(1, 2, Skv - a_t - 1, 8, seed=29 + t, scale=5.0)
        out2 = dash_attention_reference(q, k2, v2, block_size=16)
        torch.testing.assert_close(out2[:, :, : t + 1], out[:, :, : t + 1], atol=0, rtol=0)


def test_flash_precision_backward_model():
    """``flash_output_dtype`` changes only the backward: with float64 rounding (none) it equals
    plain autograd; with bfloat16 rounding of O in Δ, v's gradient is unchanged, while q/k move
    by a bf16-sized amount with sigma = inf (the Δ error times the mean key) and more through
    the log-prior with a finite sigma."""
    g = torch.Generator().manual_seed(7)
    q = 2 * torch.randn(1, 4, 256, 32, generator=g, dtype=torch.float64)
    k = 2 * torch.randn(1, 2, 256, 32, generator=g, dtype=torch.float64)
    v = torch.randn(1, 2, 256, 32, generator=g, dtype=torch.float64)
    grad_out = torch.randn(1, 4, 256, 32, generator=g, dtype=torch.float64)

    def grads(sigma, dtype):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = dash_attention_reference(*leaves, block_size=32, sigma=sigma, flash_output_dtype=dtype)
        return out, torch.autograd.grad(out, leaves, grad_out)

    out, exact = grads(1.0, None)
    out64, same = grads(1.0, torch.float64)
    torch.testing.assert_close(out64, out, atol=0, rtol=0)
    for a, b in zip(same, exact):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    _, rounded = grads(1.0, torch.bfloat16)
    torch.testing.assert_close(rounded[2], exact[2], atol=1e-12, rtol=1e-10)
    _, exact_inf = grads(math.inf, None)
    _, rounded_inf = grads(math.inf, torch.bfloat16)
    torch.testing.assert_close(rounded_inf[2], exact_inf[2], atol=1e-12, rtol=1e-10)

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    for i in (0, 1):
        assert 1e-5 < rel(rounded_inf[i], exact_inf[i]) < 1e-2
        assert rel(rounded[i], exact[i]) > rel(rounded_inf[i], exact_inf[i])
