"""`DashAttention` (the nn.Module): plumbing, GQA, RoPE hook, learnable parts, compile, sparsity."""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

from dash_flex import dash_attention
from dash_flex.layer import DashAttention, RotaryEmbedding
from dash_flex.topk import topk_attention

torch._dynamo.config.fail_on_recompile_limit_hit = True


def make_layer(selector="dash", seed=0, **kw):
    torch.manual_seed(seed)
    kw = dict(dict(num_kv_heads=2, block_size=16, top_k=2), **kw)
    layer = DashAttention(64, 4, selector=selector, **kw)
    if layer.pool_query is not None:
        with torch.no_grad():
            layer.pool_query.normal_()
    return layer


def make_x(seed, B=2, S=100):
    return 2 * torch.randn(B, S, 64, generator=torch.Generator().manual_seed(seed))


def heads(layer, x):
    B, S, _ = x.shape
    q = layer.q_proj(x).view(B, S, 4, 16).transpose(1, 2)
    k = layer.k_proj(x).view(B, S, 2, 16).transpose(1, 2)
    v = layer.v_proj(x).view(B, S, 2, 16).transpose(1, 2)
    return q, k, v


def merge(layer, out):
    B, _, S, _ = out.shape
    return layer.o_proj(out.transpose(1, 2).reshape(B, S, -1))


def test_gqa_layer_equals_dash_attention_forward_and_gradients():
    """selection_scale = 3 (a buffer, applied as c·q plus a /c score_mod) equals dash_attention's
    float selection_scale = 3, forward and gradients, with GQA (4 query heads, 2 KV heads)."""
    layer = make_layer(selection_scale=3.0)
    x = make_x(1)
    out = layer(x)
    grads = torch.autograd.grad(out.square().sum(), list(layer.parameters()))
    q, k, v = heads(layer, x)
    ref = merge(layer, dash_attention(q, k, v, block_size=16, selection_scale=3.0, pool_query=layer.pool_query))
    ref_grads = torch.autograd.grad(ref.square().sum(), list(layer.parameters()))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):  # relative L2, as in test_attention (1/p̄ amplifies rounding)
        assert float((g - r).norm() / r.norm()) < 1e-4


