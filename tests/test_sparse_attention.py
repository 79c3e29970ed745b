"""``dash_flex::sparse_attention_forward``, the fused fine stage over a selection (forward).

* Its torch definition, fed a real selection (``sel.log_prior`` / ``sel.active_blocks``), equals
  ``dash_attention`` (FlexAttention) and the float64 reference: GQA shared and per head, finite
  and infinite sigma, causal and not, chunked prefill, lengths that are not a block multiple.
* The Triton kernel (the CPU interpreter here) equals the torch definition, output and LSE,
  in float32 and float16 (the interpreter's bf16 ``tl.dot`` is broken on CPU; bf16 is for the
  GPU run, ``-m gpu``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo

from custom_ops.sparse_attention import sparse_attention_forward, tile_block_lists
from custom_ops.sparse_attention.ops import backward_tiling, block_tile_lists, forward_tiling
from custom_ops.sparse_attention.torch_impl import sparse_attention_backward_torch, sparse_attention_forward_torch
from custom_ops.sparse_attention.triton_backward import sparse_attention_backward_launch
from custom_ops.sparse_attention.triton_kernels import sparse_attention_launch
from dash_flex import dash_attention, dash_select
from dash_flex.reference import dash_attention_reference


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


CASES = [
    # (B, Hq, Hkv, Sq, Skv, D, bs, kwargs)
    (1, 4, 2, 200, 200, 32, 16, dict(sigma=1.0)),
    (2, 4, 1, 130, 130, 16, 16, dict(sigma=math.inf, share_kv_groups=False, alpha=2.0)),
    (1, 2, 2, 70, 300, 32, 32, dict(sigma=0.5, selection_scale=1.5)),  # chunked prefill
    (1, 4, 2, 96, 100, 16, 16, dict(causal=False, alpha=1.25, sigma=1.0)),  # partial last block
]


def problem(case, dtype=torch.float32):
    B, Hq, Hkv, Sq, Skv, D, bs, kw = case
    g = torch.Generator().manual_seed(Sq + Skv)
    q = (2 * torch.randn(B, Hq, Sq, D, generator=g)).to(dtype)
    k = (2 * torch.randn(B, Hkv, Skv, D, generator=g)).to(dtype)
    v = torch.randn(B, Hkv, Skv, D, generator=g).to(dtype)
    u = torch.randn(Hkv, D, generator=g)
    kw = dict(kw, block_size=bs)
    sel = dash_select(q.float(), k.float(), pool_query=u, **kw)
    inputs = (sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3))
    return q, k, v, u, kw, inputs, math.isfinite(kw["sigma"])


@pytest.mark.parametrize("case", CASES, ids=["gqa", "per-head-inf", "chunked", "noncausal"])
def test_definition_equals_dash_attention_and_reference(case):
    q, k, v, u, kw, (prior, active), has_prior = problem(case)
    causal = kw.get("causal", True)
    out, _, lse = sparse_attention_forward(
        q, k, v, prior, active, causal, 1 / math.sqrt(q.shape[-1]), kw["block_size"], has_prior
    )
    with torch.no_grad():
        flex = dash_attention(q, k, v, pool_query=u, **kw)
    ref = dash_attention_reference(q.double(), k.double(), v.double(), pool_query=u.double(), **kw)
    assert rel_err(out, flex) < 1e-5
    assert rel_err(out, ref) < 1e-4
    assert torch.isfinite(lse).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=["gqa", "per-head-inf", "chunked", "noncausal"])
@pytest.mark.parametrize("block_m,packed", [(16, False), (64, False), (32, True)])
def test_triton_kernel_matches_definition(case, dtype, block_m, packed):
    """``packed``: the G query heads of a group share a program when they share the selection
    (``forward_tiling``; the gqa and chunked cases pack 2 heads, the others cannot)."""
    q, k, v, _, kw, (prior, active), has_prior = problem(case, dtype)
    causal, bs, scale = kw.get("causal", True), kw["block_size"], 1 / math.sqrt(q.shape[-1])
    expected, _, expected_lse = sparse_attention_forward_torch(q, k, v, prior, active, causal, scale, bs, has_prior)
    pack = forward_tiling(q.shape[1], k.shape[1], prior.shape[1], active.shape[1])[1] if packed else 1
    block_list, count = tile_block_lists(active, block_m)
    out, _, lse = sparse_attention_launch(
        q, k, v, prior, active, block_list, count, causal, scale, bs, has_prior, block_m, pack=pack
    )
    assert rel_err(out, expected) < (1e-5 if dtype == torch.float32 else 5e-3)
    torch.testing.assert_close(lse, expected_lse, atol=1e-3 if dtype == torch.float16 else 1e-5, rtol=1e-5)


def test_rows_with_no_key_give_zeros_and_minus_inf_lse():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 32, 16, generator=g) for _ in range(3))
    active = torch.zeros(1, 2, 2, 32, dtype=torch.bool)
    active[:, :, 0, 16:] = True  # rows 0..15 keep nothing
    prior = torch.randn(1, 2, 2, 32, generator=g)
    block_list, count = tile_block_lists(active, 16)
    out, _, lse = sparse_attention_launch(q, k, v, prior, active, block_list, count, False, 0.25, 16, True, 16)
    assert (out[:, :, :16] == 0).all() and torch.isinf(lse[:, :, :16]).all()
    expected, _, _ = sparse_attention_forward_torch(q, k, v, prior, active, False, 0.25, 16, True)
    assert rel_err(out, expected) < 1e-5


def test_tile_block_lists_union_per_tile():
    active = torch.zeros(1, 1, 4, 6, dtype=torch.bool)
    active[0, 0, 1, 0] = active[0, 0, 3, 2] = active[0, 0, 2, 5] = True
    block_list, count = tile_block_lists(active, 4)  # tiles: rows 0-3, rows 4-5
    assert count.tolist() == [[[2, 1]]]
    assert block_list[0, 0, 0, :2].tolist() == [1, 3] and block_list[0, 0, 1, 0].item() == 2


def test_in_slice_offsets_past_int32_raise():
    """The fine kernels' in-slice offsets are int32: a block-major prior over 512K queries and 8192
    blocks, or a head-strided query of 64 heads over 512K rows, is refused with a clear error
    (meta tensors: no memory); the 128K shapes pass."""
    from custom_ops.sparse_attention.ops import check_in_slice_offsets

    def strided(size, stride):
        return torch.empty_strided(size, stride, device="meta")

    check_in_slice_offsets(
        prior=strided((1, 8, 2048, 131072), (8 * 2048 * 131072, 2048 * 131072, 131072, 1)),
        query=strided((1, 32, 131072, 128), (131072 * 32 * 128, 128, 32 * 128, 1)),
    )
    with pytest.raises(ValueError, match="prior .* int32"):
        check_in_slice_offsets(prior=strided((1, 8, 8192, 524288), (8 * 2**32, 2**32, 524288, 1)))
    with pytest.raises(ValueError, match="query .* int32"):
        check_in_slice_offsets(query=strided((1, 64, 524288, 128), (2**32, 128, 64 * 128, 1)))


LIST_CASES = [  # (B, H, nb, Sq, padding of nb and Sq in the underlying tensor, block_m, density)
    (1, 2, 5, 40, (3, 88), 16, 0.3),  # a view of a padded block-major tensor, Sq not a tile multiple
    (2, 3, 300, 130, (0, 0), 16, 0.05),  # more blocks than one step of 128
    (1, 1, 7, 64, (1, 64), 32, 0.5),
    (1, 2, 3, 600, (0, 40), 4, 0.1),  # more tiles than one step of 128
    (1, 1, 1, 1, (0, 0), 16, 1.0),
    (1, 1, 0, 16, (0, 0), 16, 1.0),  # no blocks
]


@pytest.mark.parametrize("case", LIST_CASES)
def test_list_kernels_equal_the_torch_lists(case):
    """The Triton list builders give the torch definitions' lists and counts exactly (slots past
    the count zero), on views of padded flags."""
    from custom_ops.sparse_attention.list_kernels import block_tile_lists_launch, tile_block_lists_launch

    B, H, nb, Sq, (pad_nb, pad_sq), block_m, density = case
    g = torch.Generator().manual_seed(nb + Sq)
    active = (torch.rand(B, H, nb + pad_nb, Sq + pad_sq, generator=g) < density)[:, :, :nb, :Sq]
    for reference, kernel in ((tile_block_lists, tile_block_lists_launch), (block_tile_lists, block_tile_lists_launch)):
        (want_list, want_count), (got_list, got_count) = reference(active, block_m), kernel(active, block_m)
        assert torch.equal(got_count, want_count), reference.__name__
        assert torch.equal(got_list, want_list), reference.__name__


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_list_kernels_equal_the_torch_lists():
    """On the GPU, at the benchmark's shape (32K rows, 512 blocks, 8 heads, a view of padded
    flags; sparse enough that lists are far from full) and the fine kernels' tile heights."""
    from custom_ops.sparse_attention.list_kernels import block_tile_lists_launch, tile_block_lists_launch

    g = torch.Generator(device="cuda").manual_seed(0)
    active = (torch.rand(1, 8, 520, 32768 + 128, generator=g, device="cuda") < 0.002)[:, :, :512, :32700]
    for block_m in (16, 32, 64, 128):
        for reference, kernel in (
            (tile_block_lists, tile_block_lists_launch),
            (block_tile_lists, block_tile_lists_launch),
        ):
            want, got = reference(active, block_m), kernel(active, block_m)
            assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0]), (block_m, reference.__name__)


def test_opcheck_cpu():
    q, k, v, _, kw, (prior, active), has_prior = problem(CASES[0])
    for residual in (True, False):
        torch.library.opcheck(
            torch.ops.dash_flex.sparse_attention_forward.default,
            (q, k, v, prior, active, True, 0.2, 16, has_prior, residual),
        )


