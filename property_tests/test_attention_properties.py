"""Properties of dash_attention on drawn argument sets (``dash_flex.testing``), CPU.

Each property is stated in its test's docstring. The eager path is checked everywhere; the
compiled path (``torch.compile(fullgraph=True)``, aot_eager backend so each drawn shape
compiles in seconds) must agree with it.
"""

from __future__ import annotations

import math

import torch
import torch._dynamo
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.nn.attention.flex_attention import flex_attention

from dash_flex import dash_attention, dash_select, mods
from dash_flex import testing as dt
from dash_flex.reference import dash_attention_reference

torch._dynamo.config.cache_size_limit = 256  # every drawn shape/mod compiles once; none falls back
torch._dynamo.config.fail_on_recompile_limit_hit = True


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def _visible(shape: dt.AttentionShape, mask_mod) -> torch.Tensor:
    """[B, Hq, Sq, Skv] visibility before selection (causal + user mask)."""
    from dash_flex.reference import token_visibility

    return token_visibility(shape.batch, shape.q_heads, shape.q_len, shape.kv_len, shape.causal, mask_mod, "cpu")


@given(args=dt.dash_attention_args())
def test_rows_are_convex_combinations_of_allowed_values(args):
    """With one-hot values (v_i = e_i) the output row *is* the attention distribution: every
    weight ≥ 0, rows sum to 1 (0 for a query with no visible key), and the weight on any key
    that is invisible (future, masked) or outside the query's kept + forced blocks is exactly 0."""
    s = args.shape
    q, k, _ = args.tensors
    one_hot = torch.eye(s.kv_len).expand(s.batch, s.kv_heads, s.kv_len, s.kv_len).contiguous()
    with torch.no_grad():
        weights, sel = dash_attention(q, k, one_hot, return_selection=True, **args.kwargs)
    visible = _visible(s, args.kwargs.get("mask_mod"))
    G_act = s.q_heads // sel.active_blocks.shape[1]
    active = sel.active_blocks.repeat_interleave(G_act, dim=1)[..., torch.arange(s.kv_len) // s.block_size]
    assert (weights >= 0).all()
    row_sum = weights.sum(-1)
    has_key = visible.any(-1)
    torch.testing.assert_close(row_sum, has_key.to(row_sum.dtype), atol=1e-5, rtol=0)
    assert (weights[~(visible & active)] == 0).all()


@given(args=dt.dash_attention_args(shapes=dt.attention_shapes(causal=True)), data=st.data())
def test_causal_non_leakage(args, data):
    """Changing keys and values strictly after query t's position leaves outputs ≤ t unchanged."""
    s = args.shape
    q, k, v = args.tensors
    t = data.draw(st.integers(0, s.q_len - 1))
    a_t = t + s.kv_len - s.q_len
    assume(a_t + 1 < s.kv_len)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, a_t + 1 :] = 3 * torch.randn_like(k2[:, :, a_t + 1 :])
    v2[:, :, a_t + 1 :] = 3 * torch.randn_like(v2[:, :, a_t + 1 :])
    with torch.no_grad():
        out1 = dash_attention(q, k, v, **args.kwargs)
        out2 = dash_attention(q, k2, v2, **args.kwargs)
    assert torch.equal(out1[:, :, : t + 1], out2[:, :, : t + 1])


@given(
    args=dt.dash_attention_args(with_mask_mod=False),
    cuts=st.lists(st.integers(1, 255), min_size=1, max_size=3),
    data=st.data(),
)
def test_document_mask_non_leakage(args, cuts, data):
    """Under a document mask, changing the keys and values of other documents leaves a
    document's outputs unchanged (no summary, selection or score crosses documents)."""
    s = args.shape
    doc = dt._document_ids(s.kv_len, cuts)
    offset = s.kv_len - s.q_len if s.causal else 0
    q_doc = doc[torch.arange(s.q_len) + offset]
    target = data.draw(st.sampled_from(sorted(set(q_doc.tolist()))))
    kwargs = dict(args.kwargs, mask_mod=mods.generate_document_mask(doc, offset))
    q, k, v = args.tensors
    other = doc != target
    k2, v2 = k.clone(), v.clone()
    k2[:, :, other] = 3 * torch.randn_like(k2[:, :, other])
    v2[:, :, other] = 3 * torch.randn_like(v2[:, :, other])
    with torch.no_grad():
        out1 = dash_attention(q, k, v, **kwargs)
        out2 = dash_attention(q, k2, v2, **kwargs)
    rows = q_doc == target
    assert torch.equal(out1[:, :, rows], out2[:, :, rows])


