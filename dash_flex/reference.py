"""The pure-PyTorch oracle for DashAttention (SPEC §2).

Dense, float64, slow on purpose: every step of the spec is one readable tensor expression,
and autograd differentiates all of it (entmax included, through an implicit-function step on
its threshold). Every fast path in this package is tested against this file.

Shapes: ``q [B, Hq, Sq, D]``, ``k [B, Hkv, Skv, D]``, ``v [B, Hkv, Skv, Dv]``, ``G = Hq / Hkv``,
``nb = ceil(Skv / block_size)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._validation import check_alpha, check_attention_inputs
from .mods import apply_score_mod, evaluate_mask_mod

__all__ = ["entmax_bisect", "dash_attention_reference", "ReferenceSelection", "classify_blocks"]


# ----------------------------------------------------------------------------- α-entmax
def _entmax_mass(scaled: torch.Tensor, tau: torch.Tensor, alpha: float) -> torch.Tensor:
    """``Σ_i [(α-1)z_i − τ]_+^{1/(α-1)}`` along the last dim (``scaled = (α-1)z``)."""
    return torch.clamp(scaled - tau, min=0).pow(1.0 / (alpha - 1.0)).sum(-1, keepdim=True)


def entmax_bisect(z: torch.Tensor, alpha: float = 1.5, dim: int = -1, n_iter: int = 100) -> torch.Tensor:
    r"""α-entmax by bisection, differentiable by autograd.

    .. math::
        \mathrm{entmax}_\alpha(z)_i = [(\alpha-1) z_i - \tau]_+^{1/(\alpha-1)},
        \quad \tau \text{ such that } \textstyle\sum_i p_i = 1, \quad \alpha \in (1, 2].

    ``τ`` lies in ``[max((α-1)z) − 1, max((α-1)z) − n^{1-α}]`` (the top entry alone gives mass
    ≥ 1 at the left end; all ``n`` entries at least ``n^{-1}`` at the right end), so bisection
    from that bracket converges. Entries equal to ``-inf`` get 0; a row of only ``-inf`` gives
    zeros (and zero gradient).

    Gradients: ``τ`` is found without autograd, then replaced by one Newton step
    ``τ + (mass(τ) − 1) / |∂mass/∂τ|`` with the denominator detached. Its value is ``τ`` (the
    mass is 1 at convergence) and its derivative is the implicit-function derivative
    ``dτ/dz = (∂mass/∂z) / |∂mass/∂τ|``, so autograd yields the exact entmax Jacobian.
    """
    alpha = check_alpha(alpha)
    z = z.movedim(dim, -1)
    finite = torch.isfinite(z)
    live_row = finite.any(-1, keepdim=True)
    z = torch.where(finite, z, torch.full_like(z, -math.inf))
    z = torch.where(live_row, z, torch.zeros_like(z))  # an all-masked row computes on zeros
    n = finite.sum(-1, keepdim=True).clamp(min=1).to(z.dtype)

    scaled = (alpha - 1.0) * z
    top = scaled.amax(-1, keepdim=True)
    with torch.no_grad():
        lo = top - 1.0
        hi = top - n.pow(1.0 - alpha)
        for _ in range(n_iter):
            mid = 0.5 * (lo + hi)
            too_much = _entmax_mass(scaled, mid, alpha) >= 1.0
            lo = torch.where(too_much, mid, lo)
            hi = torch.where(too_much, hi, mid)
        tau0 = lo
        slope = (torch.clamp(scaled - tau0, min=0).pow((2.0 - alpha) / (alpha - 1.0)) * (scaled > tau0)).sum(
            -1, keepdim=True
        ) / (alpha - 1.0)
    tau = tau0 + (_entmax_mass(scaled, tau0, alpha) - 1.0) / slope
    p = torch.clamp(scaled - tau, min=0).pow(1.0 / (alpha - 1.0))
    p = torch.where(live_row, p, torch.zeros_like(p))
    return p.movedim(-1, dim)


# ----------------------------------------------------------------------------- block classes
def classify_blocks(visible: torch.Tensor, block_size: int, causal: bool, q_positions: torch.Tensor):
    """Forced / eligible masks ``[B, H, Sq, nb]`` from the token visibility ``[B, H, Sq, Skv]``.

    *Forced*: the query's own block (causal, if any key of it is visible) and every partially
    visible block. *Eligible*: every other block whose keys are all visible. The rest (no
    visible key) is excluded.
    """
    B, H, Sq, Skv = visible.shape
    nb = -(-Skv // block_size)
    pad = nb * block_size - Skv
    vis_blocks = torch.nn.functional.pad(visible, (0, pad)).view(B, H, Sq, nb, block_size)
    n_visible = vis_blocks.sum(-1)
    block_len = torch.full((nb,), block_size, device=visible.device)
    block_len[-1] = Skv - (nb - 1) * block_size
    complete = n_visible == block_len
    own = torch.zeros(Sq, nb, dtype=torch.bool, device=visible.device)
    if causal:
        own[torch.arange(Sq), q_positions // block_size] = True
    forced = (n_visible > 0) & (~complete | own)
    eligible = complete & ~own
    return forced, eligible


def token_visibility(B, Hq, Sq, Skv, causal, mask_mod, device) -> torch.Tensor:
    """``[B, Hq, Sq, Skv]`` bool: causal (bottom-right) AND the user's mask_mod."""
    q_pos = torch.arange(Sq, device=device) + (Skv - Sq)
    visible = torch.ones(B, Hq, Sq, Skv, dtype=torch.bool, device=device)
    if causal:
        visible &= torch.arange(Skv, device=device)[None, :] <= q_pos[:, None]
    if mask_mod is not None:
        visible &= evaluate_mask_mod(mask_mod, B, Hq, Sq, Skv, device)
    return visible