@pytest.mark.parametrize("device", ["cpu", "interpreter"])
def test_forward_without_residual(device):
    """``store_residual=False`` (what dash_attention passes when no gradient is wanted): the same
    output and LSE, an empty residual, and a backward through it raises instead of guessing."""
    q, k, v, _, kw, (prior, active), has_prior = problem(CASES[0])
    args = (q, k, v, prior, active, True, 0.2, kw["block_size"], has_prior)
    if device == "cpu":
        want = sparse_attention_forward(*args)
        got = sparse_attention_forward(*args, False)
    else:
        block_list, count = tile_block_lists(active, 16)
        launch = (q, k, v, prior, active, block_list, count, *args[5:], 16)
        want, got = sparse_attention_launch(*launch), sparse_attention_launch(*launch, store_residual=False)
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    assert got[1].numel() == 0 and want[1].shape == want[0].shape
    if device == "cpu":
        q_ = q.clone().requires_grad_()
        out = sparse_attention_forward(q_, *args[1:], False)[0]
        with pytest.raises(RuntimeError, match="store_residual=False"):
            out.sum().backward()


def test_fused_path_stores_the_residual_only_when_a_gradient_is_wanted(monkeypatch):
    """dash_attention's fused path asks the block-major op for the output's residual exactly when
    autograd may need it: yes when only pool_query requires grad (through the prior), whose
    backward then runs; not under no_grad without GQA sharing. With sharing and no gradient
    wanted (no_grad, or frozen inputs) it runs the rows ops instead, which keep no residual."""
    import dash_flex.attention as attention_module

    calls = []
    real_op, real_rows = attention_module.sparse_attention_forward, attention_module.sparse_attention_rows

    def spy(*args):
        calls.append(("block-major", args[-1]))
        return real_op(*args)

    def rows_spy(*args):
        calls.append(("rows", None))
        return real_rows(*args)

    monkeypatch.setattr(attention_module, "sparse_attention_forward", spy)
    monkeypatch.setattr(attention_module, "sparse_attention_rows", rows_spy)
    q, k, v, u, kw, _, _ = problem(CASES[0])
    with torch.no_grad():
        dash_attention(q, k, v, pool_query=u, fine_stage="fused", **kw)
        dash_attention(q, k, v, pool_query=u, fine_stage="fused", **dict(kw, share_kv_groups=False))
    dash_attention(q, k, v, pool_query=u, fine_stage="fused", **kw)
    u_grad = u.clone().requires_grad_()
    dash_attention(q, k, v, pool_query=u_grad, fine_stage="fused", **kw).square().sum().backward()
    assert calls == [("rows", None), ("block-major", False), ("rows", None), ("block-major", True)]
    assert torch.isfinite(u_grad.grad).all() and u_grad.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- from the rows
def rows_problem(case, dtype=torch.float32):
    """The selection as rows (p̄ of dash_select and its rows' mean log p̄) beside the block-major
    prior and flags dash_select built from the same p̄."""
    from custom_ops.coarse_selection.torch_impl import mean_log_support

    q, k, v, u, kw, (prior, active), has_prior = problem(case, dtype)
    B, Hq, Hkv, Sq, Skv, D, bs, _ = case
    with torch.no_grad():
        sel = dash_select(q.float(), k.float(), pool_query=u, **kw)
    inv_sigma = 1 / kw["sigma"] if has_prior else 0.0
    return q, k, v, kw, sel.probs, mean_log_support(sel.probs), inv_sigma, (prior, active, has_prior)


@pytest.mark.parametrize("case", CASES, ids=["gqa", "per-head-inf", "chunked", "noncausal"])
def test_rows_definition_equals_block_major_forward(case):
    """``sparse_attention_rows`` (CPU: its torch definition) on p̄ rows gives the block-major
    forward's output and LSE on the prior and flags dash_select built from the same p̄."""
    from custom_ops.sparse_attention import sparse_attention_rows

    q, k, v, kw, probs, mean_log, inv_sigma, (prior, active, has_prior) = rows_problem(case)
    causal, bs, scale = kw.get("causal", True), kw["block_size"], 1 / math.sqrt(q.shape[-1])
    out, lse = sparse_attention_rows(q, k, v, probs, mean_log, causal, scale, bs, inv_sigma)
    want, _, want_lse = sparse_attention_forward(q, k, v, prior, active, causal, scale, bs, has_prior)
    assert rel_err(out, want) < 1e-6
    torch.testing.assert_close(lse, want_lse, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=["gqa", "per-head-inf", "chunked", "noncausal"])
@pytest.mark.parametrize("block_m,packed", [(16, False), (32, True), (128, False)])
def test_rows_triton_kernel_matches_definition(case, dtype, block_m, packed):
    """The fine kernel on lists built from p̄ rows with their bias rows by slot (``FROM_ROWS``; the
    interpreter here) equals the rows definition: output and LSE."""
    from custom_ops.sparse_attention.list_kernels import tile_lists_and_bias_from_rows_launch
    from custom_ops.sparse_attention.torch_impl import sparse_attention_rows_torch
    from custom_ops.sparse_attention.triton_kernels import sparse_attention_rows_launch

    q, k, v, kw, probs, mean_log, inv_sigma, _ = rows_problem(case, dtype)
    causal, bs, scale = kw.get("causal", True), kw["block_size"], 1 / math.sqrt(q.shape[-1])
    expected, expected_lse = sparse_attention_rows_torch(q, k, v, probs, mean_log, causal, scale, bs, inv_sigma)
    H_sel = probs.shape[1]
    pack = forward_tiling(q.shape[1], k.shape[1], H_sel, H_sel)[1] if packed else 1
    lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, inv_sigma, causal, k.shape[2], bs, block_m)
    out, lse = sparse_attention_rows_launch(q, k, v, *lists, causal, scale, bs, block_m, pack=pack)
    assert rel_err(out, expected) < (1e-5 if dtype == torch.float32 else 5e-3)
    torch.testing.assert_close(lse, expected_lse, atol=1e-3 if dtype == torch.float16 else 1e-5, rtol=1e-5)


ON_CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=ON_CUDA)])
@pytest.mark.parametrize("climb", [0.3, 4.0, 30.0])
def test_kernels_follow_a_climbing_row_max(device, climb):
    """Scores that climb by ``climb`` (log2 units) from each key block to the next, so a row's
    running max moves at every block by less or by far more than a lazy rescale's threshold (2⁸,
    ``scripts/probe_fine_pipelining.py``), over 13 × 30 log2 units at the top:
    both fine kernels (the block-major flags' and the bias rows') equal their definitions, output
    and LSE, and stay finite (to 1e-4: fp32 scores of ~400 carry ~3e-5 of rounding each way). CPU:
    the interpreter (fp32)."""
    from custom_ops.sparse_attention.list_kernels import tile_lists_and_bias_from_rows_launch
    from custom_ops.sparse_attention.torch_impl import sparse_attention_rows_torch
    from custom_ops.sparse_attention.triton_kernels import sparse_attention_rows_launch

    # the selection of random inputs (many blocks a row), then queries and keys that climb
    q, k, v, kw, probs, mean_log, inv_sigma, (prior, active, has_prior) = rows_problem(CASES[0])
    D, bs = q.shape[-1], kw["block_size"]
    scale = 1 / math.sqrt(D)
    q, k = 0.25 * q, 0.25 * k
    q[..., 0] = 1.0
    k[..., 0] = climb * math.log(2) / scale * (torch.arange(k.shape[2]) // bs)
    q, k, v, prior, active, probs, mean_log = (t.to(device) for t in (q, k, v, prior, active, probs, mean_log))
    want, _, want_lse = sparse_attention_forward_torch(q, k, v, prior, active, True, scale, bs, has_prior)
    got, _, lse = sparse_attention_launch(q, k, v, prior, active, *tile_block_lists(active, 16), True, scale, bs,
                                          has_prior, 16)  # fmt: skip
    assert torch.isfinite(got).all() and rel_err(got, want) < 1e-4
    torch.testing.assert_close(lse, want_lse, atol=1e-4, rtol=1e-6)
    want, want_lse = sparse_attention_rows_torch(q, k, v, probs, mean_log, True, scale, bs, inv_sigma)
    pack = forward_tiling(q.shape[1], k.shape[1], probs.shape[1], probs.shape[1])[1]
    lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, inv_sigma, True, k.shape[2], bs, 32)
    got, lse = sparse_attention_rows_launch(q, k, v, *lists, True, scale, bs, 32, pack=pack)
    assert torch.isfinite(got).all() and rel_err(got, want) < 1e-4
    torch.testing.assert_close(lse, want_lse, atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=ON_CUDA)])
@pytest.mark.parametrize("block_m,packed", [(32, True), (128, False)])
def test_rows_kernel_writes_into_a_strided_out(device, block_m, packed):
    """``out=`` (the chunked fused path: a query chunk's rows of the call's output, a strided view)
    gets the same bits as a fresh output, and nothing outside the view is touched; a wrong shape
    or dtype raises. CPU: the Triton interpreter (fp32)."""
    from custom_ops.sparse_attention.list_kernels import tile_lists_and_bias_from_rows_launch
    from custom_ops.sparse_attention.triton_kernels import sparse_attention_rows_launch

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    q, k, v, kw, probs, mean_log, inv_sigma, _ = rows_problem(CASES[0], dtype)
    q, k, v, probs, mean_log = (t.to(device) for t in (q, k, v, probs, mean_log))
    B, Hq, Sq, D = q.shape
    bs, scale = kw["block_size"], 1 / math.sqrt(D)
    pack = forward_tiling(Hq, k.shape[1], probs.shape[1], probs.shape[1])[1] if packed else 1
    lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, inv_sigma, True, k.shape[2], bs, block_m)
    fresh, fresh_lse = sparse_attention_rows_launch(q, k, v, *lists, True, scale, bs, block_m, pack=pack)
    whole = torch.full((B, Hq, Sq + 40, v.shape[-1]), 7.0, device=device, dtype=dtype)
    out, lse = sparse_attention_rows_launch(
        q, k, v, *lists, True, scale, bs, block_m, pack=pack, out=whole[:, :, 17 : 17 + Sq]
    )
    assert out.data_ptr() == whole[:, :, 17:].data_ptr()
    assert torch.equal(whole[:, :, 17 : 17 + Sq], fresh) and torch.equal(lse, fresh_lse)
    assert (whole[:, :, :17] == 7).all() and (whole[:, :, 17 + Sq :] == 7).all()
    for wrong in (whole[:, :, : Sq - 1], whole[:, :, :Sq].double()):
        with pytest.raises(ValueError, match="out .* must be"):
            sparse_attention_rows_launch(q, k, v, *lists, True, scale, bs, block_m, pack=pack, out=wrong)