@given(args=dt.dash_attention_args())
def test_matches_reference_and_flex_identity(args):
    """dash_attention equals the float64 reference, and flex_attention(q, k, v, sel.score_mod,
    sel.block_mask) equals dash_attention."""
    q, k, v = args.tensors
    with torch.no_grad():
        out = dash_attention(q, k, v, **args.kwargs)
        sel_kwargs = dict(args.kwargs)
        sel = dash_select(q, k, **sel_kwargs)
        user = flex_attention(
            q, k, v, score_mod=sel.score_mod, block_mask=sel.block_mask, enable_gqa=q.shape[1] != k.shape[1]
        )
    ref = dash_attention_reference(q, k, v, **args.kwargs)
    assert _rel(out, ref) < 1e-4
    assert torch.equal(user, out)


@given(args=dt.dash_attention_args())
def test_compiled_equals_eager(args):
    """torch.compile(fullgraph=True) of dash_attention gives the eager result."""
    q, k, v = args.tensors
    fn = torch.compile(
        lambda q, k, v: dash_attention(q, k, v, **args.kwargs), backend="aot_eager", fullgraph=True, dynamic=False
    )
    with torch.no_grad():
        torch.testing.assert_close(fn(q, k, v), dash_attention(q, k, v, **args.kwargs), atol=1e-5, rtol=1e-5)


@given(args=dt.dash_attention_args())
def test_gradients_finite_and_zero_on_unattended_values(args):
    """All gradients are finite; a value row that no query attends gets exactly zero gradient."""
    s = args.shape
    q, k, v = (t.clone().requires_grad_() for t in args.tensors)
    out, sel = dash_attention(q, k, v, return_selection=True, **args.kwargs)
    gq, gk, gv = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    for g in (gq, gk, gv):
        assert torch.isfinite(g).all()
    visible = _visible(s, args.kwargs.get("mask_mod"))
    G_act = s.q_heads // sel.active_blocks.shape[1]
    active = sel.active_blocks.repeat_interleave(G_act, dim=1)[..., torch.arange(s.kv_len) // s.block_size]
    attended = (visible & active).view(s.batch, s.kv_heads, -1, s.q_len, s.kv_len).any(2).any(2)  # [B, Hkv, Skv]
    assert (gv[~attended] == 0).all()


@given(
    args=dt.dash_attention_args(
        with_pool_query=True,
        sigma=st.just(1.0),
        shapes=dt.attention_shapes(kv_len=st.sampled_from([130, 256]), block_size=st.just(16)),
    )
)
def test_prior_carries_gradient_to_the_coarse_stage(args):
    """With finite sigma the fine stage reaches the coarse stage: pool_query (which acts only
    through the block summaries) gets a non-zero gradient whenever some query head keeps two or
    more blocks (entmax's Jacobian is 0 at a one-hot output, so a group mean of one-hot rows,
    e.g. two heads each keeping one block, carries none). With sigma = inf it gets none:
    gradients reach q and k only through the fine stage."""
    q, k, v = args.tensors
    u = args.kwargs["pool_query"].clone().requires_grad_()
    kwargs = dict(args.kwargs, pool_query=u)
    _, sel = dash_attention(q, k, v, return_selection=True, **kwargs)
    # p̄ is the mean of G_sel heads' entmax rows: a value that is not a multiple of 1/G_sel means
    # some head spread its mass over two or more blocks.
    scaled = sel.probs * (args.shape.q_heads // sel.probs.shape[1])
    assume(bool(((scaled - scaled.round()).abs() > 1e-4).any()))
    out = dash_attention(q.requires_grad_(), k, v, **kwargs)
    (gu,) = torch.autograd.grad(out, (u,), torch.randn_like(out))
    assert gu.abs().sum() > 0
    out_inf = dash_attention(q, k, v, **dict(kwargs, sigma=math.inf))
    gu_inf, gq_inf = torch.autograd.grad(out_inf, (u, q), torch.randn_like(out_inf), allow_unused=True)
    assert gu_inf is None or (gu_inf == 0).all()
    assert gq_inf is not None and gq_inf.abs().sum() > 0
