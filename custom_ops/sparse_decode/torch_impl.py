"""Plain-torch definitions of the decode path: the Triton kernels are tested against these.

**Selection** (``decode_selection_torch``), one query per sequence ``b`` at position
``pos_b = len_b − n_b`` (``n_b`` = rows appended last, 1 by default; ``pos_b = −1`` when
``n_b = 0``: a padding row), KV head ``h`` with query heads ``h·G + g``, block ``c``::

    eligible_c = c < pos_b // bs               (complete past blocks; nothing when pos_b = −1)
    z_{g,c}    = selection_scale · q_g·k̄_c / √D      over eligible c
    p̄_c        = mean_g α-entmax(z_g)_c
    prior_c    = (log p̄_c − mean_{c'∈S} log p̄_{c'}) · inv_sigma   on S = {p̄ > 0}, else 0
    active_c   = p̄_c > 0  or  c == pos_b // bs  (the own block is forced)

plus the compact list of the active blocks (in order, zero-filled after ``count``).

**Fine stage** (``sparse_decode_torch``), for each query head ``g`` of KV head ``h``::

    s_i = scale · q·k_i + prior[b, h, i // bs]      for keys i ≤ pos_b in a listed block
    out = Σ_i softmax(s)_i · v_i                     (zeros when no key qualifies, e.g. pos_b = −1)

Dense over the cache (O(N) per query): for the CPU and float64; CUDA runs the Triton kernels.
"""

from __future__ import annotations

import torch

from ..coarse_selection.torch_impl import coarse_scores
from ..entmax.ops import entmax_forward


def compact_block_list(active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``active [B, H, nb]`` bool → (``list [B, H, nb]`` int32 with each row's active block
    indices first, in order, zeros after; ``count [B, H]`` int32). No host sync: a prefix sum
    and a scatter (inactive blocks go to a spare slot that is cut off)."""
    nb = active.shape[-1]
    slot = torch.cumsum(active.to(torch.int32), dim=-1) - 1
    slot = torch.where(active, slot, torch.full_like(slot, nb))
    blocks = torch.arange(nb, device=active.device, dtype=torch.int32).expand_as(slot)
    table = torch.zeros(*active.shape[:-1], nb + 1, device=active.device, dtype=torch.int32)
    table.scatter_(-1, slot.to(torch.int64), blocks)
    return table[..., :nb].contiguous(), active.sum(-1, dtype=torch.int32)


def listed_blocks(block_list: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`compact_block_list`: ``active [B, H, nb]`` bool."""
    nb = block_list.shape[-1]
    listed = torch.arange(nb, device=block_list.device) < count[..., None]
    active = torch.zeros(*block_list.shape, dtype=torch.int32, device=block_list.device)
    active.scatter_add_(-1, block_list.to(torch.int64), listed.to(torch.int32))
    return active > 0


def query_positions(lengths: torch.Tensor, num_new: torch.Tensor | None, q_len: int, q_pad: int) -> torch.Tensor:
    """``[B, q_pad]`` int64: ``len_b − n_b + t`` for the rows ``t < n_b`` appended last (``n_b``:
    ``num_new``, or ``q_len`` for every sequence), else −1. The positions of a cache's new rows."""
    t = torch.arange(q_pad, device=lengths.device)
    n = torch.full_like(lengths, q_len) if num_new is None else num_new.to(torch.int64)
    return torch.where(t < n[:, None], lengths[:, None] - n[:, None] + t, torch.full_like(t, -1))


def decode_positions(lengths: torch.Tensor, num_new: torch.Tensor | None) -> torch.Tensor:
    """``pos [B]`` int64: ``len_b − n_b`` (the first row appended last), −1 where ``n_b = 0``."""
    return query_positions(lengths, num_new, 1, 1)[:, 0]


def decode_selection_torch(
    query: torch.Tensor,
    summaries: torch.Tensor,
    lengths: torch.Tensor,
    num_new: torch.Tensor | None,
    alpha: float,
    selection_scale: float,
    inv_sigma: float,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(active [B, Hkv, nb] bool, prior [B, Hkv, nb] float32 (float64 for float64), block_list
    [B, Hkv, nb] int32, count [B, Hkv] int32, pos [B] int64)`` for ``query [B, Hq, D]``."""
    nb = summaries.shape[2]
    pos = decode_positions(lengths, num_new)
    own = torch.where(pos >= 0, pos // block_size, torch.full_like(pos, -1))[:, None]  # [B, 1]
    c = torch.arange(nb, device=query.device)
    eligible = (c < own)[:, None, None, None, :]  # [B, 1, 1, 1, nb]: shared by the group's heads
    z = coarse_scores(query[:, :, None], summaries, selection_scale, eligible)  # [B, Hkv, G, 1, nb]
    p = entmax_forward(z, alpha).mean(2)[:, :, 0]  # [B, Hkv, nb]
    selected = p > 0
    log_p = torch.log(torch.where(selected, p, torch.ones_like(p)))
    mean = log_p.sum(-1, keepdim=True) / selected.sum(-1, keepdim=True).clamp(min=1)
    prior = torch.where(selected, (log_p - mean) * inv_sigma, torch.zeros_like(p))
    active = selected | (c == own)[:, None, :]
    block_list, count = compact_block_list(active)
    return active, prior, block_list, count, pos


def sparse_decode_torch(
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
    B, Hq, D = query.shape
    Hkv, N = key.shape[1], key.shape[2]
    G = Hq // Hkv
    active = listed_blocks(block_list, count)
    acc_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    q = query.to(acc_dtype).view(B, Hkv, G, D)
    scores = scale * torch.einsum("bhgd,bhnd->bhgn", q, key.to(acc_dtype))
    block_of_key = torch.arange(N, device=key.device) // block_size
    scores = scores + prior.to(acc_dtype)[..., block_of_key][:, :, None, :]
    allowed = active[..., block_of_key] & (torch.arange(N, device=key.device) <= pos[:, None, None])
    scores = scores.masked_fill(~allowed[:, :, None, :], float("-inf"))
    row_max = scores.amax(-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = torch.exp(scores - row_max)
    denom = weights.sum(-1, keepdim=True)
    out = torch.einsum("bhgn,bhnd->bhgd", weights, value.to(acc_dtype))
    out = out / torch.where(denom > 0, denom, torch.ones_like(denom))
    return out.reshape(B, Hq, value.shape[-1]).to(query.dtype)
