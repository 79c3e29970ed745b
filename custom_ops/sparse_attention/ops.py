"""``dash_flex::sparse_attention_forward``: schema, fake kernel; torch on CPU / float64, Triton on
CUDA. Forward only (no autograd formula yet): the inference fine stage, and the building block
of the performance work (docs/benchmarks.md). An opaque op, like ``dash_flex::sparse_decode``.
"""

from __future__ import annotations

import torch

from ..sparse_decode.ops import compact_block_list
from .torch_impl import sparse_attention_forward_torch

BLOCK_M = 64  # query rows per program: a smaller union of kept blocks per tile than 128


def tile_block_lists(active: torch.Tensor, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``active [B, H, nb, Sq]`` bool → each ``block_m``-row query tile's kept blocks (the union
    over its rows): ``(list [B, H, n_tiles, nb]`` int32, blocks first; ``count [B, H, n_tiles])``."""
    B, H, nb, Sq = active.shape
    n_tiles = -(-Sq // block_m)
    padded = torch.nn.functional.pad(active, (0, n_tiles * block_m - Sq))
    tile_any = padded.reshape(B, H, nb, n_tiles, block_m).any(-1).transpose(2, 3)  # [B, H, n_tiles, nb]
    return compact_block_list(tile_any)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out [B, Hq, Sq, Dv], lse [B, Hq, Sq] float32)`` of softmax attention restricted to each
    query's kept + forced blocks (``active [B, H_act, nb, Sq]``) with the log-prior
    (``prior [B, H_sel, nb, Sq]``, float32) added per block; see torch_impl for the definition."""
    if query.device.type != "cuda" or query.dtype == torch.float64:
        return sparse_attention_forward_torch(query, key, value, prior, active, causal, scale, block_size, has_prior)
    from .triton_kernels import sparse_attention_launch

    block_list, count = tile_block_lists(active, BLOCK_M)
    return sparse_attention_launch(
        query, key, value, prior.float(), active, block_list, count, causal, scale, block_size, has_prior, BLOCK_M
    )


@sparse_attention_forward.register_fake
def _(query, key, value, prior, active, causal, scale, block_size, has_prior):
    B, Hq, Sq, _ = query.shape
    out = query.new_empty(B, Hq, Sq, value.shape[-1])
    return out, query.new_empty(B, Hq, Sq, dtype=torch.float32)
