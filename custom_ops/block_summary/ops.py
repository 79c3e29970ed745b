"""``dash_flex::block_summaries``: schema, fake kernel, autograd; torch on CPU, Triton on CUDA."""

from __future__ import annotations

import torch
from torch.library import triton_op, wrap_triton

from .torch_impl import block_summaries_backward_torch, block_summaries_torch, compute_dtype


@triton_op("dash_flex::block_summaries", mutates_args=())
def _block_summaries(key: torch.Tensor, pool_query: torch.Tensor | None, block_size: int) -> torch.Tensor:
    if key.device.type != "cuda" or key.dtype == torch.float64:
        return block_summaries_torch(key, pool_query, block_size)
    from .triton_kernels import block_summaries_launch

    B, H, S, D = key.shape
    out = torch.empty(B, H, -(-S // block_size), D, device=key.device, dtype=torch.float32)
    return block_summaries_launch(key, pool_query, block_size, out, launcher=wrap_triton)


@_block_summaries.register_fake
def _(key, pool_query, block_size):
    B, H, S, D = key.shape
    return key.new_empty(B, H, -(-S // block_size), D, dtype=compute_dtype(key))


@torch.library.custom_op("dash_flex::block_summaries_backward", mutates_args=())
def _block_summaries_backward(
    grad: torch.Tensor, key: torch.Tensor, pool_query: torch.Tensor | None, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    grad_k, grad_u = block_summaries_backward_torch(grad, key, pool_query, block_size)
    # A custom op cannot return None: with no pooling vector the second output is empty.
    # Contiguous whatever the input strides, as the fake kernel promises.
    return grad_k.contiguous(), grad_u.contiguous() if grad_u is not None else grad.new_empty(0)


@_block_summaries_backward.register_fake
def _(grad, key, pool_query, block_size):
    # The real kernel returns fresh contiguous tensors whatever the input strides.
    grad_u = pool_query.new_empty(pool_query.shape) if pool_query is not None else grad.new_empty(0)
    return key.new_empty(key.shape), grad_u


def _setup_context(ctx, inputs, output):
    key, pool_query, block_size = inputs
    ctx.save_for_backward(key, pool_query)
    ctx.block_size = block_size


def _backward(ctx, grad):
    key, pool_query = ctx.saved_tensors
    grad_k, grad_u = _block_summaries_backward(grad.contiguous(), key, pool_query, ctx.block_size)
    return grad_k, (grad_u if pool_query is not None else None), None


_block_summaries.register_autograd(_backward, setup_context=_setup_context)


def block_summaries(key: torch.Tensor, pool_query: torch.Tensor | None, block_size: int) -> torch.Tensor:
    """Summaries ``[B, H, ceil(S / block_size), D]`` of ``key [B, H, S, D]`` (see torch_impl).

    Float32, or float64 for float64 keys."""
    return torch.ops.dash_flex.block_summaries(key, pool_query, block_size)
