"""Top-k block selection against a float64 oracle written from its definition (dash_flex/topk.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dash_flex import dense_flex_attention
from dash_flex.topk import topk_attention, topk_select


def make_qkv(seed, B=1, Hq=4, Hkv=2, Sq=70, Skv=70, D=16, pool=True):
    g = torch.Generator().manual_seed(seed)
    q = 2 * torch.randn(B, Hq, Sq, D, generator=g)
    k = 2 * torch.randn(B, Hkv, Skv, D, generator=g)
    v = torch.randn(B, Hkv, Skv, D, generator=g)
    u = torch.randn(Hkv, D, generator=g) if pool else None
    return q, k, v, u


def topk_oracle(q, k, v, u, top_k, bs, share):
    """Loop over (b, h, t): summaries, importance softmax over complete past blocks, group mean,
    the top_k best of them plus the own block, then softmax attention over their visible keys."""
    q, k, v = q.double(), k.double(), v.double()
    B, Hq, Sq, D = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    G, nb = Hq // Hkv, -(-Skv // bs)
    summaries = torch.zeros(B, Hkv, nb, D, dtype=torch.float64)
    for b in range(B):
        for h in range(Hkv):
            for c in range(nb):
                kc = k[b, h, c * bs : (c + 1) * bs]
                w = torch.softmax(
                    kc @ (u[h].double() if u is not None else torch.zeros(D, dtype=torch.float64)) / math.sqrt(D), 0
                )
                summaries[b, h, c] = w @ kc
    out = torch.zeros(B, Hq, Sq, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        for t in range(Sq):
            a = t + Skv - Sq
            own = a // bs
            importance = torch.zeros(Hq, own)
            for h in range(Hq):
                if own:
                    importance[h] = torch.softmax(summaries[b, h // G, :own] @ q[b, h, t] / math.sqrt(D), 0)
            for h in range(Hq):
                heads = range((h // G) * G, (h // G + 1) * G) if share else [h]
                score = sum(importance[j] for j in heads) / len(heads)
                kept = set(torch.argsort(score, descending=True)[:top_k].tolist()) | {own}
                keys = [i for i in range(a + 1) if i // bs in kept]
                w = torch.softmax(k[b, h // G, keys] @ q[b, h, t] / math.sqrt(D), 0)
                out[b, h, t] = w @ v[b, h // G, keys]
    return out


@pytest.mark.parametrize(
    "share,Sq,top_k,pool", [(True, 70, 2, True), (False, 70, 1, True), (True, 23, 3, False), (False, 1, 2, True)]
)
def test_matches_oracle(share, Sq, top_k, pool):
    q, k, v, u = make_qkv(Sq + top_k, Sq=Sq, pool=pool)
    with torch.no_grad():
        out = topk_attention(q, k, v, top_k=top_k, block_size=16, pool_query=u, share_kv_groups=share)
    ref = topk_oracle(q, k, v, u, top_k, 16, share)
    assert float((out.double() - ref).norm() / ref.norm()) < 1e-5


def test_topk_is_sparser_than_dense_and_counts_blocks():
    q, k, v, u = make_qkv(1)
    sel = topk_select(q, k, top_k=2, block_size=16, pool_query=u)
    # Query t keeps min(2, t // 16) eligible blocks plus its own block.
    expected = torch.clamp(torch.arange(70) // 16, max=2) + 1
    assert torch.equal(sel.active_blocks.sum(-1)[0, 0], expected)
    assert sel.sparsity().token_sparsity > 0.1
    assert torch.equal(sel.log_prior, torch.zeros_like(sel.log_prior))


def test_k_at_least_eligible_equals_dense_causal_with_gradients():
    q, k, v, u = make_qkv(2, Sq=100, Skv=100)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = topk_attention(*leaves, top_k=7, block_size=16, pool_query=u)  # at most 6 eligible blocks
    dense_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*dense_leaves, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(out, leaves, grad_out)
    ref_grads = torch.autograd.grad(ref, dense_leaves, grad_out)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_no_gradient_reaches_the_coarse_stage():
    """pool_query gets no gradient, and the gradients of q/k/v are those of the fine stage with
    the selection held fixed."""
    q, k, v, u = make_qkv(4)
    u = u.requires_grad_()
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = topk_attention(*leaves, top_k=1, block_size=16, pool_query=u)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    grads = torch.autograd.grad(out, leaves + [u], grad_out, allow_unused=True)
    assert grads[3] is None
    sel = topk_select(q, k, top_k=1, block_size=16, pool_query=u.detach())
    fixed = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = dense_flex_attention(*fixed, score_mod=None, mask_mod=sel.block_mask.mask_mod, scale=0.25)
    ref_grads = torch.autograd.grad(ref, fixed, grad_out)
    for g, r in zip(grads[:3], ref_grads):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-6)


def test_ties_keep_exactly_k_eligible_blocks():
    """Identical blocks give identical importances: each query still keeps exactly
    min(top_k, #eligible) eligible blocks, never an ineligible (future) one."""
    g = torch.Generator().manual_seed(6)
    block = torch.randn(1, 2, 16, 16, generator=g)
    k = block.repeat(1, 1, 6, 1)  # 6 identical blocks, S = 96
    q = torch.randn(1, 4, 96, 16, generator=g)
    for share in (True, False):
        sel = topk_select(q, k, top_k=3, block_size=16, share_kv_groups=share)
        kept = sel.active_blocks & ~sel.forced_blocks
        own = torch.arange(96) // 16
        assert torch.equal(kept.sum(-1)[0, 0], torch.clamp(own, max=3))
        future_or_own = torch.arange(6)[None, :] >= own[:, None]
        assert not (kept[0, :, :, :] & future_or_own).any()


def test_bad_top_k_is_rejected():
    q, k, v, _ = make_qkv(7)
    with pytest.raises(ValueError, match="top_k"):
        topk_attention(q, k, v, top_k=0, block_size=16)
    with pytest.raises(TypeError, match="top_k"):
        topk_select(q, k, top_k=2.0, block_size=16)
