"""``dash_flex::sparse_attention_forward`` / ``_backward``: schemas, fake kernels, autograd; torch
on CPU / float64, Triton on CUDA. Opaque ops, like ``dash_flex::sparse_decode``: the CUDA
branches build the work lists (list_kernels.py; :func:`tile_block_lists` and
:func:`block_tile_lists` below are their torch definitions) and launch the kernels directly.
``dash_flex::sparse_attention_rows``: the forward for inference, from the selection as rows.
"""

from __future__ import annotations

import torch

from ..selection.torch_impl import any_in_row_groups
from ..sparse_decode.ops import compact_block_list
from .torch_impl import (
    check_out,
    sparse_attention_backward_torch,
    sparse_attention_forward_torch,
    sparse_attention_rows_torch,
)

BACKWARD_ROWS = 64  # backward: query rows per program, over the packed heads (a smaller union than 128)
# Forward launch, from sweeps at 32K on the H200 (scripts/profile_stages.py --sweep, docs/benchmarks.md).
# Session 5's kernel (log2 units, masks only on diagonal blocks): 4 heads × 32 rows 5.81 ms, × 16
# rows 6.55, × 64 rows (8 warps) 6.13. Session 4's: × 16 rows 7.2 ms, × 32 rows 7.5, one head ×
# 128 rows 9.2, × 64 rows 10.0. Two pipeline stages and 4 warps (three stages: 6.78 ms).
# Session 11's kernel (row max on the raw products; scripts/probe_fine_variants.py): 4 heads × 32
# rows 5.41 ms; at 8 warps 7.48; three stages 8.28; block pairs (branch wip/key-pairs) 7.48–9.52.
FORWARD_ROWS_PACKED, FORWARD_ROWS_SINGLE, FORWARD_WARPS, FORWARD_STAGES = 32, 128, 4, 2
# The inference fine kernel: "triton" (triton_kernels.py) or a Gluon kernel for sm_90
# (gluon_forward.py: "gluon", the hand-pipelined loop; "gluon_ws", its warp-specialised form;
# "gluon_ws_pingpong", that form with its warpgroups' MMAs in turns; "gluon_ws_pairs", in turns
# two entries a step), taken where gluon_forward.supports says, else the Triton kernel.
# Run 107 (H100, session 23): every Gluon kernel 9–36% slower than the Triton one at 128K
# (best: gluon_ws, 73.8 against 66.1–69.0 ms; docs/benchmarks.md), so the default stays.
FINE_KERNEL = "triton"
# The inference coarse launch starts its score chunks at multiples of split_kernels.
# ROWS_CHUNK_MULTIPLE rows (a test checks that both tile heights divide it): it leaves p̄ past
# each chunk's causal reach unwritten, so each query tile of the list builder must lie in one chunk.


def forward_tiling(q_heads: int, kv_heads: int, sel_heads: int, act_heads: int) -> tuple[int, int]:
    """``(rows per head, heads packed per program)`` of the forward kernel: when the G query heads
    of a KV group share the selection (GQA sharing, no per-head mask), up to 8 of them share a
    program and each K/V block read; G must be a power of two for the packed tile."""
    G = q_heads // kv_heads
    shared = sel_heads == kv_heads and act_heads == kv_heads
    pack = G if shared and 1 < G <= 8 and G & (G - 1) == 0 else 1
    return (FORWARD_ROWS_PACKED if pack > 1 else FORWARD_ROWS_SINGLE), pack


def backward_tiling(q_heads: int, kv_heads: int, sel_heads: int, act_heads: int) -> tuple[int, int]:
    """``(rows per head, heads packed per program)`` of both backward kernels: up to 4 heads of a
    group that share the selection (as :func:`forward_tiling`), ``BACKWARD_ROWS`` rows in all."""
    pack = min(forward_tiling(q_heads, kv_heads, sel_heads, act_heads)[1], 4)
    return BACKWARD_ROWS // pack, pack


def check_in_slice_offsets(**tensors: torch.Tensor) -> None:
    """Raise unless every tensor's largest offset within one (batch, head) slice fits int32: the
    fine kernels form batch and head offsets in int64 but offsets inside a slice (row · stride,
    block · stride) in int32. The fused path's query chunks keep the selection far below this
    (a whole ``[nb, Sq]`` block-major prior passes it near 370K tokens with 64-token blocks)."""
    for name, t in tensors.items():
        reach = sum((size - 1) * stride for size, stride in zip(t.shape[2:], t.stride()[2:]) if size > 0)
        if reach >= 2**31:
            raise ValueError(
                f"sparse_attention: {name} {tuple(t.shape)} (strides {t.stride()}) spans {reach} elements per "
                "(batch, head) slice; the kernels' in-slice offsets are int32. From dash_attention: call it "
                "without return_selection (the fused path then runs in query chunks)."
            )


