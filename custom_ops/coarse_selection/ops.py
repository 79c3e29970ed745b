"""``dash_flex::coarse_selection`` (+ ``_backward``): schema, fake kernel, autograd; torch on CPU /
float64, two Triton kernels on CUDA (split_kernels.py). Opaque, like the other selection ops: FlexAttention
reads its outputs as captured buffers in the same graph. ``dash_flex::coarse_selection_rows``: the
same stage for inference, as rows only (no block-major prior or flags; no autograd).
"""

from __future__ import annotations

import torch

from ..selection.torch_impl import log_prior_backward_torch
from .torch_impl import (
    block_classes,
    coarse_selection_backward_torch,
    coarse_selection_rows_torch,
    coarse_selection_torch,
)


def _use_triton(query: torch.Tensor) -> bool:
    return query.device.type == "cuda" and query.dtype != torch.float64


@torch.library.custom_op("dash_flex::coarse_selection", mutates_args=())
def coarse_selection(
    query: torch.Tensor,
    k_bar: torch.Tensor,
    alpha: float,
    selection_scale: float,
    inv_sigma: float,
    causal: bool,
    kv_len: int,
    block_size: int,
    sq_pad: int,
    nb_pad: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The coarse stage without a user mask, GQA-shared (see torch_impl for the math):
    ``(probs [B, Hkv, Sq, nb] float32, prior [B, Hkv, nb_pad, Sq_pad] float32, active [B, Hkv,
    nb_pad, Sq_pad] bool)``. Differentiable in ``query`` and ``k_bar`` through probs and prior."""
    args = (query, k_bar, alpha, selection_scale, inv_sigma, causal, kv_len, block_size, sq_pad, nb_pad)
    if not _use_triton(query):
        return coarse_selection_torch(*args)
    from .split_kernels import coarse_selection_split_launch

    return coarse_selection_split_launch(*args)


@coarse_selection.register_fake
def _(query, k_bar, alpha, selection_scale, inv_sigma, causal, kv_len, block_size, sq_pad, nb_pad):
    B, _, Sq, _ = query.shape
    Hkv, nb = k_bar.shape[1], k_bar.shape[2]
    acc = torch.float64 if query.dtype == torch.float64 else torch.float32
    return (
        query.new_empty(B, Hkv, Sq, nb, dtype=acc),
        query.new_empty(B, Hkv, nb_pad, sq_pad, dtype=acc),
        query.new_empty(B, Hkv, nb_pad, sq_pad, dtype=torch.bool),
    )


@torch.library.custom_op("dash_flex::coarse_selection_backward", mutates_args=())
def coarse_selection_backward(
    grad_probs: torch.Tensor | None,
    grad_prior: torch.Tensor | None,
    probs: torch.Tensor,
    query: torch.Tensor,
    k_bar: torch.Tensor,
    alpha: float,
    selection_scale: float,
    inv_sigma: float,
    causal: bool,
    kv_len: int,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dq, dk̄)`` given the gradients of the two differentiable outputs (``grad_probs`` of
    ``probs``, ``grad_prior`` of the block-major prior; either may be None) and the saved ``probs``:
    ``∂L/∂p̄ = grad_probs + log_prior_backward(grad_prior)``, then the per-head scores and entmax
    are recomputed (nothing per head is saved by the forward)."""
    if _use_triton(query):
        from .split_kernels import coarse_selection_backward_split

        return coarse_selection_backward_split(
            grad_probs, grad_prior, probs, query, k_bar, alpha, selection_scale, inv_sigma, causal, kv_len, block_size
        )
    g = torch.zeros_like(probs) if grad_probs is None else grad_probs.to(probs.dtype)
    if grad_prior is not None:
        g = g + log_prior_backward_torch(grad_prior, probs, inv_sigma)
    eligible, _ = block_classes(query.shape[2], kv_len, block_size, causal, query.device)
    return coarse_selection_backward_torch(g, query, k_bar, alpha, selection_scale, eligible)


@coarse_selection_backward.register_fake
def _(grad_probs, grad_prior, probs, query, k_bar, alpha, selection_scale, inv_sigma, causal, kv_len, block_size):
    contiguous = torch.contiguous_format
    return torch.empty_like(query, memory_format=contiguous), torch.empty_like(k_bar, memory_format=contiguous)


def _setup_context(ctx, inputs, output):
    query, k_bar, alpha, selection_scale, inv_sigma, causal, kv_len, block_size, _, _ = inputs
    probs = output[0]
    ctx.save_for_backward(query, k_bar, probs)
    ctx.args = (alpha, selection_scale, inv_sigma, causal, kv_len, block_size)


def _backward(ctx, grad_probs, grad_prior, _grad_active):
    query, k_bar, probs = ctx.saved_tensors
    dq, dk_bar = coarse_selection_backward(grad_probs, grad_prior, probs, query, k_bar, *ctx.args)
    return dq, dk_bar, None, None, None, None, None, None, None, None


coarse_selection.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("dash_flex::coarse_selection_rows", mutates_args=())
def coarse_selection_rows(
    query: torch.Tensor,
    k_bar: torch.Tensor,
    alpha: float,
    selection_scale: float,
    causal: bool,
    kv_len: int,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The coarse stage for inference (see torch_impl): ``(probs [B, Hkv, Sq, nb], mean_log [B,
    Hkv, Sq])``, p̄ row-major and each row's mean ``log p̄`` over its support, which
    ``dash_flex::sparse_attention_rows`` reads directly. Skips :func:`coarse_selection`'s
    block-major prior and flags (a bandwidth-bound pass, ~0.29 ms at 32K on the H200), and on
    CUDA solves some register rows in two tiles (``split_kernels.inference_row_split``) and in
    taller score chunks (``ROWS_Z_BUDGET_BYTES``), and at α = 1.5 takes all Newton steps but the
    last on float16 pairs (the last and the exact step that ends the solve in float32), so p̄
    equals :func:`coarse_selection`'s within the solver's float32 floor, not bit for bit: a block
    at the threshold may enter or leave the support. No
    autograd: with gradients, use :func:`coarse_selection`.

    Causal, on CUDA: a row's entries after its own block are 0 up to at least the own block of the
    last row of its aligned 128-row group (``split_kernels.ROWS_CHUNK_MULTIPLE``) and *unspecified*
    past that (the launch writes each score chunk's causal reach and does not zero-fill the rest:
    ~0.8 ms at 128K on the H100). The fine stage's list builder reads a query tile's rows up to the
    tile's reach, which lies within; any other reader must stop at each row's own block."""
    args = (query, k_bar, alpha, selection_scale, causal, kv_len, block_size)
    if not _use_triton(query):
        return coarse_selection_rows_torch(*args)
    from .split_kernels import ROWS_Z_BUDGET_BYTES, coarse_selection_rows_launch

    return coarse_selection_rows_launch(*args, z_budget=ROWS_Z_BUDGET_BYTES, tails=True, zero_fill=False,
                                        half_newton=True, heavy_first=True)  # fmt: skip


@coarse_selection_rows.register_fake
def _(query, k_bar, alpha, selection_scale, causal, kv_len, block_size):
    B, _, Sq, _ = query.shape
    Hkv, nb = k_bar.shape[1], k_bar.shape[2]
    acc = torch.float64 if query.dtype == torch.float64 else torch.float32
    return query.new_empty(B, Hkv, Sq, nb, dtype=acc), query.new_empty(B, Hkv, Sq, dtype=acc)


def _rows_backward(ctx, grad_probs, grad_mean_log):
    raise RuntimeError(
        "dash_flex::coarse_selection_rows is inference-only (no backward): use dash_flex::coarse_selection "
        "when gradients are needed (dash_attention does so by itself)"
    )


coarse_selection_rows.register_autograd(_rows_backward)
