"""dash_attention / dash_select against the float64 reference, on the CPU.

Tolerances (float32 inputs): relative L2 error ≤ 1e-4 for the output and ≤ 2e-3 for the
gradients. The gradient bound is looser because the log-prior differentiates ``log p̄``:
blocks kept with a tiny probability amplify the float32 rounding of entmax by ``1/p̄``.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention
from torch.utils._python_dispatch import TorchDispatchMode

from dash_flex import dash_attention, dash_select, dense_flex_attention, mods
from dash_flex.reference import dash_attention_reference

FWD_TOL, GRAD_TOL = 1e-4, 2e-3


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def make_inputs(seed, B, Hq, Hkv, Sq, Skv, D, pool=True, dtype=torch.float32, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, Sq, D, generator=g) * spread
    k = torch.randn(B, Hkv, Skv, D, generator=g) * spread
    v = torch.randn(B, Hkv, Skv, D, generator=g)
    u = torch.randn(Hkv, D, generator=g) if pool else None
    return q.to(dtype), k.to(dtype), v.to(dtype), u


def check_against_reference(q, k, v, u, captured=(), **kw):
    """Forward and gradients (q, k, v, pool_query and captured tensors) vs the reference."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    u_leaf = None if u is None else u.detach().clone().requires_grad_()
    out = dash_attention(*leaves, pool_query=u_leaf, **kw)
    grad_out = torch.randn_like(out)
    params = leaves + ([u_leaf] if u_leaf is not None else []) + list(captured)
    grads = torch.autograd.grad(out, params, grad_out, allow_unused=True)

    ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    u_ref = None if u is None else u.detach().double().requires_grad_()
    ref = dash_attention_reference(*ref_leaves, pool_query=u_ref, **kw)
    ref_params = ref_leaves + ([u_ref] if u_ref is not None else []) + list(captured)
    ref_grads = torch.autograd.grad(ref, ref_params, grad_out.double(), allow_unused=True)

    assert torch.isfinite(out).all()
    assert rel_err(out, ref) <= FWD_TOL, f"forward error {rel_err(out, ref):.2e}"
    names = ["q", "k", "v"] + (["pool_query"] if u is not None else []) + [f"captured{i}" for i in range(len(captured))]
    for name, g, r in zip(names, grads, ref_grads):
        assert (g is None) == (r is None), name
        if r is None:
            continue
        assert torch.isfinite(g).all(), name
        if r.abs().max() == 0:
            assert g.abs().max() == 0, name
        else:
            assert rel_err(g, r) <= GRAD_TOL, f"{name} gradient error {rel_err(g, r):.2e}"
    return out, ref