@pytest.mark.parametrize("selector", ["dash", "topk", "dense"])
def test_forward_backward_every_selector(selector):
    layer = make_layer(selector, rope=RotaryEmbedding(16))
    x = make_x(2).requires_grad_()
    out, sel = layer(x, return_selection=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert getattr(layer, name).weight.grad.abs().sum() > 0, name
    if selector == "dash":  # through entmax and the prior
        assert layer.pool_query.grad is not None and layer.pool_query.grad.abs().sum() > 0
    else:  # top-k's ranking is detached; dense never uses it
        assert layer.pool_query.grad is None
    assert (sel is None) == (selector == "dense")


def test_topk_and_dense_layers_equal_their_functions():
    x = make_x(3)
    topk_layer, dense_layer = make_layer("topk"), make_layer("dense")
    with torch.no_grad():
        q, k, v = heads(topk_layer, x)
        ref = merge(topk_layer, topk_attention(q, k, v, top_k=2, block_size=16, pool_query=topk_layer.pool_query))
        torch.testing.assert_close(topk_layer(x), ref)
        q, k, v = heads(dense_layer, x)
        ref = merge(dense_layer, F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
        torch.testing.assert_close(dense_layer(x), ref)


def test_rope_hook_is_applied_and_relative():
    """The hook rotates q and k by position; a constant shift of every position leaves q·k, hence
    the layer output, unchanged, while removing RoPE changes it. Mean pooling here: a pooling
    vector scores rotated keys u·R(i)k_i, which depends on absolute positions."""
    layer = make_layer(rope=RotaryEmbedding(16), learn_pool_query=False)
    x = make_x(4)
    with torch.no_grad():
        base = layer(x)
        shifted = layer(x, positions=torch.arange(100) + 37)
        batched = layer(x, positions=torch.arange(100).expand(2, 100))
        layer.rope = None
        plain = layer(x)
    torch.testing.assert_close(shifted, base, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batched, base)
    assert (plain - base).abs().max() > 1e-2
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 5, 16, generator=torch.Generator().manual_seed(5)).unbind(2)[:2]
    rq, rk = rope(q[:, :, None].expand(1, 1, 5, 16), k[:, :, None].expand(1, 1, 5, 16), torch.arange(5))
    dots = (rq[0, 0, 1:] * rk[0, 0, :-1]).sum(-1)  # q at m+1 against k at m: same offset everywhere
    torch.testing.assert_close(dots, dots[:1].expand(4))


def test_selection_reports_sparsity_that_grows_with_selection_scale():
    x = make_x(6, B=1, S=256)
    reports = []
    for c in (0.25, 16.0):
        layer = make_layer(selection_scale=c)
        with torch.no_grad():
            _, sel = layer(x, return_selection=True)
        reports.append(sel.sparsity())
    assert 0.0 <= reports[0].token_sparsity < reports[1].token_sparsity <= 1.0
    assert reports[1].kept_blocks_mean < reports[0].kept_blocks_mean
    with torch.no_grad():
        _, sel = make_layer("topk")(x, return_selection=True)
    # Query t keeps min(2, t // 16) + 1 blocks: attended pairs Σ_t min(t+1, 2·16 + t % 16 + 1).
    t = torch.arange(256)
    attended = torch.minimum(t + 1, 32 + t % 16 + 1).sum().item()
    assert math.isclose(sel.sparsity().token_sparsity, 1 - attended / (256 * 257 / 2), rel_tol=1e-9)


def test_learnable_alpha_stays_in_range_and_is_used():
    layer = make_layer(learn_alpha=True, alpha=1.5)
    assert layer.alpha == 1.5 and isinstance(layer.alpha_offset, torch.nn.Parameter)
    x = make_x(7)
    with torch.no_grad():
        out_15 = layer(x)
        layer.alpha_offset.fill_(5.0)
        out_2 = layer(x)  # an eager forward re-reads α
    assert layer.alpha == 2.0 and (out_2 - out_15).abs().max() > 1e-4
    with torch.no_grad():
        ref = make_layer(alpha=2.0)(x)  # same seed, same weights, fixed α = 2
    torch.testing.assert_close(out_2, ref)
    state = layer.state_dict()
    state["alpha_offset"] = torch.tensor(-3.0)
    layer.load_state_dict(state)
    assert 1.0 < layer.alpha <= 1.0 + 1.1e-3
    layer(x).sum().backward()
    assert layer.alpha_offset.grad is None  # documented: entmax takes α as a float
    with pytest.raises(ValueError, match="alpha"):
        DashAttention(64, 4, alpha=1.0)
    with pytest.raises(ValueError, match="selector"):
        DashAttention(64, 4, selector="sparse")


def test_compiled_fullgraph_equals_eager_with_gqa_and_rope():
    """Inductor on the dash layer (GQA, RoPE, learnable pooling, selection scale ≠ 1); the top-k
    and dense layers are traced for graph breaks (Dynamo only, no Inductor: keeps CI short)."""
    torch._dynamo.reset()
    layer = make_layer(rope=RotaryEmbedding(16), selection_scale=2.0)
    x = make_x(8, S=200)
    with torch.no_grad():
        eager = layer(x)
        compiled = torch.compile(layer, fullgraph=True, dynamic=False)(x)
    torch.testing.assert_close(compiled, eager, atol=2e-5, rtol=2e-5)
    for selector in ("dash", "topk", "dense"):
        with torch.no_grad():
            explanation = torch._dynamo.explain(make_layer(selector, rope=RotaryEmbedding(16)))(x)
        assert explanation.graph_break_count == 0, (selector, explanation.break_reasons)
        assert explanation.graph_count == 1


def test_changing_selection_scale_buffer_does_not_recompile():
    torch._dynamo.reset()
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    layer = make_layer()
    compiled = torch.compile(layer, backend=counter, fullgraph=True, dynamic=False)
    x = make_x(9, B=1, S=128)
    outs = []
    with torch.no_grad():
        for c in (1.0, 4.0, 16.0):
            layer.selection_scale.fill_(c)
            outs.append(compiled(x))
    assert counter.frame_count == 1
    assert (outs[0] - outs[2]).abs().max() > 1e-4  # the buffer is read at run time