def test_rows_into_op_equals_the_rows_op_and_passes_opcheck():
    """``dash_flex::sparse_attention_rows_into`` (CPU: the torch definition copied into ``out``)
    writes what ``sparse_attention_rows`` returns into a strided view and returns its LSE; a wrong
    ``out`` raises, and so do inputs that require grad outside ``no_grad``; opcheck (schema with
    the mutated ``out``, fake kernel)."""
    from custom_ops.sparse_attention import sparse_attention_rows, sparse_attention_rows_into

    q, k, v, kw, probs, mean_log, inv_sigma, _ = rows_problem(CASES[0])
    args = (True, 0.2, kw["block_size"], inv_sigma)
    want, want_lse = sparse_attention_rows(q, k, v, probs, mean_log, *args)
    whole = torch.full((*q.shape[:2], q.shape[2] + 5, v.shape[-1]), 3.0)
    lse = sparse_attention_rows_into(q, k, v, probs, mean_log, whole[:, :, 5:], *args)
    assert torch.equal(whole[:, :, 5:], want) and torch.equal(lse, want_lse) and (whole[:, :, :5] == 3).all()
    for wrong in (whole[:, :, 6:], whole[:, :, 5:].double()):  # checked on every path, not only CUDA's
        with pytest.raises(ValueError, match="out .* must be"):
            sparse_attention_rows_into(q, k, v, probs, mean_log, wrong, *args)
    with pytest.raises(RuntimeError, match="inference-only"):  # its out would silently drop the gradient
        sparse_attention_rows_into(q.clone().requires_grad_(), k, v, probs, mean_log, whole[:, :, 5:], *args)
    with torch.no_grad():
        sparse_attention_rows_into(q.clone().requires_grad_(), k, v, probs, mean_log, whole[:, :, 5:], *args)
    torch.library.opcheck(
        torch.ops.dash_flex.sparse_attention_rows_into.default,
        (q, k, v, probs, mean_log, torch.empty_like(want), *args),
    )


def check_heavy_tiles_first(device: str, dtype: torch.dtype, monkeypatch, S: int, D: int, bs: int, block_m: int):
    """Launching a causal fine forward's query tiles last-first (``HEAVY_TILES_FIRST``) changes only
    the order programs start in: the rows launch gives the same bits (the block-major launch shares
    its ``_launch`` and kernel). This checks the tile remapping (every tile written once, from its
    own list); the interpreter runs programs in order either way, so only the GPU sees the order."""
    from custom_ops.sparse_attention import triton_kernels
    from custom_ops.sparse_attention.list_kernels import tile_lists_and_bias_from_rows_launch

    g = torch.Generator(device=device).manual_seed(13)
    B, Hq, Hkv = 2, 8, 2
    q = torch.randn(B, Hq, S, D, device=device, generator=g).to(dtype)
    k, v = (torch.randn(B, Hkv, S, D, device=device, generator=g).to(dtype) for _ in range(2))
    probs, mean_log = causal_rows(B, Hkv, S, S, bs, True, 0.3, seed=5)
    probs, mean_log = probs.to(device), mean_log.to(device)
    lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, True, S, bs, block_m)
    outs = []
    for heavy_first in (False, True):
        monkeypatch.setattr(triton_kernels, "HEAVY_TILES_FIRST", heavy_first)
        outs.append(triton_kernels.sparse_attention_rows_launch(q, k, v, *lists, True, D**-0.5, bs, block_m, pack=4))
    assert torch.isfinite(outs[0][0]).all()
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_heavy_tiles_first_gives_the_same_bits(monkeypatch):
    check_heavy_tiles_first("cpu", torch.float16, monkeypatch, 150, 32, 16, 16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rows_kernel_descriptor_loads_equal_pointer_loads(dtype, monkeypatch):
    """K and V through TMA descriptors give the pointer loads' bits: 2 batches of grouped heads,
    keys as a chunk's view of a longer tensor (the chunked inference path's layout) with a partial
    last block, the rows past ``kv_len`` NaN (a descriptor must fill them with zeros, as the masked
    pointer load does). The descriptors are built (a spy on ``_kv_descriptors``), the default rule
    takes them from ``DESCRIPTOR_MIN_KV_LEN`` keys on a packed 16-bit launch with 128-wide heads,
    and layouts a descriptor cannot express fall back to pointer loads."""
    from custom_ops.sparse_attention import triton_kernels
    from custom_ops.sparse_attention.list_kernels import tile_lists_and_bias_from_rows_launch

    g = torch.Generator().manual_seed(11)
    B, Hq, Hkv, S, D, bs, kv_len = 2, 8, 2, 150, 32, 16, 150
    q = torch.randn(B, Hq, S, D, generator=g).to(dtype)
    k_full, v_full = (torch.randn(B, Hkv, S + 40, D, generator=g).to(dtype) for _ in range(2))
    k_full[:, :, kv_len:], v_full[:, :, kv_len:] = float("nan"), float("nan")
    k, v = k_full[:, :, :kv_len], v_full[:, :, :kv_len]
    probs, mean_log = causal_rows(B, Hkv, S, kv_len, bs, True, 0.3, seed=3)
    lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, True, kv_len, bs, 16)
    args = (q, k, v, *lists, True, 1 / math.sqrt(D), bs, 16)
    built = []
    real = triton_kernels._kv_descriptors
    monkeypatch.setattr(triton_kernels, "_kv_descriptors", lambda *a: built.append(real(*a)) or built[-1])
    pointers = triton_kernels.sparse_attention_rows_launch(*args, pack=4, use_descriptors=False)
    assert built == []
    descriptors = triton_kernels.sparse_attention_rows_launch(*args, pack=4, use_descriptors=True)
    assert len(built) == 1 and built[0] is not None
    assert torch.isfinite(pointers[0]).all()
    assert torch.equal(pointers[0], descriptors[0]) and torch.equal(pointers[1], descriptors[1])
    # the default rule: past the key threshold, packed, 16-bit, 128-wide heads only
    monkeypatch.setattr(triton_kernels, "DESCRIPTOR_MIN_KV_LEN", kv_len)
    wide = [t.new_empty(*t.shape[:3], 128) for t in (q, k, v)]
    assert triton_kernels.default_descriptors(*wide, 4) == (dtype == torch.float16)
    assert not triton_kernels.default_descriptors(*wide, 1) and not triton_kernels.default_descriptors(q, k, v, 4)
    monkeypatch.setattr(triton_kernels, "DESCRIPTOR_MIN_KV_LEN", kv_len + 1)
    assert not triton_kernels.default_descriptors(*wide, 4)
    # batch and head dims that do not merge (heads outermost in memory), a head dim that is not a
    # power of two, an expanded (zero-stride) head dim, an empty batch: pointer loads
    k_t = k.transpose(0, 1).contiguous().transpose(0, 1)
    assert real(k_t, v, bs) is None
    assert real(k[..., :24], v[..., :24], bs) is None
    assert real(k[:, :1].expand(B, Hkv, kv_len, D), v, bs) is None
    assert real(k[:0], v[:0], bs) is None
    fallback = triton_kernels.sparse_attention_rows_launch(q, k_t, v, *args[3:], pack=4, use_descriptors=True)
    assert torch.equal(fallback[0], pointers[0])


ROWS_LIST_CASES = [
    # (B, H, Sq, Skv, block_size, block_m, causal, density)
    (2, 3, 300, 300, 16, 16, True, 0.3),  # 19 blocks
    (1, 2, 200, 9000, 32, 32, True, 0.1),  # an offset; 282 blocks: three steps of 128
    (1, 1, 100, 130, 16, 64, False, 0.2),  # partial last tile and block
    (1, 2, 64, 64, 16, 16, True, 0.0),  # nothing selected: the own blocks alone
    (1, 1, 600, 600, 2, 32, True, 0.05),  # 300 blocks: steps cut at the tile's causal reach
    (1, 2, 300, 400, 4, 128, True, 0.1),  # 100 blocks, unpacked 128-row tiles: 32-block steps
]


