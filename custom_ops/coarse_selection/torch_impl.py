"""Plain-torch definition of the fused coarse stage (the Triton kernel is tested against it).

For query ``t`` (absolute position ``a_t = t + Skv − Sq``), query head ``h`` in KV group
``h_kv = h // G`` and block ``c`` (no user mask: the SPEC §2 block classes reduce to)::

    eligible_{t,c} = c < a_t // bs   (causal)      or   always (not causal)
    forced_{t,c}   = c == a_t // bs  (causal)      or   never
    z_{h,t,c}      = selection_scale · q_{h,t}·k̄_{h_kv,c} / √D          over eligible c
    p̄_{t,c}        = mean_{h in group} α-entmax(z_{h,t})_c
    b_{t,c}        = (log p̄_{t,c} − mean_{c'∈S_t} log p̄_{t,c'}) · inv_sigma   on S_t = {p̄ > 0}, else 0
    active_{t,c}   = p̄_{t,c} > 0  or  forced_{t,c}

Outputs: ``probs [B, Hkv, Sq, nb]`` (float32), ``prior [B, Hkv, nb_pad, Sq_pad]`` (float32) and
``active [B, Hkv, nb_pad, Sq_pad]`` (bool), the last two block-major, query index contiguous,
zero-padded: exactly what ``dash_select`` builds from these pieces unfused.

The row-major form (``dash_flex::coarse_selection_rows``, inference): ``probs`` and each row's
``mean_log_t = mean_{c∈S_t} log p̄_{t,c}`` (0 when ``S_t`` is empty), from which
:func:`block_major_from_rows` gives ``b`` and ``active`` above.
"""

from __future__ import annotations

import math

import torch

from ..entmax.ops import entmax_backward, entmax_forward
from ..selection.torch_impl import centred_log_prior, log_prior_torch, mean_log_support

__all__ = [
    "block_classes",
    "block_major_from_rows",
    "coarse_scores",
    "coarse_selection_backward_torch",
    "coarse_selection_rows_torch",
    "coarse_selection_torch",
    "mean_log_support",
]


def block_classes(q_len: int, kv_len: int, block_size: int, causal: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eligible, forced)`` as ``[Sq, nb]`` bool, without a user mask."""
    nb = -(-kv_len // block_size)
    c = torch.arange(nb, device=device)
    if not causal:
        eligible = torch.ones(q_len, nb, dtype=torch.bool, device=device)
        return eligible, ~eligible
    own = ((torch.arange(q_len, device=device) + kv_len - q_len) // block_size)[:, None]
    return c[None, :] < own, c[None, :] == own


def coarse_scores(query: torch.Tensor, k_bar: torch.Tensor, selection_scale: float, eligible: torch.Tensor):
    """``z [B, Hkv, G, Sq, nb]`` float32 (``-inf`` where not eligible)."""
    B, Hq, Sq, D = query.shape
    Hkv = k_bar.shape[1]
    acc = torch.float64 if query.dtype == torch.float64 else torch.float32
    q = query.to(acc).view(B, Hkv, Hq // Hkv, Sq, D)
    z = torch.einsum("bhgtd,bhcd->bhgtc", q, k_bar.to(acc)) * (selection_scale / math.sqrt(D))
    return z.masked_fill(~eligible, -math.inf)


def _group_probs(query, k_bar, alpha: float, selection_scale: float, causal: bool, kv_len: int, block_size: int):
    """``p̄ [B, Hkv, Sq, nb]``: each head's α-entmax over its eligible blocks, averaged over the group."""
    eligible, _ = block_classes(query.shape[2], kv_len, block_size, causal, query.device)
    return entmax_forward(coarse_scores(query, k_bar, selection_scale, eligible), alpha).mean(2)


def coarse_selection_torch(
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
    Sq, nb = query.shape[2], k_bar.shape[2]
    _, forced = block_classes(Sq, kv_len, block_size, causal, query.device)
    probs = _group_probs(query, k_bar, alpha, selection_scale, causal, kv_len, block_size)
    prior = log_prior_torch(probs, inv_sigma, sq_pad, nb_pad)
    active = torch.nn.functional.pad((probs > 0) | forced, (0, nb_pad - nb, 0, sq_pad - Sq))
    return probs, prior, active.transpose(2, 3).contiguous()


def coarse_selection_rows_torch(
    query: torch.Tensor,
    k_bar: torch.Tensor,
    alpha: float,
    selection_scale: float,
    causal: bool,
    kv_len: int,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probs [B, Hkv, Sq, nb], mean_log [B, Hkv, Sq])``: the coarse stage as rows, nothing
    block-major (the inference path's fine stage reads these directly)."""
    probs = _group_probs(query, k_bar, alpha, selection_scale, causal, kv_len, block_size)
    return probs, mean_log_support(probs)


def block_major_from_rows(
    probs: torch.Tensor, mean_log: torch.Tensor, inv_sigma: float, causal: bool, kv_len: int, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prior [B, H, nb, Sq], active [B, H, nb, Sq])`` from the rows (module doc: ``b`` with the
    given row means, and ``active = p̄ > 0 or forced``), block-major and unpadded: what the
    block-major fine stage reads."""
    prior = centred_log_prior(probs, mean_log, inv_sigma)
    _, forced = block_classes(probs.shape[2], kv_len, block_size, causal, probs.device)
    return prior.transpose(2, 3), ((probs > 0) | forced).transpose(2, 3)


def coarse_selection_backward_torch(
    grad_probs: torch.Tensor,
    query: torch.Tensor,
    k_bar: torch.Tensor,
    alpha: float,
    selection_scale: float,
    eligible: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dq, dk̄)`` from ``∂L/∂p̄ [B, Hkv, Sq, nb]``: recompute each head's entmax, then its
    backward (``dz = s ∘ (dp − Σ s·dp / Σ s)``, ``s = p^{2−α}``) and the two score matmuls."""
    B, Hq, Sq, D = query.shape
    Hkv = k_bar.shape[1]
    G = Hq // Hkv
    z = coarse_scores(query, k_bar, selection_scale, eligible)
    p = entmax_forward(z, alpha)
    dz = entmax_backward(p, (grad_probs / G).unsqueeze(2).expand_as(p).contiguous(), alpha)
    c = selection_scale / math.sqrt(D)
    acc = z.dtype
    dq = torch.einsum("bhgtc,bhcd->bhgtd", dz, k_bar.to(acc)).reshape(B, Hq, Sq, D) * c
    dk_bar = torch.einsum("bhgtc,bhgtd->bhcd", dz, query.to(acc).view(B, Hkv, G, Sq, D)) * c
    return dq.to(query.dtype), dk_bar.to(k_bar.dtype)