def _tiles_keeping_blocks(active: torch.Tensor, block_m: int) -> torch.Tensor:
    """``[B, H, n_tiles, nb]`` bool: does any row of the ``block_m``-row query tile keep block c."""
    Sq = active.shape[-1]
    n_tiles = -(-Sq // block_m)
    if n_tiles * block_m != Sq:
        active = torch.nn.functional.pad(active, (0, n_tiles * block_m - Sq))
    return any_in_row_groups(active, block_m).transpose(2, 3)


def tile_block_lists(active: torch.Tensor, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``active [B, H, nb, Sq]`` bool → each ``block_m``-row query tile's kept blocks (the union
    over its rows): ``(list [B, H, n_tiles, nb]`` int32, blocks first; ``count [B, H, n_tiles])``."""
    return compact_block_list(_tiles_keeping_blocks(active, block_m))


def block_tile_lists(active: torch.Tensor, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The transpose: for each key block, the query tiles that keep it (``[B, H, nb, n_tiles]``)."""
    return compact_block_list(_tiles_keeping_blocks(active, block_m).transpose(2, 3))


@torch.library.custom_op("dash_flex::sparse_attention_forward", mutates_args=())
def sparse_attention_forward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prior: torch.Tensor,
    active: torch.Tensor,
    causal: bool,
    scale: float,
    block_size: int,
    has_prior: bool,
    store_residual: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(out [B, Hq, Sq, Dv], out_residual, lse [B, Hq, Sq])`` (lse float32; float64 for float64
    inputs) of softmax attention restricted to each query's kept + forced blocks
    (``active [B, H_act, nb, Sq]``) with the log-prior (``prior [B, H_sel, nb, Sq]``, float32)
    added per block (see torch_impl). Differentiable in query, key, value and prior (not through
    lse / out_residual). ``store_residual=False`` (inference): ``out_residual`` is an empty tensor
    (the backward needs it, so this call then has none), saving an output-sized buffer."""
    if query.device.type != "cuda" or query.dtype == torch.float64:
        out, residual, lse = sparse_attention_forward_torch(
            query, key, value, prior, active, causal, scale, block_size, has_prior
        )
        return out, (residual if store_residual else residual.new_empty(0)), lse
    from .list_kernels import tile_block_lists_launch
    from .triton_kernels import sparse_attention_launch

    check_in_slice_offsets(query=query, key=key, value=value, prior=prior, active=active)
    rows, pack = forward_tiling(query.shape[1], key.shape[1], prior.shape[1], active.shape[1])
    block_list, count = tile_block_lists_launch(active, rows)
    return sparse_attention_launch(
        query, key, value, prior.float(), active, block_list, count, causal, scale, block_size, has_prior, rows,
        FORWARD_WARPS, FORWARD_STAGES, pack=pack, store_residual=store_residual,
    )  # fmt: skip


@sparse_attention_forward.register_fake
def _(query, key, value, prior, active, causal, scale, block_size, has_prior, store_residual=True):
    B, Hq, Sq, _ = query.shape
    out = query.new_empty(B, Hq, Sq, value.shape[-1])
    lse_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    residual = torch.empty_like(out) if store_residual else out.new_empty(0)
    return out, residual, query.new_empty(B, Hq, Sq, dtype=lse_dtype)


@torch.library.custom_op("dash_flex::sparse_attention_backward", mutates_args=())
def sparse_attention_backward(
    grad_out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prior: torch.Tensor,
    active: torch.Tensor,
    out: torch.Tensor,
    out_residual: torch.Tensor,
    lse: torch.Tensor,
    causal: bool,
    scale: float,
    block_size: int,
    has_prior: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv, dprior)``; dprior has the prior's shape and dtype (zeros when ``has_prior`` is
    False)."""
    args = (grad_out, query, key, value, prior, active, out, out_residual, lse, causal, scale, block_size, has_prior)
    if query.device.type != "cuda" or query.dtype == torch.float64:
        return sparse_attention_backward_torch(*args)
    from .list_kernels import block_tile_lists_launch, tile_block_lists_launch
    from .triton_backward import sparse_attention_backward_launch

    check_in_slice_offsets(grad_out=grad_out, query=query, key=key, value=value, prior=prior, active=active)
    rows, pack = backward_tiling(query.shape[1], key.shape[1], prior.shape[1], active.shape[1])
    tile_list, tile_count = tile_block_lists_launch(active, rows)
    block_list, block_count = block_tile_lists_launch(active, rows)
    return sparse_attention_backward_launch(
        grad_out.contiguous(), query, key, value, prior.float(), active, out, out_residual, lse,
        tile_list, tile_count, block_list, block_count, causal, scale, block_size, has_prior, rows, pack,
    )  # fmt: skip


@sparse_attention_backward.register_fake
def _(grad_out, query, key, value, prior, active, out, out_residual, lse, causal, scale, block_size, has_prior):
    return (
        torch.empty_like(query, memory_format=torch.contiguous_format),
        torch.empty_like(key, memory_format=torch.contiguous_format),
        torch.empty_like(value, memory_format=torch.contiguous_format),
        prior.new_empty(prior.shape),
    )


def _setup_context(ctx, inputs, output):
    query, key, value, prior, active, causal, scale, block_size, has_prior, _ = inputs
    out, out_residual, lse = output
    ctx.save_for_backward(query, key, value, prior, active, out, out_residual, lse)
    ctx.args = (causal, scale, block_size, has_prior)


def _backward(ctx, grad_out, _grad_residual, _grad_lse):
    query, key, value, prior, active, out, out_residual, lse = ctx.saved_tensors
    if out_residual.numel() != out.numel():
        raise RuntimeError(
            "dash_flex::sparse_attention_forward was called with store_residual=False, which keeps no "
            "residual for the backward: call it with store_residual=True when gradients are needed"
        )
    dq, dk, dv, dprior = sparse_attention_backward(
        grad_out, query, key, value, prior, active, out, out_residual, lse, *ctx.args
    )
    has_prior = ctx.args[3]
    return dq, dk, dv, (dprior.to(prior.dtype) if has_prior else None), None, None, None, None, None, None


sparse_attention_forward.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("dash_flex::sparse_attention_rows", mutates_args=())
def sparse_attention_rows(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    probs: torch.Tensor,
    mean_log: torch.Tensor,
    causal: bool,
    scale: float,
    block_size: int,
    inv_sigma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out [B, Hq, Sq, Dv], lse [B, Hq, Sq])``: :func:`sparse_attention_forward` for inference, on
    the selection as rows: ``probs [B, H_sel, Sq, nb]`` (p̄) and ``mean_log [B, H_sel, Sq]`` from
    ``dash_flex::coarse_selection_rows``. The prior ``(log p̄ − mean_log) · inv_sigma`` (none when
    ``inv_sigma == 0``) and the kept + forced flags (see torch_impl) are formed by the tile list
    builder, which stores each listed block's bias rows by list slot, so nothing block-major is
    written. No residual and no autograd: with gradients, use :func:`sparse_attention_forward`."""
    return _attend_rows(query, key, value, probs, mean_log, causal, scale, block_size, inv_sigma)


def _attend_rows(query, key, value, probs, mean_log, causal, scale, block_size, inv_sigma, out=None):
    """:func:`sparse_attention_rows`, its output written into ``out`` when given."""
    if query.device.type != "cuda" or query.dtype == torch.float64:
        _check_rows(query, key, probs, mean_log, block_size)
        if out is not None:
            check_out(out, query, value.shape[-1])
        result = sparse_attention_rows_torch(query, key, value, probs, mean_log, causal, scale, block_size, inv_sigma)
        if out is None:
            return result
        out.copy_(result[0])
        return out, result[1]
    lists = rows_tile_lists(query, key, value, probs, mean_log, causal, block_size, inv_sigma, out)
    return attend_tile_lists(query, key, value, lists, causal, scale, block_size, out)


def rows_tile_lists(query, key, value, probs, mean_log, causal, block_size, inv_sigma, out=None) -> tuple:
    """CUDA, the first half of :func:`sparse_attention_rows` (its argument checks included): the fine
    stage's tile lists and their bias rows from the p̄ rows (``(list, count, bias, rows, pack)``).
    The overlapped query chunks of ``dash_flex.attention`` build them on the selection's stream."""
    from .list_kernels import tile_lists_and_bias_from_rows_launch

    _check_rows(query, key, probs, mean_log, block_size)
    if out is not None:
        check_out(out, query, value.shape[-1])
    outs = {} if out is None else {"out": out}
    check_in_slice_offsets(query=query, key=key, value=value, **outs)  # p̄ and the bias rows: int64 offsets
    H_sel = probs.shape[1]
    rows, pack = forward_tiling(query.shape[1], key.shape[1], H_sel, H_sel)
    lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, inv_sigma, causal, key.shape[2], block_size, rows)
    return (*lists, rows, pack)