# ----------------------------------------------------------------------------- attention
@dataclass
class ReferenceSelection:
    """What the coarse stage decided, all ``[B, Hq, Sq, nb]`` (per query head; with GQA
    sharing the G heads of a group hold the same probabilities and prior)."""

    probs: torch.Tensor  # p̄ (0 outside the eligible blocks)
    prior: torch.Tensor  # b (0 outside the selected blocks)
    selected: torch.Tensor  # p̄ > 0
    forced: torch.Tensor
    eligible: torch.Tensor
    active: torch.Tensor  # selected | forced
    visible: torch.Tensor  # [B, Hq, Sq, Skv]


def block_summaries(k: torch.Tensor, block_size: int, pool_query: torch.Tensor | None) -> torch.Tensor:
    """``k̄_c = Σ_{i∈c} softmax_i(u·k_i/√D) k_i`` per block: ``[B, Hkv, nb, D]``.

    ``u = pool_query[h_kv]``; ``None`` means ``u = 0`` (mean pooling). The last block may be short;
    its missing slots take no weight.
    """
    B, Hkv, Skv, D = k.shape
    nb = -(-Skv // block_size)
    pad = nb * block_size - Skv
    k_blocks = torch.nn.functional.pad(k, (0, 0, 0, pad)).view(B, Hkv, nb, block_size, D)
    if pool_query is None:
        logits = torch.zeros(B, Hkv, nb, block_size, dtype=k.dtype, device=k.device)
    else:
        logits = torch.einsum("bhcid,hd->bhci", k_blocks, pool_query.to(k.dtype)) / math.sqrt(D)
    slot_real = (torch.arange(nb * block_size, device=k.device) < Skv).view(nb, block_size)
    logits = logits.masked_fill(~slot_real, -math.inf)
    weights = torch.softmax(logits, dim=-1)
    return torch.einsum("bhci,bhcid->bhcd", weights, k_blocks)


def dash_attention_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    alpha: float = 1.5,
    block_size: int = 64,
    causal: bool = True,
    scale: float | None = None,
    selection_scale: float = 1.0,
    sigma: float = 1.0,
    pool_query: torch.Tensor | None = None,
    score_mod=None,
    mask_mod=None,
    share_kv_groups: bool = True,
    return_selection: bool = False,
    flash_output_dtype: torch.dtype | None = None,
):
    """DashAttention exactly as SPEC §2, computed densely in float64.

    Returns the output ``[B, Hq, Sq, Dv]`` in float64 (and a :class:`ReferenceSelection` when
    ``return_selection=True``). Gradients reach ``query``, ``key``, ``value``, ``pool_query`` and
    any tensor the ``score_mod`` captures, through both stages.

    ``flash_output_dtype`` (testing aid, default off) leaves the forward value unchanged and makes
    the backward use the precision model of flash-style kernels (FlexAttention included): the
    softmax backward's ``Δ_t = Σ_d dO_td·O_td`` is formed from the output *rounded to that dtype*,
    so ``Σ_i dS_ti`` is no longer exactly 0. With a finite ``sigma`` that error reaches q/k through
    the log-prior's centring mean and ``d log p/dz ∝ p^{1−α}`` (docs/design.md, "Numerics"); the
    GPU tests use this to state how close a bf16 kernel can get.
    """
    shapes = check_attention_inputs(
        query,
        key,
        value,
        alpha=alpha,
        block_size=block_size,
        causal=causal,
        scale=scale,
        selection_scale=selection_scale,
        sigma=sigma,
        pool_query=pool_query,
        score_mod=score_mod,
        mask_mod=mask_mod,
    )
    B, Hq, Hkv, Sq, Skv, D = (
        shapes.batch,
        shapes.q_heads,
        shapes.kv_heads,
        shapes.q_len,
        shapes.kv_len,
        shapes.head_dim,
    )
    G, nb, bs = shapes.group_size, shapes.num_blocks, block_size
    dev = query.device
    q, k, v = query.double(), key.double(), value.double()
    u = None if pool_query is None else pool_query.double()
    scale = 1.0 / math.sqrt(D) if scale is None else scale

    # Which keys each query may see, and the class of each block.
    q_pos = torch.arange(Sq, device=dev) + (Skv - Sq)
    visible = token_visibility(B, Hq, Sq, Skv, causal, mask_mod, dev)
    forced, eligible = classify_blocks(visible, bs, causal, q_pos)

    # Coarse stage: summaries, scores, entmax over the eligible blocks.
    k_bar = block_summaries(k, bs, u).repeat_interleave(G, dim=1)  # [B, Hq, nb, D]
    z = selection_scale * torch.einsum("bhtd,bhcd->bhtc", q, k_bar) / math.sqrt(D)
    if share_kv_groups:
        eligible = eligible.view(B, Hkv, G, Sq, nb).all(2, keepdim=True).expand(B, Hkv, G, Sq, nb)
        eligible = eligible.reshape(B, Hq, Sq, nb)
    p = entmax_bisect(z.masked_fill(~eligible, -math.inf), alpha)
    if share_kv_groups:
        p = p.view(B, Hkv, G, Sq, nb).mean(2, keepdim=True).expand(B, Hkv, G, Sq, nb).reshape(B, Hq, Sq, nb)
    selected = p > 0

    # Log-prior, centred over the selected blocks; 0 on forced blocks; none when sigma = inf.
    log_p = torch.log(torch.where(selected, p, torch.ones_like(p)))
    n_sel = selected.sum(-1, keepdim=True).clamp(min=1)
    centred = torch.where(selected, log_p - log_p.sum(-1, keepdim=True) / n_sel, torch.zeros_like(p))
    prior = centred / sigma if math.isfinite(sigma) else torch.zeros_like(centred)
    active = selected | forced

    # Fine stage: softmax over visible keys of active blocks, prior added per block.
    kk = k.repeat_interleave(G, dim=1)
    vv = v.repeat_interleave(G, dim=1)
    scores = scale * torch.einsum("bhtd,bhid->bhti", q, kk)
    if score_mod is not None:
        scores = apply_score_mod(score_mod, scores)
    block_of_key = torch.arange(Skv, device=dev) // bs
    scores = scores + prior[..., block_of_key]
    allowed = visible & active[..., block_of_key]
    scores = scores.masked_fill(~allowed, -math.inf)
    if flash_output_dtype is None:
        weights = _masked_softmax(scores)
        out = torch.einsum("bhti,bhid->bhtd", weights, vv)
    else:
        out = _FlashPrecisionAttention.apply(scores, vv, flash_output_dtype)
    if return_selection:
        sel = ReferenceSelection(p, prior, selected, forced, eligible, active, visible)
        return out, sel
    return out


class _FlashPrecisionAttention(torch.autograd.Function):
    """``O = softmax(S)·V`` (rows with no finite score give zeros) whose backward follows the
    flash kernels' precision model: ``dS = W ∘ (dO·Vᵀ − Δ)`` with ``Δ = Σ_d dO ∘ round(O)``."""

    @staticmethod
    def forward(ctx, scores, values, dtype):
        weights = _masked_softmax(scores)
        out = torch.einsum("bhti,bhid->bhtd", weights, values)
        ctx.save_for_backward(weights, values, out)
        ctx.dtype = dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        weights, values, out = ctx.saved_tensors
        grad_w = torch.einsum("bhtd,bhid->bhti", grad_out, values)
        delta = (grad_out * out.to(ctx.dtype).to(out.dtype)).sum(-1, keepdim=True)
        grad_values = torch.einsum("bhti,bhtd->bhid", weights, grad_out)
        return weights * (grad_w - delta), grad_values, None


def _masked_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; ``-inf`` entries get 0 and an all-``-inf`` row is all zeros."""
    row_max = scores.amax(-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = torch.exp(scores - row_max)
    denom = weights.sum(-1, keepdim=True)
    return weights / torch.where(denom > 0, denom, torch.ones_like(denom))