def random_config(rng: random.Random):
    Hkv = rng.choice([1, 2])
    G = rng.choice([1, 2, 4, 8])
    bs = rng.choice([16, 32, 64])
    Skv = rng.choice([48, 100, 130, 257])
    causal = rng.random() < 0.75
    Sq = rng.choice([Skv, Skv, 1, max(1, Skv // 3)]) if causal else rng.choice([Skv, 37])
    return dict(
        B=rng.choice([1, 2]),
        Hq=G * Hkv,
        Hkv=Hkv,
        Sq=Sq,
        Skv=Skv,
        D=rng.choice([16, 64]),
        kw=dict(
            block_size=bs,
            causal=causal,
            alpha=rng.choice([1.25, 1.5, 2.0]),
            sigma=rng.choice([1.0, 0.5, math.inf]),
            share_kv_groups=rng.random() < 0.7,
            selection_scale=rng.choice([1.0, 3.0]),
        ),
        pool=rng.random() < 0.7,
    )


@pytest.mark.parametrize("seed", range(12))
def test_random_configs_match_reference(seed):
    cfg = random_config(random.Random(seed))
    q, k, v, u = make_inputs(seed, cfg["B"], cfg["Hq"], cfg["Hkv"], cfg["Sq"], cfg["Skv"], cfg["D"], cfg["pool"])
    check_against_reference(q, k, v, u, **cfg["kw"])


@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("G", [1, 2, 4, 8])
def test_gqa_ratios_and_head_dims(D, G):
    q, k, v, u = make_inputs(100 + G, 1, G, 1, 150, 150, D)
    check_against_reference(q, k, v, u, block_size=32)


@pytest.mark.parametrize("Sq,Skv", [(1, 200), (1, 64), (70, 200), (200, 200), (129, 129)])
def test_decode_and_chunked_prefill(Sq, Skv):
    q, k, v, u = make_inputs(7, 2, 4, 2, Sq, Skv, 32)
    check_against_reference(q, k, v, u, block_size=16)


def test_composed_score_and_mask_mods_with_learnable_bias():
    Sq = Skv = 160
    q, k, v, u = make_inputs(3, 2, 4, 2, Sq, Skv, 32)
    table = (0.1 * torch.randn(4, 64)).requires_grad_()
    score_mod = mods.compose_score_mods(
        mods.generate_tanh_softcap(8.0), mods.generate_relative_bias(table), mods.generate_alibi_bias(4)
    )
    mask_mod = mods.generate_sliding_window(100)
    out, _ = check_against_reference(
        q, k, v, u, captured=[table], block_size=16, score_mod=score_mod, mask_mod=mask_mod
    )


def test_document_mask_blocks_no_information_across_documents():
    S, bs = 192, 16
    doc = torch.tensor([0] * 70 + [1] * 90 + [2] * 32)
    q, k, v, u = make_inputs(4, 1, 4, 2, S, S, 32)
    mask_mod = mods.generate_document_mask(doc)
    out, _ = check_against_reference(q, k, v, u, block_size=bs, mask_mod=mask_mod)
    # Perturb documents 0 and 2: document 1's outputs must not move at all.
    k2, v2 = k.clone(), v.clone()
    other = doc != 1
    k2[:, :, other] += 3 * torch.randn_like(k2[:, :, other])
    v2[:, :, other] += 3 * torch.randn_like(v2[:, :, other])
    with torch.no_grad():
        out1 = dash_attention(q, k, v, pool_query=u, block_size=bs, mask_mod=mask_mod)
        out2 = dash_attention(q, k2, v2, pool_query=u, block_size=bs, mask_mod=mask_mod)
    assert torch.equal(out1[:, :, doc == 1], out2[:, :, doc == 1])
    assert not torch.equal(out1[:, :, doc == 0], out2[:, :, doc == 0])


def test_sliding_window_never_selects_outside_blocks():
    S, bs, window = 256, 16, 80
    q, k, v, u = make_inputs(5, 1, 2, 1, S, S, 16)
    sel = dash_select(q, k, block_size=bs, pool_query=u, mask_mod=mods.generate_sliding_window(window))
    t = torch.arange(S)[:, None]
    c = torch.arange(S // bs)[None, :]
    outside = (c + 1) * bs - 1 <= t - window  # every key of the block is out of the window
    assert sel.active_blocks.any()
    assert not sel.active_blocks[..., outside].any()


def test_padding_rows_without_keys_are_zero_with_zero_gradient():
    S = 96
    q, k, v, u = make_inputs(6, 2, 2, 1, S, S, 16)
    lengths = torch.tensor([S, 0])  # the second sequence has no real key at all
    q.requires_grad_()
    out = dash_attention(
        q, k, v, pool_query=u, block_size=16, causal=False, mask_mod=mods.generate_padding_mask(lengths)
    )
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.equal(q.grad[1], torch.zeros_like(q.grad[1]))
    with torch.no_grad():  # the FlexAttention path agrees on the empty rows
        out_flex = dash_attention(
            q, k, v, pool_query=u, block_size=16, causal=False, mask_mod=mods.generate_padding_mask(lengths)
        )
    assert torch.equal(out_flex[1], torch.zeros_like(out_flex[1]))


@pytest.mark.parametrize("kw", [dict(), dict(share_kv_groups=False, sigma=0.7), dict(causal=False, alpha=2.0)])
def test_user_flex_call_with_selection_equals_dash_attention(kw):
    q, k, v, u = make_inputs(8, 2, 4, 2, 140, 140, 32)
    with torch.no_grad():
        out, sel = dash_attention(q, k, v, pool_query=u, block_size=32, return_selection=True, **kw)
        user = flex_attention(q, k, v, score_mod=sel.score_mod, block_mask=sel.block_mask, enable_gqa=True)
    torch.testing.assert_close(user, out, atol=0, rtol=0)
    # The dense autograd path computes the same function as FlexAttention.
    dense = dense_flex_attention(
        q, k, v, score_mod=sel.score_mod, mask_mod=sel.block_mask.mask_mod, scale=1 / math.sqrt(32)
    )
    torch.testing.assert_close(dense, out, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype):
    q, k, v, u = make_inputs(9, 1, 4, 2, 128, 128, 32, dtype=dtype)
    with torch.no_grad():
        out = dash_attention(q, k, v, pool_query=u, block_size=16)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = dash_attention_reference(q, k, v, pool_query=u, block_size=16)
    assert rel_err(out, ref) < 2e-2


def test_forward_is_deterministic():
    q, k, v, u = make_inputs(10, 1, 4, 2, 200, 200, 32)
    with torch.no_grad():
        a = dash_attention(q, k, v, pool_query=u, block_size=16)
        b = dash_attention(q, k, v, pool_query=u, block_size=16)
    assert torch.equal(a, b)


def test_sparsity_report_matches_a_brute_force_count():
    S, bs = 512, 32
    q, k, v, u = make_inputs(11, 1, 4, 2, S, S, 32)
    with torch.no_grad():
        _, sel = dash_attention(q, k, v, pool_query=u, block_size=bs, return_selection=True)
    _, ref_sel = dash_attention_reference(q, k, v, pool_query=u, block_size=bs, return_selection=True)
    report = sel.sparsity()
    allowed = ref_sel.visible & ref_sel.active[..., torch.arange(S) // bs]
    expected_token = 1 - allowed.sum().item() / ref_sel.visible.sum().item()
    assert abs(report.token_sparsity - expected_token) < 1e-9
    assert torch.equal(sel.active_blocks.repeat_interleave(2, dim=1), ref_sel.active)
    tiles = sel.block_mask.kv_num_blocks.sum().item()
    dense_tiles = 4 * (1 + 2 + 3 + 4)  # 4 heads × the causal 128-tiles of a 512×512 grid
    assert abs(report.tile_sparsity - (1 - tiles / dense_tiles)) < 1e-9
    assert 0 < report.token_sparsity < 1 and 0 <= report.tile_sparsity < 1


@pytest.mark.parametrize("with_mask", [False, True], ids=["causal", "head-mask"])
def test_sparsity_report_counts_in_small_chunks_alike(monkeypatch, with_mask):
    """At 128K the report counts in 64-row chunks (a 1024-row chunk's flags did not fit an H100):
    chunks of 3 rows (a ragged last chunk) give the same counts as one chunk of all 300 rows, with
    visibility shared by every head or (a user mask that depends on the batch and head) not."""
    import dash_flex.selection as selection

    def mask_mod(b, h, q_idx, kv_idx):  # a per-(batch, head) band: visibility is [B, H, rows, keys]
        return (q_idx - kv_idx) < 40 + 30 * h + 50 * b

    q, k, v, u = make_inputs(12, 2, 4, 2, 300, 300, 32)
    with torch.no_grad():
        kw = dict(mask_mod=mask_mod) if with_mask else {}
        _, sel = dash_attention(q, k, v, pool_query=u, block_size=16, return_selection=True, **kw)
    whole = sel.sparsity()
    monkeypatch.setattr(selection, "_PAIR_FLAGS_PER_CHUNK", 3 * 2 * 4 * 300)
    chunked = sel.sparsity()
    assert chunked == whole and 0 < whole.token_sparsity < 1
    _, ref_sel = dash_attention_reference(q, k, v, pool_query=u, block_size=16, return_selection=True, **kw)
    allowed = ref_sel.visible & ref_sel.active[..., torch.arange(300) // 16]
    expected = 1 - allowed.sum().item() / ref_sel.visible.expand_as(allowed).sum().item()
    assert abs(whole.token_sparsity - expected) < 1e-9


# ----------------------------------------------------------------------------- input validation
class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


BAD_CALLS = [
    ("alpha", dict(alpha=1.0), ValueError),
    ("alpha", dict(alpha=2.5), ValueError),
    ("block_size", dict(block_size=24), ValueError),
    ("block_size", dict(block_size=0), ValueError),
    ("sigma", dict(sigma=0.0), ValueError),
    ("sigma", dict(sigma=-1.0), ValueError),
    ("scale", dict(scale=-1.0), ValueError),
    ("pool_query", dict(pool_query=torch.zeros(3, 16)), ValueError),
    ("score_mod", dict(score_mod=3), TypeError),
]


@pytest.mark.parametrize("name,kw,exc", BAD_CALLS)
def test_bad_arguments_raise_before_any_kernel(name, kw, exc):
    q, k, v, _ = make_inputs(0, 1, 4, 2, 64, 64, 16)
    with _RecordOps() as rec, pytest.raises(exc, match=name):
        dash_attention(q, k, v, **kw)
    assert rec.ops == []


@pytest.mark.parametrize(
    "shapes,exc,match",
    [
        (((1, 3, 64, 16), (1, 2, 64, 16), (1, 2, 64, 16)), ValueError, "multiple of key heads"),
        (((1, 4, 80, 16), (1, 2, 64, 16), (1, 2, 64, 16)), ValueError, "causal"),
        (((1, 4, 64, 16), (1, 2, 64, 8), (1, 2, 64, 8)), ValueError, "head dim"),
        (((1, 4, 64, 16), (1, 2, 64, 16), (1, 2, 60, 16)), ValueError, "value shape"),
        (((4, 64, 16), (1, 2, 64, 16), (1, 2, 64, 16)), ValueError, "query must be 4-D"),
    ],
)
def test_bad_shapes_raise(shapes, exc, match):
    q, k, v = (torch.randn(*s) for s in shapes)
    with _RecordOps() as rec, pytest.raises(exc, match=match):
        dash_attention(q, k, v)
    assert rec.ops == []


def test_bad_dtypes_and_devices_raise():
    q, k, v, _ = make_inputs(0, 1, 2, 2, 32, 32, 16)
    with pytest.raises(TypeError, match="key has dtype"):
        dash_attention(q, k.double(), v)
    with pytest.raises(TypeError, match="query must be float"):
        dash_attention(q.to(torch.int32), k, v)
    with pytest.raises(ValueError, match="key is on meta"):
        dash_attention(q, k.to("meta"), v)