def causal_rows(B, H, Sq, Skv, bs, causal, density, seed):
    """Random p̄ rows (zeros past each row's eligible blocks when causal, as the coarse stage gives)
    and random mean log p̄, on views of padded tensors."""
    nb = -(-Skv // bs)
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(B, H, Sq + 5, nb + 3, generator=g)
    probs = torch.where(torch.rand(probs.shape, generator=g) < density, probs, 0.0)[:, :, :Sq, :nb]
    if causal:
        own = (torch.arange(Sq) + Skv - Sq) // bs
        probs = probs.masked_fill(torch.arange(nb)[None, :] >= own[:, None], 0.0)
    return probs, torch.randn(B, H, Sq + 2, generator=g)[:, :, :Sq]


@pytest.mark.parametrize("case", ROWS_LIST_CASES)
def test_rows_list_kernel_equals_the_torch_lists_and_bias(case):
    """The tile lists built from p̄ rows (kept: ``p̄ > 0`` or the row's own block) equal the torch
    lists of the block-major flags those rows define, and each listed slot's bias rows are that
    block's prior in log2 units where a row keeps it, ``−inf`` where it does not."""
    from custom_ops.coarse_selection.torch_impl import block_major_from_rows
    from custom_ops.sparse_attention.list_kernels import tile_lists_and_bias_from_rows_launch

    B, H, Sq, Skv, bs, block_m, causal, density = case
    probs, mean_log = causal_rows(B, H, Sq, Skv, bs, causal, density, Sq + Skv)
    prior, active = block_major_from_rows(probs, mean_log, 0.7, causal, Skv, bs)
    want_list, want_count = tile_block_lists(active, block_m)
    got_list, got_count, bias = tile_lists_and_bias_from_rows_launch(probs, mean_log, 0.7, causal, Skv, bs, block_m)
    assert torch.equal(got_count, want_count) and torch.equal(got_list, want_list)
    assert (want_count > 0).any()
    pad = -(-Sq // block_m) * block_m - Sq
    want_bias = torch.where(active, prior * math.log2(math.e), -math.inf)
    want_bias = torch.nn.functional.pad(want_bias, (0, pad), value=-math.inf)  # [B, H, nb, n_tiles·block_m]
    want_bias = want_bias.view(B, H, want_bias.shape[2], -1, block_m).transpose(2, 3)  # [B, H, n_tiles, nb, m]
    for b, h, t in torch.nonzero(want_count).tolist():
        n = want_count[b, h, t]
        expected = want_bias[b, h, t][want_list[b, h, t, :n].long()]
        torch.testing.assert_close(bias[b, h, t, :n], expected, atol=1e-5, rtol=1e-5)


def test_rows_opcheck_cpu_and_no_backward():
    """The rows ops pass opcheck (schema, fake kernel, no autograd registered beyond a clear
    error), rows of the wrong shape raise, and a backward through either op raises instead of
    returning a wrong gradient."""
    from custom_ops.coarse_selection import coarse_selection_rows
    from custom_ops.sparse_attention import sparse_attention_rows

    q, k, v, kw, probs, mean_log, inv_sigma, _ = rows_problem(CASES[0])
    with pytest.raises(ValueError, match="probs .* must be"):
        sparse_attention_rows(q, k, v, probs[..., :-1], mean_log[..., :-1], True, 0.2, 16, inv_sigma)
    with pytest.raises(ValueError, match="mean_log .* must be"):
        sparse_attention_rows(q, k, v, probs, mean_log[..., :-1], True, 0.2, 16, inv_sigma)
    torch.library.opcheck(
        torch.ops.dash_flex.sparse_attention_rows.default, (q, k, v, probs, mean_log, True, 0.2, 16, inv_sigma)
    )
    k_bar = torch.randn(1, 2, 13, q.shape[-1])
    torch.library.opcheck(torch.ops.dash_flex.coarse_selection_rows.default, (q, k_bar, 1.5, 1.0, True, 200, 16))
    q_ = q.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="inference-only"):
        sparse_attention_rows(q_, k, v, probs, mean_log, True, 0.2, 16, inv_sigma)[0].sum().backward()
    with pytest.raises(RuntimeError, match="inference-only"):
        coarse_selection_rows(q_, k_bar, 1.5, 1.0, True, 200, 16)[0].sum().backward()


@pytest.mark.parametrize(
    "case",
    [CASES[0], CASES[2], CASES[3], (1, 4, 2, 200, 200, 32, 16, dict(sigma=math.inf))],
    ids=["gqa", "chunked", "noncausal", "gqa-no-prior"],
)
def test_fused_inference_from_rows_equals_block_major_path(case):
    """dash_attention's fused inference (rows) equals the block-major fused path on the same
    inputs (``return_selection=True`` keeps the block-major path) and the float64 reference. On
    the CPU both run torch definitions that agree by construction, so this checks the wiring (which
    ops, which arguments, sigma = inf as no prior); the kernels are compared above and on CUDA."""
    q, k, v, u, kw, _, _ = problem(case)
    with torch.no_grad():
        from_rows = dash_attention(q, k, v, pool_query=u, fine_stage="fused", **kw)
        block_major, _ = dash_attention(q, k, v, pool_query=u, fine_stage="fused", return_selection=True, **kw)
    ref = dash_attention_reference(q.double(), k.double(), v.double(), pool_query=u.double(), **kw)
    assert rel_err(from_rows, block_major) < 1e-6
    assert rel_err(from_rows, ref) < 1e-4


def test_triton_kernel_with_a_negative_scale():
    """A non-positive scale flips which product is a row's largest score: the kernel then forms
    every score before its max (the raw-product max is only taken for ``scale > 0``). The scores
    spread over hundreds of log2 units, so a wrong max overflows exp2."""
    g = torch.Generator().manual_seed(5)
    q = 30 * torch.randn(1, 2, 40, 16, generator=g)
    k, v = (torch.randn(1, 2, 64, 16, generator=g) for _ in range(2))
    prior = torch.randn(1, 2, 4, 40, generator=g)
    active = torch.rand(1, 2, 4, 40, generator=g) < 0.7
    args = (q, k, v, prior, active, False, -0.5, 16, True)
    want, _, want_lse = sparse_attention_forward_torch(*args)
    block_list, count = tile_block_lists(active, 16)
    got, _, lse = sparse_attention_launch(q, k, v, prior, active, block_list, count, *args[5:], 16)
    finite = torch.isfinite(want_lse)
    assert rel_err(got, want) < 1e-5 and rel_err(lse[finite], want_lse[finite]) < 1e-5


def _backward_problem(case, dtype):
    q, k, v, u, kw, (prior, active), has_prior = problem(case, dtype)
    g = torch.Generator().manual_seed(11)
    grad_out = torch.randn(q.shape[:-1] + (v.shape[-1],), generator=g).to(dtype)
    return q, k, v, prior.detach().float().contiguous(), active, grad_out, kw, has_prior


@pytest.mark.parametrize("case", CASES, ids=["gqa", "per-head-inf", "chunked", "noncausal"])
def test_backward_definition_matches_autograd(case):
    """The hand-written backward (torch) equals autograd through the forward definition, float64."""
    q, k, v, prior, active, grad_out, kw, has_prior = _backward_problem(case, torch.float64)
    causal, bs, scale = kw.get("causal", True), kw["block_size"], 1 / math.sqrt(q.shape[-1])
    leaves = [t.clone().requires_grad_() for t in (q, k, v, prior.double())]
    out, res, lse = sparse_attention_forward_torch(*leaves, active, causal, scale, bs, has_prior)
    expected = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    got = sparse_attention_backward_torch(grad_out, q, k, v, prior.double(), active, out.detach(), res, lse,
                                          causal, scale, bs, has_prior)  # fmt: skip
    for name, a, b in zip("q k v prior".split(), got, expected):
        if b is None:  # sigma = inf: no prior term
            assert name == "prior" and not has_prior and (a == 0).all()
            continue
        assert rel_err(a, b) < 1e-10, name


BACKWARD_CASES = [(case, False) for case in CASES] + [(CASES[0], True), (CASES[3], True)]  # packable: G=2 shared


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "case,packed",
    BACKWARD_CASES,
    ids=["gqa", "per-head-inf", "chunked", "noncausal", "gqa-packed", "noncausal-packed"],
)
def test_triton_backward_matches_definition(case, dtype, packed):
    """``packed``: the heads of a group that share the selection share both kernels' programs
    (``backward_tiling``: dprior summed over the pack in-kernel, dK/dV per KV head); unpacked, a
    KV head's program walks each query head's list in turn."""
    q, k, v, prior, active, grad_out, kw, has_prior = _backward_problem(case, dtype)
    causal, bs, scale = kw.get("causal", True), kw["block_size"], 1 / math.sqrt(q.shape[-1])
    bm, pack = backward_tiling(q.shape[1], k.shape[1], prior.shape[1], active.shape[1]) if packed else (16, 1)
    bm = min(bm, 16)  # several tiles per block even at these lengths
    assert pack == (2 if packed else 1)
    out, res, lse = sparse_attention_forward_torch(q, k, v, prior, active, causal, scale, bs, has_prior)
    args = (grad_out, q, k, v, prior, active, out, res, lse)
    expected = sparse_attention_backward_torch(*args, causal, scale, bs, has_prior)
    lists = (*tile_block_lists(active, bm), *block_tile_lists(active, bm))
    got = sparse_attention_backward_launch(*args, *lists, causal, scale, bs, has_prior, bm, pack)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for name, a, b in zip("q k v prior".split(), got, expected):
        assert torch.isfinite(a).all(), name
        if b.abs().sum() == 0:
            assert (a == 0).all(), name
        else:
            assert rel_err(a, b) < tol, f"{name}: {rel_err(a, b):.2e}"


def test_gradcheck_float64():
    """Numerical vs analytic gradients of the op (q, k, v, prior), GQA 2:1, causal chunk."""
    g = torch.Generator().manual_seed(8)
    q = torch.randn(1, 2, 12, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(1, 1, 40, 8, generator=g, dtype=torch.float64) for _ in range(2))
    prior = torch.randn(1, 1, 3, 12, generator=g, dtype=torch.float64)
    active = torch.rand(1, 1, 3, 12, generator=g) < 0.6
    active[:, :, 2] = True  # every query keeps its own block
    leaves = [t.requires_grad_() for t in (q, k, v, prior)]

    def f(q_, k_, v_, p_):
        return sparse_attention_forward(q_, k_, v_, p_, active, True, 0.3, 16, True)[0]

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7)


