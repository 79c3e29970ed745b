"""``dash_flex::log_prior`` (differentiable; Triton on CUDA) and ``dash_flex::selection_tables``.

Opaque operators also make their outputs real buffers in Inductor: the CPU FlexAttention
template cannot read a captured tensor that is still an unrealised pointwise expression
(``NotImplementedError: Pointwise`` → ``NoValidChoicesError``, torch 2.13), which is what the
prior and the active flags were when computed inline (a ``triton_op``'s torch body is traced
into the graph, so it would not help on the CPU).
"""

from __future__ import annotations

import torch

from .torch_impl import TILE, block_tables_torch, log_prior_backward_torch, log_prior_torch, selection_tables_torch


@torch.library.custom_op("dash_flex::log_prior", mutates_args=())
def _log_prior(probs: torch.Tensor, inv_sigma: float, sq_pad: int, nb_pad: int) -> torch.Tensor:
    """Opaque on purpose: FlexAttention reads this output as a captured buffer in the same graph.
    As a ``triton_op`` (kernel inlined into the graph through ``wrap_triton``) the compiled CUDA
    graph produced NaN outputs (torch 2.11, H100) while the same values returned from the graph
    were correct; as an opaque op the output is a plain buffer on both devices."""
    if probs.device.type != "cuda" or probs.dtype == torch.float64:
        return log_prior_torch(probs, inv_sigma, sq_pad, nb_pad)
    from .triton_kernels import log_prior_launch

    B, H = probs.shape[:2]
    out = torch.empty(B, H, nb_pad, sq_pad, device=probs.device, dtype=torch.float32)
    return log_prior_launch(probs.contiguous(), inv_sigma, out)


def _prior_dtype(probs: torch.Tensor) -> torch.dtype:
    return torch.float64 if probs.dtype == torch.float64 else torch.float32


@_log_prior.register_fake
def _(probs, inv_sigma, sq_pad, nb_pad):
    return probs.new_empty(probs.shape[0], probs.shape[1], nb_pad, sq_pad, dtype=_prior_dtype(probs))


@torch.library.custom_op("dash_flex::log_prior_backward", mutates_args=())
def _log_prior_backward(grad: torch.Tensor, probs: torch.Tensor, inv_sigma: float) -> torch.Tensor:
    return log_prior_backward_torch(grad, probs, inv_sigma).contiguous()


@_log_prior_backward.register_fake
def _(grad, probs, inv_sigma):
    return probs.new_empty(probs.shape)


def _setup_context(ctx, inputs, output):
    probs, inv_sigma, _, _ = inputs
    ctx.save_for_backward(probs)
    ctx.inv_sigma = inv_sigma


def _backward(ctx, grad):
    (probs,) = ctx.saved_tensors
    return _log_prior_backward(grad.contiguous(), probs, ctx.inv_sigma), None, None, None


_log_prior.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("dash_flex::selection_tables", mutates_args=())
def _selection_tables(
    probs: torch.Tensor,
    forced: torch.Tensor,
    heads_act: int,
    sq_pad: int,
    nb_pad: int,
    kv_len: int,
    block_size: int,
    q_heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return selection_tables_torch(probs, forced, heads_act, sq_pad, nb_pad, kv_len, block_size, q_heads)


@_selection_tables.register_fake
def _(probs, forced, heads_act, sq_pad, nb_pad, kv_len, block_size, q_heads):
    B = probs.shape[0]
    n_qt, n_kt = sq_pad // TILE, -(-kv_len // TILE)
    active_t = probs.new_empty(B, heads_act, nb_pad, sq_pad, dtype=torch.bool)
    kv_num = probs.new_empty(B, q_heads, n_qt, dtype=torch.int32)
    kv_idx = probs.new_empty(B, q_heads, n_qt, n_kt, dtype=torch.int32)
    return active_t, kv_num, kv_idx


@torch.library.custom_op("dash_flex::block_tables", mutates_args=())
def _block_tables(
    active_t: torch.Tensor, kv_len: int, block_size: int, q_heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    return block_tables_torch(active_t, kv_len, block_size, q_heads)


@_block_tables.register_fake
def _(active_t, kv_len, block_size, q_heads):
    B, n_qt, n_kt = active_t.shape[0], active_t.shape[3] // TILE, -(-kv_len // TILE)
    return active_t.new_empty(B, q_heads, n_qt, dtype=torch.int32), active_t.new_empty(
        B, q_heads, n_qt, n_kt, dtype=torch.int32
    )


def block_tables(active_t: torch.Tensor, kv_len: int, block_size: int, q_heads: int):
    """``(kv_num_blocks, kv_indices)`` of ``active_t [B, H_act, nb_pad, Sq_pad]``; see
    ``torch_impl.block_tables_torch``."""
    return torch.ops.dash_flex.block_tables(active_t, kv_len, block_size, q_heads)


def log_prior(probs: torch.Tensor, sigma: float, sq_pad: int, nb_pad: int) -> torch.Tensor:
    """Centred log-prior ``[B, H, nb_pad, Sq_pad]`` of ``probs [B, H, Sq, nb]`` (see torch_impl).

    Float32, or float64 for float64 probabilities."""
    return torch.ops.dash_flex.log_prior(probs, 1.0 / sigma, sq_pad, nb_pad)


def selection_tables(
    probs, forced, heads_act: int, sq_pad: int, nb_pad: int, kv_len: int, block_size: int, q_heads: int
):
    """``(active_t, kv_num_blocks, kv_indices)``; see ``torch_impl.selection_tables_torch``."""
    return torch.ops.dash_flex.selection_tables(
        probs, forced.contiguous(), heads_act, sq_pad, nb_pad, kv_len, block_size, q_heads
    )
