"""``dash_flex::decode_selection`` and ``dash_flex::sparse_decode``: schemas, fake kernels; torch on
CPU / float64, Triton on CUDA.

Opaque custom ops (like ``dash_flex::log_prior``): the CUDA branches launch their Triton kernels
directly, which keeps them usable inside compiled graphs and CUDA graphs. Inference only (no
autograd formula): the KV cache path. A decode step is these two ops, four kernel launches:
scores, selection (entmax, prior, compact block list), split-KV attention, split merge.
"""

from __future__ import annotations

import torch

from .torch_impl import compact_block_list, decode_selection_torch, sparse_decode_torch

__all__ = ["compact_block_list", "decode_selection", "sparse_decode"]


def _use_triton(query: torch.Tensor) -> bool:
    return query.device.type == "cuda" and query.dtype != torch.float64


@torch.library.custom_op("dash_flex::decode_selection", mutates_args=())
def decode_selection(
    query: torch.Tensor,
    summaries: torch.Tensor,
    lengths: torch.Tensor,
    num_new: torch.Tensor | None,
    alpha: float,
    selection_scale: float,
    inv_sigma: float,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decode coarse stage for ``query [B, Hq, D]`` (one query per sequence, the row appended
    last) over the block summaries ``[B, Hkv, nb, D]`` of a cache holding ``lengths [B]`` tokens:
    ``(active [B, Hkv, nb] bool, prior [B, Hkv, nb] float32, block_list [B, Hkv, nb] int32,
    count [B, Hkv] int32, pos [B] int64)``. See torch_impl for the math. On CUDA, rows longer
    than ``selection_kernels.MAX_DECODE_BLOCKS`` blocks run the torch definition."""
    args = (query, summaries, lengths, num_new, alpha, selection_scale, inv_sigma, block_size)
    if _use_triton(query):
        from .selection_kernels import MAX_DECODE_BLOCKS, decode_selection_launch

        if summaries.shape[2] <= MAX_DECODE_BLOCKS:
            return decode_selection_launch(*args)
    active, prior, block_list, count, pos = decode_selection_torch(*args)
    return active, prior.float() if query.dtype != torch.float64 else prior, block_list, count, pos


@decode_selection.register_fake
def _(query, summaries, lengths, num_new, alpha, selection_scale, inv_sigma, block_size):
    B, Hkv, nb = summaries.shape[:3]
    acc = torch.float64 if query.dtype == torch.float64 else torch.float32
    return (
        query.new_empty(B, Hkv, nb, dtype=torch.bool),
        query.new_empty(B, Hkv, nb, dtype=acc),
        query.new_empty(B, Hkv, nb, dtype=torch.int32),
        query.new_empty(B, Hkv, dtype=torch.int32),
        query.new_empty(B, dtype=torch.int64),
    )


@torch.library.custom_op("dash_flex::sparse_decode", mutates_args=())
def sparse_decode(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    block_list: torch.Tensor,
    count: torch.Tensor,
    prior: torch.Tensor,
    pos: torch.Tensor,
    scale: float,
    block_size: int,
) -> torch.Tensor:
    """Attention of ``query [B, Hq, D]`` (one query per sequence, at position ``pos [B]``; −1 =
    none) over ``key / value [B, Hkv, N, ·]``, restricted to the first ``count [B, Hkv]`` blocks
    of ``block_list [B, Hkv, nb]`` (int32) and keys ``≤ pos``, with ``prior [B, Hkv, nb]``
    added per block: what ``decode_selection`` returns. See torch_impl."""
    if not _use_triton(query):
        return sparse_decode_torch(query, key, value, block_list, count, prior, pos, scale, block_size)
    from .triton_kernels import num_splits, sparse_decode_launch

    B, Hkv, nb = block_list.shape
    n_splits = num_splits(B * Hkv, nb)
    # the kernel indexes the list, count, prior and positions as contiguous tensors
    block_list, count, pos = block_list.contiguous(), count.contiguous(), pos.contiguous()
    prior = prior.float().contiguous()
    return sparse_decode_launch(query, key, value, block_list, count, prior, pos, scale, block_size, n_splits)


@sparse_decode.register_fake
def _(query, key, value, block_list, count, prior, pos, scale, block_size):
    return query.new_empty(query.shape[0], query.shape[1], value.shape[-1])
