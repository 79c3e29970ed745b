"""Plain-torch log-prior and selection tables (CPU path; the formulas the kernels follow).

Log-prior, for the selected blocks ``S_t = {c : p̄_{t,c} > 0}`` of query ``t``:

    b_{t,c} = (log p̄_{t,c} − mean_{c'∈S_t} log p̄_{t,c'}) · inv_sigma      (0 off S_t)

stored transposed and padded, ``[B, H, nb_pad, Sq_pad]`` (query index contiguous). Backward:
centring is an orthogonal projection, so ``∂L/∂log p̄ = inv_sigma (g − mean_{S_t} g)`` on
``S_t``, and ``∂L/∂p̄ = (∂L/∂log p̄) / p̄`` there, 0 elsewhere.
"""

from __future__ import annotations

import torch

TILE = 128  # BlockMask tile, queries × keys


def _log_support(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p̄ > 0, log p̄ there and 0 elsewhere)``."""
    selected = probs > 0
    return selected, torch.log(torch.where(selected, probs, torch.ones_like(probs)))


def mean_log_support(probs: torch.Tensor) -> torch.Tensor:
    """``[B, H, Sq]``: each row's mean of ``log p̄`` over its support ``S_t`` (0 for an empty row)."""
    selected, log_p = _log_support(probs)
    return log_p.sum(-1) / selected.sum(-1).clamp(min=1)


def centred_log_prior(probs: torch.Tensor, mean_log: torch.Tensor, inv_sigma: float) -> torch.Tensor:
    """``b [B, H, Sq, nb]`` (row-major) of ``probs`` given its rows' ``mean_log`` (see above)."""
    selected, log_p = _log_support(probs)
    return torch.where(selected, (log_p - mean_log[..., None]) * inv_sigma, torch.zeros_like(probs))


def log_prior_torch(probs: torch.Tensor, inv_sigma: float, sq_pad: int, nb_pad: int) -> torch.Tensor:
    B, H, Sq, nb = probs.shape
    p = probs.double() if probs.dtype == torch.float64 else probs.float()  # float64 kept for gradcheck
    prior = centred_log_prior(p, mean_log_support(p), inv_sigma)
    return torch.nn.functional.pad(prior.transpose(2, 3), (0, sq_pad - Sq, 0, nb_pad - nb)).contiguous()


def log_prior_backward_torch(grad_t: torch.Tensor, probs: torch.Tensor, inv_sigma: float) -> torch.Tensor:
    B, H, Sq, nb = probs.shape
    g = grad_t[:, :, :nb, :Sq].transpose(2, 3).to(torch.promote_types(grad_t.dtype, torch.float32))
    p = probs.to(g.dtype)
    selected = p > 0
    n_sel = selected.sum(-1, keepdim=True).clamp(min=1)
    g_sel = torch.where(selected, g, torch.zeros_like(g))
    d_log = inv_sigma * (g_sel - g_sel.sum(-1, keepdim=True) / n_sel)
    return torch.where(selected, d_log / torch.where(selected, p, torch.ones_like(p)), torch.zeros_like(p)).to(
        probs.dtype
    )


def selection_tables_torch(
    probs: torch.Tensor,
    forced: torch.Tensor,
    heads_act: int,
    sq_pad: int,
    nb_pad: int,
    kv_len: int,
    block_size: int,
    q_heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``active_t [B, H_act, nb_pad, Sq_pad]`` (bool: selected or forced), and the BlockMask tables
    ``kv_num_blocks [B, Hq, n_qt]``, ``kv_indices [B, Hq, n_qt, n_kt]`` (int32).

    ``probs [B, H_sel, Sq, nb]``; ``forced`` broadcasts to ``[B, H_act, Sq, nb]``; ``H_act`` is a
    multiple of ``H_sel``. A 128×128 tile is listed when some query row of it has some active
    block overlapping its keys; active tiles come first, ascending (a stable partition by prefix
    sums: no ``nonzero``, no sort).
    """
    B, H_sel, Sq, nb = probs.shape
    selected = probs > 0
    if heads_act != H_sel:
        selected = selected.repeat_interleave(heads_act // H_sel, dim=1)
    active = selected | forced.expand(B, heads_act, Sq, nb)
    active_t = torch.nn.functional.pad(active.transpose(2, 3), (0, sq_pad - Sq, 0, nb_pad - nb)).contiguous()
    return (active_t, *block_tables_torch(active_t, kv_len, block_size, q_heads))


def any_in_row_groups(flags: torch.Tensor, group: int) -> torch.Tensor:
    """``flags [..., n·group]`` bool → ``[..., n]``: whether any of each ``group`` consecutive flags
    is set. When groups are whole 8-byte words, ORs the words (a few elementwise passes): torch's
    ``any`` over a short innermost dimension ran at ~175 GB/s on the H200 (0.7 ms per call at 32K)."""
    *lead, length = flags.shape
    # the word view needs whole, 8-byte-aligned words (a sliced tensor can start mid-word)
    if group % 8 or length % group or not flags.is_contiguous() or flags.storage_offset() % 8:
        return flags.reshape(*lead, length // group, group).any(-1)
    words = flags.view(torch.uint8).view(torch.int64).reshape(*lead, length // group, group // 8)
    acc = words[..., 0]
    for i in range(1, group // 8):
        acc = acc | words[..., i]
    return acc != 0


def block_tables_torch(
    active_t: torch.Tensor, kv_len: int, block_size: int, q_heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The BlockMask tables ``kv_num_blocks [B, Hq, n_qt]``, ``kv_indices [B, Hq, n_qt, n_kt]``
    (int32) of the active flags ``active_t [B, H_act, nb_pad, Sq_pad]`` (see above)."""
    B, heads_act, nb_pad, sq_pad = active_t.shape
    n_kt = -(-kv_len // TILE)
    rows_any = any_in_row_groups(active_t, TILE)  # [B, H_act, nb_pad, n_qt]
    c = torch.arange(nb_pad, device=active_t.device)
    j = torch.arange(n_kt, device=active_t.device)
    overlap = (c[:, None] * block_size < (j[None, :] + 1) * TILE) & ((c[:, None] + 1) * block_size > j[None, :] * TILE)
    tiles = torch.einsum("bhcq,ck->bhqk", rows_any.float(), overlap.float()) > 0  # [B, H_act, n_qt, n_kt]
    if q_heads != heads_act:
        tiles = tiles.repeat_interleave(q_heads // heads_act, dim=1)
    kv_num_blocks = tiles.sum(-1, dtype=torch.int32)
    n_active = tiles.cumsum(-1)
    n_inactive = (~tiles).cumsum(-1)
    slot = torch.where(tiles, n_active - 1, kv_num_blocks.unsqueeze(-1) + n_inactive - 1)
    order = torch.arange(n_kt, device=active_t.device, dtype=torch.int32).expand_as(slot)
    kv_indices = torch.empty_like(order).scatter_(-1, slot, order)
    return kv_num_blocks, kv_indices