def test_gradients_through_the_selection_match_dash_attention():
    """The op fed ``sel.log_prior`` gives q, k, v and pool_query the same gradients as
    dash_attention (the prior's gradient flows on into dash_flex::log_prior and entmax)."""
    q, k, v, u, kw, _, _ = problem(CASES[0])
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(3))
    leaves = [t.clone().requires_grad_() for t in (q, k, v, u)]
    sel = dash_select(leaves[0], leaves[1], pool_query=leaves[3], **kw)
    out, _, _ = sparse_attention_forward(
        leaves[0], leaves[1], leaves[2], sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3),
        True, 1 / math.sqrt(q.shape[-1]), kw["block_size"], True,
    )  # fmt: skip
    got = torch.autograd.grad(out, leaves, grad_out)
    leaves2 = [t.clone().requires_grad_() for t in (q, k, v, u)]
    ref = dash_attention(*leaves2[:3], pool_query=leaves2[3], **kw)
    expected = torch.autograd.grad(ref, leaves2, grad_out)
    for name, a, b in zip("q k v pool_query".split(), got, expected):
        assert rel_err(a, b) < 1e-4, f"{name}: {rel_err(a, b):.2e}"


@pytest.mark.parametrize("case", CASES, ids=["gqa", "per-head-inf", "chunked", "noncausal"])
def test_dash_attention_fused_equals_flex(case):
    """``dash_attention(fine_stage="fused")`` gives the FlexAttention path's output (1e-5), and
    gradients (q, k, v, pool_query) as close to the float64 reference as the FlexAttention
    path's: within 2e-3 (tests/test_attention.py) or twice the flex path's own error. q/k through
    the prior carry the fp32 entmax threshold's error amplified by ~p̄^(1−α) (docs/design.md,
    "Numerics"): the cases keep the smallest selected p̄ above ~1e-6 (at selection_scale 3 the
    chunked case had 3e-10 and its k error, 2–4e-3, depended on the CPU's vector width)."""
    q, k, v, u, kw, _, _ = problem(case)
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(6))
    outs, grads = {}, {}
    for stage in ("fused", "flex"):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, u)]
        outs[stage] = dash_attention(*leaves[:3], pool_query=leaves[3], fine_stage=stage, **kw)
        grads[stage] = torch.autograd.grad(outs[stage], leaves, grad_out, allow_unused=True)
    assert rel_err(outs["fused"], outs["flex"]) < 1e-5
    ref_leaves = [t.double().requires_grad_() for t in (q, k, v, u)]
    ref = dash_attention_reference(*ref_leaves[:3], pool_query=ref_leaves[3], **kw)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_out.double(), allow_unused=True)
    for name, a, f, r in zip("q k v pool_query".split(), grads["fused"], grads["flex"], ref_grads):
        assert (a is None) == (r is None), name
        if a is not None:
            assert rel_err(a, r) <= max(2e-3, 2 * rel_err(f, r)), f"{name}: {rel_err(a, r):.2e}"


