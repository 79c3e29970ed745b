"""Plain-torch definition of the fused fine stage (the Triton kernel is tested against it).

With ``prior [B, H_sel, nb, Sq]`` and ``active [B, H_act, nb, Sq]`` (a selection's log-prior and
kept + forced flags, block-major, query index last) and query head ``h`` using KV head
``h // (Hq/Hkv)``, selection head ``h // (Hq/H_sel)`` and flag head ``h // (Hq/H_act)``::

    s_ti = scale · q_t·k_i + prior[b, h_sel, i // bs, t]     (prior term only when has_prior)
    allowed_ti = active[b, h_act, i // bs, t] and (not causal or i ≤ t + Skv − Sq)
    out_t = Σ_i softmax_allowed(s_t)_i v_i,   lse_t = log Σ_allowed exp(s_ti)

A row with no allowed key gives ``out = 0`` and ``lse = −inf``. Returns ``(out, out_residual,
lse)``: ``out`` in the input dtype and ``out_residual`` = what that rounding dropped (for the
backward's exact ``Δ``). This is exactly what
FlexAttention computes from ``sel.block_mask`` / ``sel.score_mod`` when there are no user mods.

``sparse_attention_rows_torch`` (inference) takes the selection as rows instead, ``p̄`` and each
row's mean ``log p̄`` (``dash_flex::coarse_selection_rows``), and is defined as the above on the
prior and flags those give (``coarse_selection.torch_impl.block_major_from_rows``).
"""

from __future__ import annotations

import torch

from ..coarse_selection.torch_impl import block_major_from_rows


def check_out(out: torch.Tensor, query: torch.Tensor, value_dim: int) -> None:
    """Raise unless ``out`` can take the fine stage's output: ``[B, Hq, Sq, value_dim]`` in the
    query's dtype, on its device (any strides)."""
    want = (*query.shape[:3], value_dim)
    if tuple(out.shape) != want or out.dtype != query.dtype or out.device != query.device:
        raise ValueError(
            f"sparse_attention: out {tuple(out.shape)} {out.dtype} on {out.device} must be {want} {query.dtype} "
            f"on {query.device}"
        )


def sparse_attention_forward_torch(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prior: torch.Tensor,
    active: torch.Tensor,
    causal: bool,
    scale: float,
    block_size: int,
    has_prior: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, Hq, Sq, _ = query.shape
    Hkv, Skv = key.shape[1], key.shape[2]
    acc = torch.float64 if query.dtype == torch.float64 else torch.float32
    kk = key.to(acc).repeat_interleave(Hq // Hkv, dim=1)
    vv = value.to(acc).repeat_interleave(Hq // Hkv, dim=1)
    blk = torch.arange(Skv, device=query.device) // block_size
    scores = scale * (query.to(acc) @ kk.transpose(-1, -2))
    if has_prior:
        scores = scores + prior.to(acc).repeat_interleave(Hq // prior.shape[1], dim=1)[:, :, blk].transpose(2, 3)
    allowed = active.repeat_interleave(Hq // active.shape[1], dim=1)[:, :, blk].transpose(2, 3)
    if causal:
        t = torch.arange(Sq, device=query.device) + (Skv - Sq)
        allowed = allowed & (torch.arange(Skv, device=query.device)[None, :] <= t[:, None])
    scores = scores.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.where(allowed, torch.exp(scores - torch.where(torch.isfinite(lse), lse, 0)[..., None]), 0)
    out = weights @ vv
    hi = out.to(query.dtype)
    return hi, (out - hi.to(acc)).to(query.dtype), lse  # lse: float32 (float64 for float64 inputs)


def sparse_attention_rows_torch(
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
    """``(out, lse)`` of :func:`sparse_attention_forward_torch` on the block-major prior and flags of
    the rows ``probs [B, H_sel, Sq, nb]``, ``mean_log [B, H_sel, Sq]`` (no prior when
    ``inv_sigma == 0``)."""
    prior, active = block_major_from_rows(probs, mean_log, inv_sigma, causal, key.shape[2], block_size)
    out, _, lse = sparse_attention_forward_torch(
        query, key, value, prior, active, causal, scale, block_size, inv_sigma != 0
    )
    return out, lse


def sparse_attention_backward_torch(
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
    """``(dq, dk, dv, dprior)`` of the forward above. ``Δ_t = Σ_d dO·(out + out_residual)`` uses
    the output to fp32 precision (the residual is what rounding to the input dtype dropped), so
    ``Σ_i dS_ti = 0`` holds up to fp32 error: the prior's gradient does not carry the rounding
    error that flash kernels' ``Δ`` from the rounded output has (docs/design.md, "Numerics")."""
    B, Hq, Sq, _ = query.shape
    Hkv, Skv = key.shape[1], key.shape[2]
    acc = torch.float64 if query.dtype == torch.float64 else torch.float32
    G = Hq // Hkv
    q, kk, vv = query.to(acc), key.to(acc).repeat_interleave(G, dim=1), value.to(acc).repeat_interleave(G, dim=1)
    blk = torch.arange(Skv, device=query.device) // block_size
    scores = scale * (q @ kk.transpose(-1, -2))
    if has_prior:
        scores = scores + prior.to(acc).repeat_interleave(Hq // prior.shape[1], dim=1)[:, :, blk].transpose(2, 3)
    allowed = active.repeat_interleave(Hq // active.shape[1], dim=1)[:, :, blk].transpose(2, 3)
    if causal:
        t = torch.arange(Sq, device=query.device) + (Skv - Sq)
        allowed = allowed & (torch.arange(Skv, device=query.device)[None, :] <= t[:, None])
    lse = lse.to(acc)
    p = torch.where(allowed, torch.exp(scores - torch.where(torch.isfinite(lse), lse, 0)[..., None]), 0)
    do = grad_out.to(acc)
    delta = (do * (out.to(acc) + out_residual.to(acc))).sum(-1, keepdim=True)
    ds = p * (do @ vv.transpose(-1, -2) - delta)
    dq = scale * (ds @ kk)
    dk = (scale * (ds.transpose(-1, -2) @ q)).view(B, Hkv, G, Skv, -1).sum(2)
    dv = (p.transpose(-1, -2) @ do).view(B, Hkv, G, Skv, -1).sum(2)
    nb = prior.shape[2]
    per_block = torch.zeros(B, Hq, Sq, nb, dtype=acc, device=query.device).index_add_(3, blk, ds)
    H_sel = prior.shape[1]
    dprior = per_block.view(B, H_sel, Hq // H_sel, Sq, nb).sum(2).transpose(2, 3)
    if not has_prior:
        dprior = torch.zeros_like(dprior)
    return dq.to(query.dtype), dk.to(key.dtype), dv.to(value.dtype), dprior.to(prior.dtype).contiguous()