def attend_tile_lists(query, key, value, tile_lists, causal, scale, block_size, out=None):
    """CUDA, the second half of :func:`sparse_attention_rows`: the fine kernel (``FINE_KERNEL``) over
    :func:`rows_tile_lists`' lists; ``(out, lse)``."""
    from .triton_kernels import sparse_attention_rows_launch

    *lists, rows, pack = tile_lists
    if FINE_KERNEL != "triton":
        from . import gluon_forward

        launches = {"gluon": gluon_forward.sparse_attention_rows_gluon,
                    "gluon_ws": gluon_forward.sparse_attention_rows_gluon_ws,
                    "gluon_ws_pingpong": gluon_forward.sparse_attention_rows_gluon_ws_pingpong,
                    "gluon_ws_pairs": gluon_forward.sparse_attention_rows_gluon_ws_pairs}  # fmt: skip
        if FINE_KERNEL not in launches:
            raise ValueError(f"ops.FINE_KERNEL={FINE_KERNEL!r}: expected 'triton' or one of {sorted(launches)}")
        if gluon_forward.supports(query, key, value, *lists, causal, scale, block_size, rows, pack, out):
            return launches[FINE_KERNEL](query, key, value, *lists, causal, scale, block_size, rows, pack, out=out)
    return sparse_attention_rows_launch(
        query, key, value, *lists, causal, scale, block_size, rows, FORWARD_WARPS, FORWARD_STAGES, pack=pack, out=out
    )


