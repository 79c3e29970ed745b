"""The hand-pipelined Gluon fine forward (``custom_ops/sparse_attention/gluon_forward.py``, sm_90
only: Gluon has no interpreter, so these run on the device) against the rows definition and the
shipped Triton kernel, on random p̄ rows drawn fresh."""

from __future__ import annotations

import math

import pytest
import torch

from custom_ops.sparse_attention.list_kernels import tile_lists_and_bias_from_rows_launch
from custom_ops.sparse_attention.ops import forward_tiling
from custom_ops.sparse_attention.torch_impl import sparse_attention_rows_torch

# (B, Hq, H_kv, Sq, Skv, causal, density): the rows op's tiling (ops.forward_tiling): 32 rows × 4
# heads where 4 heads share a KV head and selection, else 128 rows of one head
CASES = [
    (1, 8, 2, 1024, 1024, True, 0.3),
    (2, 4, 1, 640, 1024, True, 0.5),  # Sq < Skv: the causal offset; a partial last query tile
    (1, 8, 2, 512, 768, False, 0.02),  # rows that keep no block: zeros, −inf LSE
    (1, 2, 2, 704, 1024, True, 0.3),  # one head per KV head: 128-row tiles, a partial last one
]


def rows_inputs(case, dtype, seed):
    """Random q, k, v and random p̄ rows of density ``density`` (zeros from each row's own block on
    when causal, as the coarse stage leaves them; the list builder forces the own block) with random
    mean log p̄."""
    B, Hq, Hkv, Sq, Skv, causal, density = case
    g = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(B, h, s, 128, device="cuda", generator=g).to(dtype)
               for h, s in ((Hq, Sq), (Hkv, Skv), (Hkv, Skv)))  # fmt: skip
    nb = Skv // 64
    probs = torch.rand(B, Hkv, Sq, nb, device="cuda", generator=g)
    probs = torch.where(torch.rand(probs.shape, device="cuda", generator=g) < density, probs, 0.0)
    if causal:
        own = (torch.arange(Sq, device="cuda") + Skv - Sq) // 64
        probs = probs.masked_fill(torch.arange(nb, device="cuda")[None, :] >= own[:, None], 0.0)
    return q, k, v, probs, torch.randn(B, Hkv, Sq, device="cuda", generator=g)


def require_sm90():
    """Gluon's kernels here are Hopper's (TMA, wgmma): other GPUs skip."""
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("needs an sm_90 GPU")


