"""``dash_flex::sparse_decode``: schema, fake kernel; torch on CPU / float64, Triton on CUDA.

An opaque custom op (like ``dash_flex::log_prior``): the CUDA branch builds the compact block
list with torch ops and launches the split-KV kernel directly, which keeps it usable inside
compiled graphs and CUDA graphs. Inference only (no autograd formula): the KV cache path.
"""

from __future__ import annotations

import torch

from .torch_impl import sparse_decode_torch


def compact_block_list(active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``active [B, H, nb]`` bool → (``list [B, H, nb]`` int32 with each row's active block
    indices first, in order; ``count [B, H]`` int32). No host sync: a prefix sum and a scatter
    (inactive blocks go to a spare slot that is cut off)."""
    nb = active.shape[-1]
    slot = torch.cumsum(active.to(torch.int32), dim=-1) - 1
    slot = torch.where(active, slot, torch.full_like(slot, nb))
    blocks = torch.arange(nb, device=active.device, dtype=torch.int32).expand_as(slot)
    table = torch.zeros(*active.shape[:-1], nb + 1, device=active.device, dtype=torch.int32)
    table.scatter_(-1, slot.to(torch.int64), blocks)
    return table[..., :nb].contiguous(), active.sum(-1, dtype=torch.int32)


@torch.library.custom_op("dash_flex::sparse_decode", mutates_args=())
def sparse_decode(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    active: torch.Tensor,
    prior: torch.Tensor,
    pos: torch.Tensor,
    scale: float,
    block_size: int,
) -> torch.Tensor:
    """Attention of ``query [B, Hq, D]`` (one query per sequence, at position ``pos [B]``; −1 =
    none) over ``key / value [B, Hkv, N, ·]``, restricted to the blocks with ``active [B, Hkv, nb]``
    and keys ``≤ pos``, with ``prior [B, Hkv, nb]`` (float32) added per block. See torch_impl."""
    if query.device.type != "cuda" or query.dtype == torch.float64:
        return sparse_decode_torch(query, key, value, active, prior, pos, scale, block_size)
    from .triton_kernels import num_splits, sparse_decode_launch

    block_list, count = compact_block_list(active)
    B, Hkv, nb = active.shape
    out = sparse_decode_launch(
        query, key, value, block_list, count, prior.float(), pos, scale, block_size, num_splits(B * Hkv, nb)
    )
    return out.to(query.dtype)


@sparse_decode.register_fake
def _(query, key, value, active, prior, pos, scale, block_size):
    return query.new_empty(query.shape[0], query.shape[1], value.shape[-1])