@torch.library.custom_op("dash_flex::sparse_attention_rows_into", mutates_args=("out",))
def _sparse_attention_rows_into_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    probs: torch.Tensor,
    mean_log: torch.Tensor,
    out: torch.Tensor,
    causal: bool,
    scale: float,
    block_size: int,
    inv_sigma: float,
) -> torch.Tensor:
    return _attend_rows(query, key, value, probs, mean_log, causal, scale, block_size, inv_sigma, out)[1]


def sparse_attention_rows_into(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    probs: torch.Tensor,
    mean_log: torch.Tensor,
    out: torch.Tensor,
    causal: bool,
    scale: float,
    block_size: int,
    inv_sigma: float,
) -> torch.Tensor:
    """:func:`sparse_attention_rows` writing its output into ``out [B, Hq, Sq, Dv]`` (the query
    dtype, any strides) and returning ``lse``, through ``dash_flex::sparse_attention_rows_into``: a
    query chunk of a longer call writes its rows of the call's output in place (at 128K, 9 chunks,
    the strided copies of their outputs took ~1.3 ms on the H100). Inference only, like
    :func:`sparse_attention_rows`: an op that mutates an argument has no autograd formula, so a
    call that would want gradients (grad mode on and an input that requires grad) raises here,
    where grad mode is visible (inside the op it is always off), instead of giving an ``out`` that
    silently drops them."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value, out)):
        raise RuntimeError(
            "dash_flex::sparse_attention_rows_into is inference-only: call it under torch.no_grad() or on "
            "tensors that do not require grad (use dash_flex::sparse_attention_forward for gradients)"
        )
    return _sparse_attention_rows_into_op(query, key, value, probs, mean_log, out, causal, scale, block_size, inv_sigma)


@_sparse_attention_rows_into_op.register_fake
def _(query, key, value, probs, mean_log, out, causal, scale, block_size, inv_sigma):
    B, Hq, Sq, _ = query.shape
    return query.new_empty(B, Hq, Sq, dtype=torch.float64 if query.dtype == torch.float64 else torch.float32)


def _check_rows(query, key, probs, mean_log, block_size) -> None:
    """The rows' shapes against the attention's: ``[B, H_sel, Sq, ⌈Skv / block_size⌉]`` with
    ``H_sel`` dividing ``Hq``, and one mean per row."""
    B, Hq, Sq, _ = query.shape
    nb = -(-key.shape[2] // block_size)
    if probs.dim() != 4 or probs.shape[0] != B or probs.shape[2:] != (Sq, nb) or Hq % max(probs.shape[1], 1):
        raise ValueError(
            f"sparse_attention_rows: probs {tuple(probs.shape)} must be [B={B}, H_sel dividing Hq={Hq}, Sq={Sq}, "
            f"nb={nb}] (nb = ceil(kv_len / block_size))"
        )
    if tuple(mean_log.shape) != tuple(probs.shape[:3]):
        raise ValueError(f"sparse_attention_rows: mean_log {tuple(mean_log.shape)} must be {tuple(probs.shape[:3])}")


@sparse_attention_rows.register_fake
def _(query, key, value, probs, mean_log, causal, scale, block_size, inv_sigma):
    B, Hq, Sq, _ = query.shape
    lse_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    return query.new_empty(B, Hq, Sq, value.shape[-1]), query.new_empty(B, Hq, Sq, dtype=lse_dtype)


def _rows_backward(ctx, grad_out, grad_lse):
    raise RuntimeError(
        "dash_flex::sparse_attention_rows is inference-only (no backward): use dash_flex::sparse_attention_forward "
        "when gradients are needed (dash_attention does so by itself)"
    )


sparse_attention_rows.register_autograd(_rows_backward)