@pytest.mark.parametrize("shape", [(48, 16), (40, 100), (64, 64)], ids=["sq>skv", "sq<skv", "square"])
@pytest.mark.parametrize("causal", [True, False])
def test_triton_kernel_any_flags(shape, causal):
    """The op takes any flags: random ones (blocks past a row's causal reach too, rows keeping
    nothing) and causal queries that sit before every key (Sq > Skv: the kernel once looped
    forever finding its diagonal blocks). Kernel (interpreter, packed 2 heads) = definition; the
    prior is spread (3·randn) so that the row max moves between blocks."""
    Sq, Skv = shape
    g = torch.Generator().manual_seed(Sq + Skv + causal)
    q = torch.randn(1, 4, Sq, 32, generator=g)
    k, v = (torch.randn(1, 2, Skv, 32, generator=g) for _ in range(2))
    nb = -(-Skv // 16)
    prior = 3 * torch.randn(1, 2, nb, Sq, generator=g)
    active = torch.rand(1, 2, nb, Sq, generator=g) < 0.5
    args = (q, k, v, prior, active, causal, 0.2, 16, True)
    want, _, want_lse = sparse_attention_forward_torch(*args)
    block_list, count = tile_block_lists(active, 16)
    got, _, lse = sparse_attention_launch(q, k, v, prior, active, block_list, count, *args[5:], 16, 4, 2, pack=2)
    assert rel_err(got, want) < 1e-5
    finite = torch.isfinite(want_lse)
    assert torch.equal(torch.isfinite(lse), finite) and rel_err(lse[finite], want_lse[finite]) < 1e-5
    assert (got[~finite] == 0).all()


class _NanEmptyTorch:
    """``torch`` for triton_backward whose ``empty`` hands out NaN-filled buffers (not zeroed pages)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*args, **kwargs):
        out = torch.empty(*args, **kwargs)
        return out.fill_(math.nan) if out.is_floating_point() else out.fill_(-1)


@pytest.mark.parametrize("shape", [(72, 40), (40, 100), (64, 64)], ids=["sq>skv", "sq<skv", "square"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "heads", [(4, 2, 1), (4, 2, 2), (8, 2, 4), (8, 1, 4)], ids=["pack1", "pack2", "pack4", "pack4-two-packs-per-kv"]
)
def test_triton_backward_any_flags(shape, causal, heads, monkeypatch):
    """The backward kernels on random flags (blocks past a row's causal reach, rows keeping
    nothing, causal queries before every key with Sq > Skv), D = 24 (not a power of two) and a
    value dim of 16, a head-strided ``grad_out`` and ``out``, one, two or four heads per program,
    and G = 8 (two packs of four per KV head in ``_dk_dv``), with
    several key blocks (with one, Σ dS over it is 0 and dprior is fp32 noise): dq, dk, dv, dprior
    = the torch definition; and every element of dq / dk / dv is written (buffers from
    ``torch.empty`` pre-filled with NaN give the same result)."""
    import custom_ops.sparse_attention.triton_backward as triton_backward

    Sq, Skv = shape
    Hq, Hkv, pack = heads
    g = torch.Generator().manual_seed(Sq + Skv + causal)
    q = torch.randn(1, Hq, Sq, 24, generator=g)
    k = torch.randn(1, Hkv, Skv, 24, generator=g)
    v = torch.randn(1, Hkv, Skv, 16, generator=g)
    nb = -(-Skv // 16)
    prior = torch.randn(1, Hkv, nb, Sq, generator=g)
    active = torch.rand(1, Hkv, nb, Sq, generator=g) < 0.5
    grad_out = torch.randn(1, Sq, Hq, 16, generator=g).transpose(1, 2)  # head-strided, as from [B, S, H, D]
    out, res, lse = sparse_attention_forward_torch(q, k, v, prior, active, causal, 0.2, 16, True)
    out = out.transpose(1, 2).contiguous().transpose(1, 2)  # same values, head-strided
    args = (grad_out, q, k, v, prior, active, out, res, lse)
    expected = sparse_attention_backward_torch(*args, causal, 0.2, 16, True)
    lists = (*tile_block_lists(active, 16), *block_tile_lists(active, 16))
    got = sparse_attention_backward_launch(*args, *lists, causal, 0.2, 16, True, 16, pack)
    for name, a, b in zip("q k v prior".split(), got, expected):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, b) < 1e-5, f"{name}: {rel_err(a, b):.2e}"
    monkeypatch.setattr(triton_backward, "torch", _NanEmptyTorch())
    again = sparse_attention_backward_launch(*args, *lists, causal, 0.2, 16, True, 16, pack)
    for name, a, b in zip("q k v prior".split(), again, got):
        assert torch.equal(a, b), name


CHUNK_CASES = [
    CASES[0],
    CASES[1],
    (1, 2, 2, 270, 500, 32, 32, dict(sigma=0.5, selection_scale=3.0)),  # prefill after a cache
    (1, 4, 2, 300, 300, 16, 16, dict(causal=False, alpha=1.25, sigma=1.0)),
]


@pytest.mark.parametrize("case", CHUNK_CASES, ids=["gqa", "per-head-inf", "offset", "noncausal"])
def test_fused_inference_in_query_chunks_equals_whole_call(case, monkeypatch):
    """Without gradients the fused path runs the queries in chunks once the selection state
    passes ``INFERENCE_CHUNK_BYTES``: with a budget that forces 2–3 chunks, the output equals the
    whole call's and the float64 reference's; with gradients that budget does not apply."""
    import dash_flex.attention as attention

    q, k, v, u, kw, _, _ = problem(case)
    with torch.no_grad():
        whole = dash_attention(q, k, v, pool_query=u, fine_stage="fused", **kw)
    calls, in_place = [], []
    chunked, into = attention._fused_in_query_chunks, attention.sparse_attention_rows_into
    monkeypatch.setattr(attention, "_fused_in_query_chunks", lambda *a: calls.append((a[4], a[-1])) or chunked(*a))
    monkeypatch.setattr(attention, "sparse_attention_rows_into", lambda *a: in_place.append(a[5].shape) or into(*a))
    B, Hq, Hkv, Sq, Skv, D, bs, _ = case
    shared = kw.get("share_kv_groups", True)  # shared: the selection stays as p̄ rows (from_rows)
    heads = Hkv if shared else Hq
    per_entry = attention.ROWS_BYTES_PER_ENTRY if shared else attention.SELECTION_BYTES_PER_ENTRY
    per_row = B * heads * -(-Skv // bs) * per_entry
    monkeypatch.setattr(attention, "INFERENCE_CHUNK_BYTES", int(per_row * 128))  # 128 rows per chunk
    with torch.no_grad():
        out = dash_attention(q, k, v, pool_query=u, fine_stage="fused", **kw)
    assert calls == [(128, shared)], "the chunked path did not run"
    # p̄ rows (shared): each chunk's fine kernel writes its rows of the output in place
    assert (len(in_place) >= 2 and sum(shape[2] for shape in in_place) == Sq) if shared else not in_place
    ref = dash_attention_reference(q.double(), k.double(), v.double(), pool_query=u.double(), **kw)
    assert rel_err(out, whole) < 1e-6
    assert rel_err(out, ref) < 1e-4
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    with_grad = dash_attention(*leaves, pool_query=u, fine_stage="fused", **kw)
    assert len(calls) == 1 and with_grad.grad_fn is not None  # no chunking when a gradient is wanted
    assert rel_err(with_grad, whole) < 1e-6


@pytest.mark.parametrize("case", CHUNK_CASES, ids=["gqa", "per-head-inf", "offset", "noncausal"])
def test_fused_training_in_query_chunks_equals_whole_call(case, monkeypatch):
    """With gradients the fused path runs the queries in checkpointed chunks once the state passes
    ``TRAINING_CHUNK_BYTES``: with a budget that forces 2–3 chunks, the output and the gradients of
    q, k, v and pool_query equal the whole call's, and each chunk ran twice (its forward, then its
    recomputation in the backward)."""
    import dash_flex.attention as attention

    q, k, v, u, kw, _, _ = problem(case)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, u)]
    whole = dash_attention(*leaves[:3], pool_query=leaves[3], fine_stage="fused", **kw)
    grad_out = torch.randn_like(whole)
    want = torch.autograd.grad(whole, leaves, grad_out, allow_unused=True)
    B, Hq, Hkv, Sq, Skv, D, bs, _ = case
    heads = Hkv if kw.get("share_kv_groups", True) else Hq
    per_row = B * heads * -(-Skv // bs) * attention.TRAINING_BYTES_PER_ENTRY
    monkeypatch.setattr(attention, "TRAINING_CHUNK_BYTES", int(per_row * 128))  # 128 rows per chunk
    runs = []
    select_and_attend = attention._select_and_attend
    monkeypatch.setattr(
        attention, "_select_and_attend", lambda *a, **kw_: runs.append(1) or select_and_attend(*a, **kw_)
    )
    leaves = [t.clone().requires_grad_() for t in (q, k, v, u)]
    out = dash_attention(*leaves[:3], pool_query=leaves[3], fine_stage="fused", **kw)
    n_chunks = len(runs)
    shapes = attention.AttentionShapes(B, Hq, Hkv, Sq, Skv, D, D, bs)
    bounds = attention.fused_chunk_bounds(shapes, 128, kw.get("causal", True))
    assert n_chunks == len(bounds) - 1 >= 2, "the chunked path did not run"
    got = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    assert len(runs) == 2 * n_chunks, "the chunks were not recomputed in the backward"
    assert rel_err(out, whole) < 1e-6
    for name, a, b in zip("q k v pool_query".split(), got, want):
        assert (a is None) == (b is None), name
        if a is not None:
            assert rel_err(a, b) < 1e-5, f"{name}: {rel_err(a, b):.2e}"


def test_fused_chunks_sized_by_their_keys_equal_the_whole_call(monkeypatch):
    """Causal chunks that see fewer keys are taller (``fused_chunk_bounds``): 640 causal rows of
    16-token blocks under a budget of 128 rows over every key block run as chunks of 256, 128, 128
    and 128 rows (not five of 128), at inference and in training (each chunk recomputed in the
    backward), and both equal the whole call, output and gradients."""
    import dash_flex.attention as attention

    case = (1, 4, 2, 640, 640, 16, 16, dict(sigma=1.0))
    q, k, v, u, kw, _, _ = problem(case)
    B, _, Hkv, _, Skv, _, bs, _ = case
    for name, per_entry in (("INFERENCE_CHUNK_BYTES", attention.ROWS_BYTES_PER_ENTRY),
                            ("TRAINING_CHUNK_BYTES", attention.TRAINING_BYTES_PER_ENTRY)):  # fmt: skip
        monkeypatch.setattr(attention, name, int(B * Hkv * -(-Skv // bs) * per_entry * 128))
    heights = []
    for fn in ("_attend_from_rows", "_select_and_attend"):
        real = getattr(attention, fn)
        monkeypatch.setattr(
            attention, fn, lambda *a, real=real, **kw_: heights.append(kw_["shapes"].q_len) or real(*a, **kw_)
        )
    leaves = [t.clone().requires_grad_() for t in (q, k, v, u)]
    with torch.no_grad():
        chunked = dash_attention(q, k, v, pool_query=u, fine_stage="fused", **kw)
    assert heights == [256, 128, 128, 128]
    out = dash_attention(*leaves[:3], pool_query=leaves[3], fine_stage="fused", **kw)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(17))
    got = torch.autograd.grad(out, leaves, grad_out)
    assert heights[4:8] == [256, 128, 128, 128]  # the forward
    assert sorted(heights[8:]) == [128, 128, 128, 256]  # each chunk again in the backward (last first)
    monkeypatch.undo()
    whole_leaves = [t.clone().requires_grad_() for t in (q, k, v, u)]
    whole = dash_attention(*whole_leaves[:3], pool_query=whole_leaves[3], fine_stage="fused", **kw)
    want = torch.autograd.grad(whole, whole_leaves, grad_out)
    assert rel_err(chunked, whole) < 1e-6 and rel_err(out, whole) < 1e-6
    # fp32 sums in other orders (the chunks' entmax rows have other register widths); a chunk
    # attending to the wrong rows or keys would be off by O(1)
    for name, a, b in zip("q k v pool_query".split(), got, want):
        assert rel_err(a, b) < 1e-4, f"{name}: {rel_err(a, b):.2e}"


def test_fused_chunk_rows_fit_the_budget():
    """At 128K tokens (B=1, Hkv=8, block 64) the ~19 GiB selection splits into chunks of whole
    1024-row units, each within the 1.25 GiB inference budget, or the 4 GiB training budget with
    the prior's gradient counted; 8K and 32K run whole in all three. As p̄ rows (inference,
    GQA-shared: p̄, lists and their bias rows) the state is a little smaller, the chunks as tall
    or taller."""
    from dash_flex._validation import AttentionShapes
    from dash_flex.attention import (
        INFERENCE_CHUNK_BYTES,
        ROWS_BYTES_PER_ENTRY,
        SELECTION_BYTES_PER_ENTRY,
        TRAINING_BYTES_PER_ENTRY,
        TRAINING_CHUNK_BYTES,
        fused_chunk_rows,
    )

    long = AttentionShapes(1, 32, 8, 131072, 131072, 128, 128, 64)
    rows = fused_chunk_rows(long, True, False)
    assert rows % 1024 == 0 and rows < 131072
    assert 8 * 2048 * rows * SELECTION_BYTES_PER_ENTRY <= INFERENCE_CHUNK_BYTES
    assert fused_chunk_rows(AttentionShapes(1, 32, 8, 8192, 8192, 128, 128, 64), True, False) == 8192
    assert fused_chunk_rows(AttentionShapes(1, 32, 8, 32768, 32768, 128, 128, 64), True, False) == 32768
    assert fused_chunk_rows(long, False, False) < rows  # per-head selection: 4× the state
    train_rows = fused_chunk_rows(long, True, True)
    assert train_rows % 1024 == 0 and rows < train_rows < 131072
    assert 8 * 2048 * train_rows * TRAINING_BYTES_PER_ENTRY <= TRAINING_CHUNK_BYTES
    assert fused_chunk_rows(AttentionShapes(1, 32, 8, 32768, 32768, 128, 128, 64), True, True) == 32768
    rows_from_rows = fused_chunk_rows(long, True, False, True)
    assert rows_from_rows % 1024 == 0 and rows <= rows_from_rows < 131072
    assert fused_chunk_rows(AttentionShapes(1, 32, 8, 32768, 32768, 128, 128, 64), True, False, True) == 32768
    assert 8 * 2048 * rows_from_rows * ROWS_BYTES_PER_ENTRY <= INFERENCE_CHUNK_BYTES
    assert 8 * 2048 * (rows_from_rows + 1024) * ROWS_BYTES_PER_ENTRY > INFERENCE_CHUNK_BYTES


@pytest.mark.parametrize("offset", [0, 3000])
def test_causal_chunks_grow_where_they_see_fewer_keys(offset):
    """Causal chunks (:func:`fused_chunk_bounds`) cover the rows in order, in whole 1024-row units
    (the last one excepted), each within the budget's state (rows × the key blocks it sees ≤
    ``rows`` × all key blocks); early ones are taller, so 128K inference runs in 9 chunks instead
    of 15 and training in 5 instead of 7, and no chunk could take one more unit. Non-causal chunks
    are ``rows`` tall."""
    from dash_flex._validation import AttentionShapes
    from dash_flex.attention import fused_chunk_bounds, fused_chunk_rows

    long = AttentionShapes(1, 32, 8, 131072, 131072 + offset, 128, 128, 64)
    for training, from_rows, uniform_count in ((False, True, 15), (True, False, 7)):
        rows = fused_chunk_rows(long, True, training, from_rows)
        bounds = fused_chunk_bounds(long, rows, True)
        assert bounds[0] == 0 and bounds[-1] == 131072 and bounds == sorted(set(bounds))
        assert all(b % 1024 == 0 for b in bounds[:-1])
        cap = rows * long.num_blocks
        states = [(r1 - r0) * -(-(r1 + offset) // 64) for r0, r1 in zip(bounds[:-1], bounds[1:])]
        assert max(states) <= cap
        taller = [(r1 + 1024 - r0) * -(-(r1 + 1024 + offset) // 64) for r0, r1 in zip(bounds[:-2], bounds[1:-1])]
        assert min(taller) > cap  # each chunk but the last is as tall as the budget allows
        if offset == 0:
            assert -(-131072 // rows) == uniform_count and len(bounds) - 1 == (9 if not training else 5)
        assert bounds[1] - bounds[0] > rows
    assert fused_chunk_bounds(long, 9216, False) == [*range(0, 131072, 9216), 131072]
    assert fused_chunk_bounds(long, 131072, True) == [0, 131072]


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "inference-chunks"])
def test_dash_attention_fused_inference_compiles_without_graph_breaks(chunked, monkeypatch):
    """The fused inference path (the rows ops) under torch.compile (fullgraph, no_grad), whole and
    in query chunks (a budget that forces 2): no graph break, compiled = eager."""
    import dash_flex.attention as attention

    q, k, v, u, kw, _, _ = problem(CASES[0])
    if chunked:
        B, _, Hkv, _, Skv, _, bs, _ = CASES[0]
        per_row = B * Hkv * -(-Skv // bs) * attention.ROWS_BYTES_PER_ENTRY
        monkeypatch.setattr(attention, "INFERENCE_CHUNK_BYTES", int(per_row * 128))

    def layer(q_, k_, v_):
        return dash_attention(q_, k_, v_, pool_query=u, fine_stage="fused", **kw)

    with torch.no_grad():
        explanation = torch._dynamo.explain(layer)(q, k, v)
        assert explanation.graph_break_count == 0
        compiled = torch.compile(layer, fullgraph=True, dynamic=False)(q, k, v)
        eager = layer(q, k, v)
    assert rel_err(compiled, eager) < 1e-5


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "training-chunks"])
def test_dash_attention_fused_compiles_without_graph_breaks(chunked, monkeypatch):
    """The fused path under torch.compile (fullgraph), whole and in checkpointed training chunks
    (a budget that forces 2 chunks): no graph break, compiled = eager, output and gradients."""
    import dash_flex.attention as attention

    q, k, v, u, kw, _, _ = problem(CASES[0])
    if chunked:
        B, _, Hkv, _, Skv, _, bs, _ = CASES[0]
        per_row = B * Hkv * -(-Skv // bs) * attention.TRAINING_BYTES_PER_ENTRY
        monkeypatch.setattr(attention, "TRAINING_CHUNK_BYTES", int(per_row * 128))

    def layer(q_, k_, v_):
        return dash_attention(q_, k_, v_, pool_query=u, fine_stage="fused", **kw)

    explanation = torch._dynamo.explain(layer)(*(t.clone().requires_grad_() for t in (q, k, v)))
    assert explanation.graph_break_count == 0
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    compiled = torch.compile(layer, fullgraph=True, dynamic=False)(*leaves)
    eager_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    eager = layer(*eager_leaves)
    assert rel_err(compiled, eager) < 1e-5
    grads = torch.autograd.grad(compiled, leaves, torch.ones_like(compiled))
    eager_grads = torch.autograd.grad(eager, eager_leaves, torch.ones_like(eager))
    for g, e in zip(grads, eager_grads):
        assert torch.isfinite(g).all() and rel_err(g, e) < 1e-4


def test_dash_attention_fused_rejects_user_mods_and_unknown_stage():
    q, k, v, _, kw, _, _ = problem(CASES[0])
    with pytest.raises(ValueError, match="fine_stage='fused' does not take a score_mod"):
        dash_attention(q, k, v, fine_stage="fused", mask_mod=lambda b, h, qi, ki: ki >= 0, **kw)
    with pytest.raises(ValueError, match="fine_stage must be 'flex' or 'fused'"):
        dash_attention(q, k, v, fine_stage="triton", **kw)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 8, 2, 4096, 4096, 128, 64), (2, 8, 8, 1000, 3000, 64, 64)], ids=["gqa", "mha"])
def test_cuda_kernel_matches_flex_and_reference(shape, dtype):
    """On CUDA: the fused kernel equals dash_attention's FlexAttention fine stage on the same
    selection (2e-2 bf16 / 1e-3 fp32) and the float64 reference."""
    B, Hq, Hkv, Sq, Skv, D, bs = shape
    g = torch.Generator(device="cuda").manual_seed(Sq)
    q = (2 * torch.randn(B, Hq, Sq, D, device="cuda", generator=g)).to(dtype)
    k = (2 * torch.randn(B, Hkv, Skv, D, device="cuda", generator=g)).to(dtype)
    v = torch.randn(B, Hkv, Skv, D, device="cuda", generator=g).to(dtype)
    u = torch.randn(Hkv, D, device="cuda", generator=g)
    tol = 1e-3 if dtype == torch.float32 else 2e-2
    with torch.no_grad():
        flex, sel = dash_attention(q, k, v, pool_query=u, block_size=bs, return_selection=True)
        prior, active = sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3)
        out, _, lse = sparse_attention_forward(q, k, v, prior, active, True, 1 / math.sqrt(D), bs, True)
    ref = dash_attention_reference(q.double(), k.double(), v.double(), pool_query=u.double(), block_size=bs)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert rel_err(out, flex) <= tol
    assert rel_err(out, ref) <= tol


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "shape,causal",
    [((1, 8, 2, 4096, 4096, 128, 64), True), ((2, 8, 8, 1000, 3000, 64, 64), True),
     ((1, 8, 2, 2000, 2000, 128, 64), False)],
    ids=["gqa", "mha-offset", "noncausal"],
)  # fmt: skip
def test_cuda_rows_path_matches_block_major_and_reference(shape, causal, dtype):
    """On CUDA: the rows op (the kernel reading p̄ rows, lists from the rows) equals the block-major
    op on the same selection (5e-3 bf16 / 1e-5 fp32: the two paths take the log of p̄ in different
    kernels) with the same LSE, and dash_attention's fused inference, which takes it, equals the
    float64 reference (2e-2 bf16 / 1e-3 fp32)."""
    from custom_ops.coarse_selection.torch_impl import mean_log_support
    from custom_ops.sparse_attention import sparse_attention_rows

    B, Hq, Hkv, Sq, Skv, D, bs = shape
    g = torch.Generator(device="cuda").manual_seed(Sq + 7)
    q = (2 * torch.randn(B, Hq, Sq, D, device="cuda", generator=g)).to(dtype)
    k = (2 * torch.randn(B, Hkv, Skv, D, device="cuda", generator=g)).to(dtype)
    v = torch.randn(B, Hkv, Skv, D, device="cuda", generator=g).to(dtype)
    u = torch.randn(Hkv, D, device="cuda", generator=g)
    scale = 1 / math.sqrt(D)
    with torch.no_grad():
        sel = dash_select(q, k, pool_query=u, block_size=bs, causal=causal)
        prior, active = sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3)
        want, _, want_lse = sparse_attention_forward(q, k, v, prior, active, causal, scale, bs, True, False)
        out, lse = sparse_attention_rows(q, k, v, sel.probs, mean_log_support(sel.probs), causal, scale, bs, 1.0)
        fused = dash_attention(q, k, v, pool_query=u, block_size=bs, causal=causal, fine_stage="fused")
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert rel_err(out, want) <= (1e-5 if dtype == torch.float32 else 5e-3)
    torch.testing.assert_close(lse, want_lse, atol=1e-4, rtol=1e-5)
    ref = dash_attention_reference(q.double(), k.double(), v.double(), pool_query=u.double(), block_size=bs,
                                   causal=causal)  # fmt: skip
    assert rel_err(fused, ref) <= (1e-3 if dtype == torch.float32 else 2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_heavy_tiles_first_gives_the_same_bits(monkeypatch):
    check_heavy_tiles_first("cuda", torch.bfloat16, monkeypatch, 3000, 128, 64, 32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_rows_kernel_descriptor_loads_equal_pointer_loads(dtype):
    """On CUDA (TMA): K and V through descriptors give the pointer loads' bits, on the benchmark's
    packed launch over a chunk's view of longer keys whose last block is partial (the descriptor
    zero-fills its box past ``kv_len``; the CPU test poisons those rows with NaN to check it)."""
    from custom_ops.sparse_attention import triton_kernels
    from custom_ops.sparse_attention.list_kernels import tile_lists_and_bias_from_rows_launch

    g = torch.Generator(device="cuda").manual_seed(5)
    B, Hq, Hkv, S, D, bs, kv_len = 2, 8, 2, 3000, 128, 64, 3000
    q = torch.randn(B, Hq, S, D, device="cuda", generator=g).to(dtype)
    k = torch.randn(B, Hkv, S + 1000, D, device="cuda", generator=g).to(dtype)[:, :, :kv_len]
    v = torch.randn(B, Hkv, S + 1000, D, device="cuda", generator=g).to(dtype)[:, :, :kv_len]
    probs, mean_log = causal_rows(B, Hkv, S, kv_len, bs, True, 0.3, seed=9)
    lists = tile_lists_and_bias_from_rows_launch(probs.cuda(), mean_log.cuda(), 1.0, True, kv_len, bs, 32)
    args = (q, k, v, *lists, True, 1 / math.sqrt(D), bs, 32, 4, 2)
    assert triton_kernels._kv_descriptors(k, v, bs) is not None
    pointers = triton_kernels.sparse_attention_rows_launch(*args, pack=4, use_descriptors=False)
    descriptors = triton_kernels.sparse_attention_rows_launch(*args, pack=4, use_descriptors=True)
    assert torch.isfinite(pointers[0]).all()
    assert torch.equal(pointers[0], descriptors[0]) and torch.equal(pointers[1], descriptors[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rows_list_kernel_equals_the_torch_lists():
    """On the GPU, at the benchmark's shape (32K rows, 512 blocks, 8 heads, a view of padded rows,
    zeros past each row's eligible blocks), the tile lists from p̄ rows equal the torch lists of
    the flags they define, and (32-row tiles) each listed slot's bias rows equal the prior in log2
    units (the kernel's ``lg2.approx`` log), with p̄ values of 1, 1e-30 and subnormal 1e-40 among
    them."""
    from custom_ops.coarse_selection.torch_impl import block_major_from_rows
    from custom_ops.sparse_attention.list_kernels import tile_lists_and_bias_from_rows_launch

    g = torch.Generator(device="cuda").manual_seed(0)
    probs = torch.rand(1, 8, 32768 + 100, 520, generator=g, device="cuda")[:, :, :32700, :512]
    own = (torch.arange(32700, device="cuda") + 68) // 64
    eligible = torch.arange(512, device="cuda")[None, :] < own[:, None]
    special = torch.tensor([1.0, 1e-30, 1e-40], device="cuda")[torch.randint(0, 3, probs.shape, generator=g,
                                                                              device="cuda")]  # fmt: skip
    probs = torch.where((probs < 0.01) & eligible, probs, torch.where((probs > 0.995) & eligible, special, 0.0))
    assert (probs == 1e-40).any() and (probs == 1.0).any()
    mean_log = torch.randn(probs.shape[:3], generator=g, device="cuda") - 5
    prior, active = block_major_from_rows(probs, mean_log, 1.0, True, 32768, 64)
    for block_m in (16, 32, 64, 128):
        want = tile_block_lists(active, block_m)
        got = tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, True, 32768, 64, block_m)
        assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0]), block_m
        if block_m != 32:
            continue
        want_bias = torch.where(active, prior.double() * math.log2(math.e), -math.inf)  # [1, 8, nb, Sq]
        want_bias = torch.nn.functional.pad(want_bias, (0, 32 * got[2].shape[2] - 32700), value=-math.inf)
        want_bias = want_bias.view(1, 8, 512, -1, 32).transpose(2, 3)  # [1, 8, tiles, nb, 32]
        slots = got[0].long()[..., None].expand(*got[0].shape, 32)
        listed = (torch.arange(512, device="cuda") < got[1][..., None])[..., None].expand_as(slots)
        want_slots = want_bias.gather(3, slots)[listed]
        got_slots = got[2][listed].double()
        assert torch.equal(torch.isinf(got_slots), torch.isinf(want_slots))
        finite = torch.isfinite(want_slots)
        torch.testing.assert_close(got_slots[finite], want_slots[finite], atol=1e-5, rtol=1e-6)


def _cuda_gradient_problem(dtype):
    B, Hq, Hkv, S, D, bs = 1, 8, 2, 4096, 128, 64
    g = torch.Generator(device="cuda").manual_seed(1)
    q = (2 * torch.randn(B, Hq, S, D, device="cuda", generator=g)).to(dtype)
    k = (2 * torch.randn(B, Hkv, S, D, device="cuda", generator=g)).to(dtype)
    v = torch.randn(B, Hkv, S, D, device="cuda", generator=g).to(dtype)
    u = torch.randn(Hkv, D, device="cuda", generator=g)
    grad_out = torch.randn(B, Hq, S, D, device="cuda", generator=g).to(dtype)
    return (q, k, v, u), grad_out, bs


def _fused_grads(inputs, grad_out, bs, forward):
    """Gradients of ``forward`` (the op, or its torch definition) fed a fresh selection."""
    leaves = [t.clone().requires_grad_() for t in inputs]
    sel = dash_select(leaves[0], leaves[1], pool_query=leaves[3], block_size=bs)
    prior, active = sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3)
    scale = 1 / math.sqrt(inputs[0].shape[-1])
    out = forward(leaves[0], leaves[1], leaves[2], prior, active, True, scale, bs, True)[0]
    return out, torch.autograd.grad(out, leaves, grad_out)


def _reference_grads(inputs, grad_out, bs):
    ref_leaves = [t.detach().double().requires_grad_() for t in inputs]
    ref = dash_attention_reference(*ref_leaves[:3], pool_query=ref_leaves[3], block_size=bs)
    return ref, torch.autograd.grad(ref, ref_leaves, grad_out.double())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_backward_kernels_match_definition_and_reference(dtype):
    """On CUDA, on a real selection: the prior gradient of the Triton backward equals autograd of
    the op's torch definition on the same tensors (H200: 1.1e-6 fp32, 6.4e-4 bf16), and the output
    and dv through the whole pipeline equal the float64 reference (H200: 9.6e-6 / 9.1e-6 fp32,
    1.7e-3 / 2.3e-3 bf16)."""
    inputs, grad_out, bs = _cuda_gradient_problem(dtype)
    q, k, v, u = inputs
    with torch.no_grad():
        sel = dash_select(q, k, pool_query=u, block_size=bs)
    prior = sel.log_prior.transpose(2, 3).contiguous().requires_grad_()
    active = sel.active_blocks.transpose(2, 3).contiguous()
    scale = 1 / math.sqrt(q.shape[-1])
    d_kernel, d_definition = (
        torch.autograd.grad(fn(q, k, v, prior, active, True, scale, bs, True)[0], prior, grad_out)[0]
        for fn in (sparse_attention_forward, sparse_attention_forward_torch)
    )
    assert torch.isfinite(d_kernel).all()
    assert rel_err(d_kernel, d_definition) <= (1e-4 if dtype == torch.float32 else 5e-3)
    out, grads = _fused_grads(inputs, grad_out, bs, sparse_attention_forward)
    ref, ref_grads = _reference_grads(inputs, grad_out, bs)
    tol = 1e-3 if dtype == torch.float32 else 2e-2
    assert rel_err(out, ref) <= tol and rel_err(grads[2], ref_grads[2]) <= tol
    assert all(torch.isfinite(g_).all() for g_ in grads)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.xfail(
    strict=True,
    reason="ill-conditioned exact gradient: a block selected with tiny p̄ amplifies fp32 rounding by ~p̄^(1-α); "
    "measured 0.25-0.33 (fp32) / 0.10-0.12 (bf16) on this draw - docs/design.md 'Numerics', issue #4",
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_gradients_through_the_selection_match_reference(dtype):
    """The gradients that flow through the log-prior into the coarse stage, against the float64
    reference, at the tolerances issue #4 asks for: not reachable on inputs like this draw, whose
    exact gradient moves by O(0.1) under fp32-sized input perturbations
    (scripts/prior_gradient_conditioning.py)."""
    inputs, grad_out, bs = _cuda_gradient_problem(dtype)
    _, grads = _fused_grads(inputs, grad_out, bs, sparse_attention_forward)
    _, ref_grads = _reference_grads(inputs, grad_out, bs)
    tol = 1e-2 if dtype == torch.float32 else 5e-2
    for name, a, b in zip(
        "q k pool_query".split(), (grads[0], grads[1], grads[3]), (ref_grads[0], ref_grads[1], ref_grads[3])
    ):
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.2e}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("causal", [True, False])
def test_cuda_inference_in_query_chunks_equals_whole_call(causal, monkeypatch):
    """On CUDA, bf16: the fused path's chunked inference (a budget that forces 3 chunks) equals the
    whole call (5e-3: the chunks' entmax rows have other register widths, so other fp32 sum
    orders) and the float64 reference (2e-2)."""
    import dash_flex.attention as attention

    B, Hq, Hkv, S, D, bs = 1, 8, 2, 6144, 128, 64
    g = torch.Generator(device="cuda").manual_seed(3)
    q, k, v = ((2 * torch.randn(B, h, S, D, device="cuda", generator=g)).to(torch.bfloat16) for h in (Hq, Hkv, Hkv))
    kw = dict(block_size=bs, causal=causal, fine_stage="fused")
    with torch.no_grad():
        whole = dash_attention(q, k, v, **kw)
        per_row = B * Hkv * (S // bs) * attention.ROWS_BYTES_PER_ENTRY
        monkeypatch.setattr(attention, "INFERENCE_CHUNK_BYTES", int(per_row * S / 3) + 1)
        assert attention.fused_chunk_rows(attention.check_attention_inputs(
            q, k, v, alpha=1.5, block_size=bs, causal=causal, scale=None, selection_scale=1.0, sigma=1.0,
            pool_query=None), True, False, True) == S // 3  # fmt: skip
        chunked = dash_attention(q, k, v, **kw)
    ref = dash_attention_reference(q.double(), k.double(), v.double(), block_size=bs, causal=causal)
    assert torch.isfinite(chunked).all()
    assert rel_err(chunked, whole) <= 5e-3
    assert rel_err(chunked, ref) <= 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sigma", [1.0, math.inf])
def test_cuda_training_in_query_chunks_equals_whole_call(sigma, monkeypatch):
    """On CUDA, bf16, with gradients: checkpointed chunks (a budget that forces 3) give the whole
    call's output and gradients (5e-3; with a prior only the well-conditioned v gradient is held
    to it, the q / k / pool_query ones go through 1/p̄, issue #4)."""
    import dash_flex.attention as attention

    B, Hq, Hkv, S, D, bs = 1, 8, 2, 6144, 128, 64
    g = torch.Generator(device="cuda").manual_seed(4)
    q, k, v = ((2 * torch.randn(B, h, S, D, device="cuda", generator=g)).to(torch.bfloat16) for h in (Hq, Hkv, Hkv))
    u = torch.randn(Hkv, D, device="cuda", generator=g)
    grad_out = torch.randn(B, Hq, S, D, device="cuda", generator=g).to(torch.bfloat16)

    def step():
        leaves = [t.clone().requires_grad_() for t in (q, k, v, u)]
        out = dash_attention(*leaves[:3], pool_query=leaves[3], block_size=bs, sigma=sigma, fine_stage="fused")
        return out, torch.autograd.grad(out, leaves, grad_out, allow_unused=True)

    whole, whole_grads = step()
    per_row = B * Hkv * (S // bs) * attention.TRAINING_BYTES_PER_ENTRY
    monkeypatch.setattr(attention, "TRAINING_CHUNK_BYTES", int(per_row * S / 3) + 1)
    chunked, grads = step()
    assert rel_err(chunked, whole) <= 5e-3
    names = ("q", "k", "v") if sigma == math.inf else ("v",)
    for name, a, b in zip("q k v pool_query".split(), grads, whole_grads):
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.isfinite(a).all(), name
            if name in names:
                assert rel_err(a, b) <= 5e-3, f"{name}: {rel_err(a, b):.2e}"