def rel_err(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


@pytest.mark.parametrize(
    "variant,keys,dtype",
    [(var, keys, torch.bfloat16)
     for var in ("pv-in-step", "pv-overlapped", "warp-specialised", "ws-pingpong", "ws-pairs")
     for keys in ("whole", "chunk-view")]
    + [(var, "whole", torch.float16) for var in ("pv-in-step", "warp-specialised", "ws-pairs")],
)  # fmt: skip
@pytest.mark.parametrize("case", CASES, ids=["gqa", "offset", "noncausal-empty-rows", "mha-128-rows"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gluon_forward_matches_the_definition_and_the_triton_kernel(case, variant, keys, dtype):
    """Output and LSE against the rows definition (fp32) and the shipped Triton kernel, K and V
    whole or as a query chunk's view of longer ones (``key[:, :, :kv_end]``, rows a head apart)."""
    require_sm90()
    from custom_ops.sparse_attention import gluon_forward
    from custom_ops.sparse_attention.triton_kernels import sparse_attention_rows_launch

    causal = case[5]
    q, k, v, probs, mean_log = rows_inputs(case, dtype, seed=7)
    if keys == "chunk-view":  # the same keys inside longer storage, as a chunked call passes them
        k, v = (torch.cat([t, torch.randn_like(t[:, :, :192])], dim=2)[:, :, : t.shape[2]] for t in (k, v))
        assert not k.is_contiguous()
    scale = 1 / math.sqrt(128)
    rows, pack = forward_tiling(q.shape[1], k.shape[1], k.shape[1], k.shape[1])
    lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, causal, k.shape[2], 64, rows)
    assert gluon_forward.supports(q, k, v, *lists, causal, scale, 64, rows, pack)
    if variant == "ws-pairs":  # odd and even list lengths: a pair past the list's end adds nothing
        assert (lists[1] % 2 == 1).any() and (lists[1] % 2 == 0).any()
        out, lse = gluon_forward.sparse_attention_rows_gluon_ws_pairs(q, k, v, *lists, causal, scale, 64, rows, pack)
    elif variant in ("warp-specialised", "ws-pingpong"):
        out, lse = gluon_forward.sparse_attention_rows_gluon_ws(q, k, v, *lists, causal, scale, 64, rows, pack,
                                                                pingpong=variant == "ws-pingpong")  # fmt: skip
    else:
        out, lse = gluon_forward.sparse_attention_rows_gluon(q, k, v, *lists, causal, scale, 64, rows, pack,
                                                             overlap_pv=variant == "pv-overlapped")  # fmt: skip
    want, want_lse = sparse_attention_rows_torch(q.float(), k.float(), v.float(), probs, mean_log, causal, scale, 64,
                                                 1.0)  # fmt: skip
    assert torch.isfinite(out).all()
    assert rel_err(out, want) < 1e-2
    torch.testing.assert_close(lse, want_lse, atol=2e-3, rtol=1e-4)
    triton_out, triton_lse = sparse_attention_rows_launch(q, k, v, *lists, causal, scale, 64, rows, pack=pack)
    assert rel_err(out, triton_out) < 5e-3
    torch.testing.assert_close(lse, triton_lse, atol=1e-4, rtol=1e-5)
    if not causal:  # the sparse case has rows with no key: zeros and −inf, as the definition says
        empty = torch.isinf(want_lse)
        assert empty.any()
        assert torch.equal(torch.isinf(lse), empty) and (out.float()[empty] == 0).all()


GLUON_LAUNCHES = {
    "gluon": {},
    "gluon_ws": {},
    "gluon_ws_pingpong": {"pingpong": True},
    "gluon_ws_pairs": {"pairs": True, "stages": 6},
    "gluon_ws_pairs_stages3": {"pairs": True, "stages": 3},
}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kernel", list(GLUON_LAUNCHES))
def test_gluon_forward_on_lists_of_zero_to_three_entries(kernel):
    """Tile ``t``'s list holds ``t % 4`` blocks (non-causal p̄ built so): empty lists (zeros, −inf
    LSE), one entry (the pair walk's first pair past the end), two, three (an odd last pair)."""
    require_sm90()
    from custom_ops.sparse_attention import gluon_forward

    B, Hq, Hkv, Sq, Skv = 1, 8, 2, 512, 1024
    g = torch.Generator(device="cuda").manual_seed(13)
    q, k, v = (torch.randn(B, h, s, 128, device="cuda", generator=g).to(torch.bfloat16)
               for h, s in ((Hq, Sq), (Hkv, Skv), (Hkv, Skv)))  # fmt: skip
    nb = Skv // 64
    keep = (torch.arange(Sq, device="cuda") // 32 % 4)[:, None]  # blocks a row of tile t keeps: t % 4
    blocks = torch.randperm(nb, device="cuda", generator=g)  # which ones: spread over the keys
    chosen = torch.zeros(Sq, nb, device="cuda", dtype=torch.bool)
    chosen[:, blocks] = torch.arange(nb, device="cuda")[None, :] < keep
    probs = (torch.rand(B, Hkv, Sq, nb, device="cuda", generator=g) + 0.1) * chosen
    mean_log = torch.randn(B, Hkv, Sq, device="cuda", generator=g)
    lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, False, Skv, 64, 32)
    assert set(lists[1].unique().tolist()) == {0, 1, 2, 3}
    scale = 1 / math.sqrt(128)
    if kernel == "gluon":
        out, lse = gluon_forward.sparse_attention_rows_gluon(q, k, v, *lists, False, scale, 64, 32, 4)
    else:
        out, lse = gluon_forward.sparse_attention_rows_gluon_ws(q, k, v, *lists, False, scale, 64, 32, 4,
                                                                **GLUON_LAUNCHES[kernel])  # fmt: skip
    want, want_lse = sparse_attention_rows_torch(q.float(), k.float(), v.float(), probs, mean_log, False, scale, 64,
                                                 1.0)  # fmt: skip
    empty = torch.isinf(want_lse)
    assert empty.any() and not empty.all()
    assert torch.equal(torch.isinf(lse), empty) and (out.float()[empty] == 0).all()
    assert rel_err(out, want) < 1e-2
    torch.testing.assert_close(lse[~empty], want_lse[~empty], atol=2e-3, rtol=1e-4)


def test_the_pair_walk_refuses_a_ring_it_would_hang_on():
    """Two slots: the pair walk waits for the next pair's K, which the in-order loader issues only
    after a V slot that step still holds (a deadlock for lists of 4 entries or more)."""
    from custom_ops.sparse_attention import gluon_forward

    with pytest.raises(ValueError, match="at least 3 slots"):
        gluon_forward.sparse_attention_rows_gluon_ws(*[None] * 11, pairs=True, stages=2)
    with pytest.raises(ValueError, match="at least 2 slots"):
        gluon_forward.sparse_attention_rows_gluon_ws(*[None] * 11, stages=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gluon_forward_is_deterministic_and_writes_into_out():
    require_sm90()
    from custom_ops.sparse_attention import gluon_forward

    q, k, v, probs, mean_log = rows_inputs(CASES[0], torch.bfloat16, seed=3)
    lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, True, k.shape[2], 64, 32)
    first, first_lse = gluon_forward.sparse_attention_rows_gluon(q, k, v, *lists, True, 0.1, 64, 32, 4)
    out = torch.full_like(first, float("nan"))
    again, again_lse = gluon_forward.sparse_attention_rows_gluon(q, k, v, *lists, True, 0.1, 64, 32, 4, out=out)
    assert again.data_ptr() == out.data_ptr()
    assert torch.equal(first, again) and torch.equal(first_lse, again_lse)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gluon_forward_supports_only_its_launch():
    require_sm90()
    from custom_ops.sparse_attention import gluon_forward

    q, k, v, probs, mean_log = rows_inputs(CASES[0], torch.bfloat16, seed=1)
    lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, True, k.shape[2], 64, 32)
    assert gluon_forward.supports(q, k, v, *lists, True, 0.1, 64, 32, 4)
    assert not gluon_forward.supports(q.float(), k.float(), v.float(), *lists, True, 0.1, 64, 32, 4)
    assert not gluon_forward.supports(q, k, v, *lists, True, -0.1, 64, 32, 4)  # the folded max needs scale > 0
    assert not gluon_forward.supports(q, k, v, *lists, True, 0.1, 64, 16, 4)  # 64 rows: not two warpgroups
    k_t = k.transpose(2, 3).contiguous().transpose(2, 3)
    assert not gluon_forward.supports(q, k_t, v, *lists, True, 0.1, 64, 32, 4)  # tokens not rows
    assert not gluon_forward.supports(q[..., :64], k[..., :64], v[..., :64], *lists, True, 0.1, 64, 32, 4)
    assert not gluon_forward.supports(q, k[:, :, :1000], v[:, :, :1000], *lists, True, 0.1, 64, 32, 4)
    block_list, count, bias = lists
    assert not gluon_forward.supports(q, k, v, block_list, count, bias[..., :16], True, 0.1, 64, 32, 4)
    assert not gluon_forward.supports(q, k, v, block_list[..., ::2], count, bias, True, 0.1, 64, 32, 4)


def test_rows_view_reads_each_head_from_its_row():
    """K / V as rows of their storage for TMA: whole tensors and a chunk's ``key[:, :, :kv_end]`` give
    the same token at row ``(b·H + h)·head_rows + t``; layouts TMA cannot walk give None. (CPU.)"""
    from custom_ops.sparse_attention.gluon_forward import _rows_view

    k = torch.randn(2, 3, 256, 128)
    for t in (k, k[:, :, :192], k[:1, 1:2, :64]):
        rows, head_rows = _rows_view(t)
        B, H, S, _ = t.shape
        for b, h, s in ((0, 0, 0), (B - 1, H - 1, S - 1), (B - 1, 0, S // 2)):
            assert torch.equal(rows[(b * H + h) * head_rows + s], t[b, h, s])
        assert rows.shape[0] == (B * H - 1) * head_rows + S
    assert _rows_view(k.transpose(1, 2).contiguous().transpose(1, 2)) is None  # heads interleaved per token
    assert _rows_view(k[..., :64]) is None  # rows of 64 inside rows of 128
    assert _rows_view(k[:, ::2]) is None  # batch and heads do not merge
    assert _rows_view(k[:1, ::2])[1] == 512  # one batch: every other head, two heads of rows apart
    assert _rows_view(k[:, :, ::2]) is None  # every other token


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kernel", ["gluon", "gluon_ws", "gluon_ws_pingpong", "gluon_ws_pairs"])
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "query-chunks"])
def test_dash_attention_fused_inference_through_the_gluon_kernel(kernel, chunked, monkeypatch):
    """dash_attention's fused inference with ``ops.FINE_KERNEL`` set to a Gluon kernel (whole, and in
    query chunks whose keys are views of the call's) against the Triton kernel and the float64
    reference; the Gluon launch is checked to have run."""
    require_sm90()
    import dash_flex.attention as attention
    from custom_ops.sparse_attention import gluon_forward, ops
    from dash_flex import dash_attention
    from dash_flex.reference import dash_attention_reference

    g = torch.Generator(device="cuda").manual_seed(11)
    q = torch.randn(1, 8, 2048, 128, device="cuda", generator=g).to(torch.bfloat16)
    k, v = (torch.randn(1, 2, 2048, 128, device="cuda", generator=g).to(torch.bfloat16) for _ in range(2))
    if chunked:  # a budget of ~600 whole rows: chunks of 512+ rows, keys up to each chunk's last row
        monkeypatch.setattr(attention, "INFERENCE_CHUNK_BYTES", 600 * 2 * 32 * attention.ROWS_BYTES_PER_ENTRY)
    with torch.no_grad():
        want = dash_attention(q, k, v, fine_stage="fused")
        calls = []
        launch = getattr(gluon_forward, "sparse_attention_rows_" + kernel)
        monkeypatch.setattr(ops, "FINE_KERNEL", kernel)
        monkeypatch.setattr(gluon_forward, launch.__name__, lambda *a, **kw: calls.append(1) or launch(*a, **kw))
        got = dash_attention(q, k, v, fine_stage="fused")
    assert len(calls) > 1 if chunked else len(calls) == 1
    ref = dash_attention_reference(q.double(), k.double(), v.double())
    assert rel_err(got, want) < 5e-3
    assert rel_err(got, ref) < 1e-2 and rel_err(want, ref) < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_an_unknown_fine_kernel_name_raises(monkeypatch):
    from custom_ops.sparse_attention import ops, sparse_attention_rows

    q, k, v, probs, mean_log = rows_inputs(CASES[0], torch.bfloat16, seed=5)
    monkeypatch.setattr(ops, "FINE_KERNEL", "gluon-ws")
    with pytest.raises(ValueError, match="FINE_KERNEL"):
        sparse_attention_rows(q, k, v, probs, mean_log, True, 0.1, 64, 1.0)
