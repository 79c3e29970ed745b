"""Plain-PyTorch α-entmax over the last dimension: the CPU (and float64) path of the operators.

It runs the same solver as the Triton kernels, written as whole-tensor expressions, so it is
also their readable specification. For a row ``z`` (``d = 1/(α−1)``):

1. ``s = (α−1)(z − max z)``: ``max s = 0``; ``-inf`` entries stay ``-inf`` and get 0.
2. The threshold ``τ`` of ``p_i = [s_i − τ]_+^d`` (``Σ p = 1``) lies in
   ``[−1, −n^{1−α}]`` (``n`` = finite entries): at ``τ = −1`` the top entry alone has mass 1;
   at ``τ = −n^{1−α}`` every entry has mass ≤ 1/n.
3. ``N_BISECT`` bisection steps on ``f(τ) = Σ [s_i − τ]_+^d − 1`` shrink the bracket 2^N_BISECT-fold,
   keeping ``f(lo) ≥ 0`` (none for α ≤ 1.5, where Newton alone converges fast from ``τ = −1``).
4. ``N_NEWTON`` Newton steps from ``lo`` on ``h(τ) = ‖[s − τ]_+‖_d − 1`` (same root as ``f``).
   ``h`` is convex (an ℓ_d norm, monotone on the non-negative orthant, of the convex functions
   ``[s_i − τ]_+``) and decreasing, so each tangent lies below ``h`` and a Newton step from a point
   with ``h ≥ 0`` lands on a point that still has ``h ≥ 0``: the iterates increase monotonically
   to the root and never overshoot. ``h`` is positively homogeneous of degree 1 in ``[s − τ]_+``,
   hence nearly linear on each support piece (exactly linear when the kept scores are equal): it
   needs far fewer steps than Newton on ``f``, whose ``d``-th powers bend strongly for α near 1.
   With ``S = Σ x^d``, ``D = Σ x^(d−1)``, ``x = [s − τ]_+``: ``τ ← τ + S (1 − S^(−1/d)) / D``
   (for sparsemax, ``d = 1``, this is Michelot's fixed-point iteration).
5. α = 1.5 only: one **exact step**. On the current support ``A`` (the entries with ``x > 0``) the
   mass is the quadratic ``Σ_A (x_i − δ)²``; its smaller root
   ``δ = (S − 1) / (D + √(D² − |A|(S − 1)))`` (the cancellation-free form) is the threshold itself
   once ``A`` is the final support, and lands within the float32 floor of it after the Newton
   steps the schedule gives (``scripts/study_newton_schedule.py``). It may overshoot (past ``τ*``,
   when an entry of ``A`` should still drop out); step 6 absorbs what that leaves.
6. ``p /= Σ p`` removes the last rounding error in the mass.

All arithmetic is float32 (float64 for float64 inputs); the output has the input dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["MODE_SPARSEMAX", "MODE_ENTMAX15", "MODE_GENERIC", "solver_schedule", "entmax_forward", "entmax_backward"]

# Exponent specialisations (shared with the Triton kernels): d = 1/(α−1).
MODE_SPARSEMAX = 0  # α = 2, d = 1: p = x, no power at all
MODE_ENTMAX15 = 1  # α = 1.5, d = 2: p = x², no exp/log
MODE_GENERIC = 2  # any other α: p = exp2(d·log2 x)


def solver_schedule(alpha: float, n: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """``(mode, n_bisect, n_newton)`` for rows of length ``n``.

    Measured against a float64 bisection oracle (rows: Gaussian, uniform, heavy-tailed, near-tie,
    one-dominant, graded, geometric, two-level and crowds just below the top entry; n = 16 to
    65536; scales 0.01 to 1e4). α = 1.5: ``exact_step_newtons(n)`` Newton steps, then the exact
    step (module docstring): 4 up to 2048 entries, as accurate as 6 Newton steps alone, which
    two-level rows need from 128 entries on (5 leave 1e-5 there); see that function. Other
    α ≤ 1.5: 7 Newton steps from ``τ = −1`` (float32 reaches its rounding floor with 2 at
    α = 1.01, 4 at α = 1.25; one spare). For larger α the support, not the curvature, is what
    converges slowly: 6 bisection steps first leave 4 (α = 1.6) to 7 (α = 2) Newton steps; 8 run.
    Rows past 8192 entries crowd the threshold more: one more halving per doubling and one more
    Newton step. float64 takes two more Newton steps for its own floor.
    """
    if alpha == 2.0:
        mode = MODE_SPARSEMAX
    elif alpha == 1.5:
        mode = MODE_ENTMAX15
    else:
        mode = MODE_GENERIC
    if alpha == 1.5:
        n_bisect, n_newton = 0, exact_step_newtons(n)
    else:
        n_bisect, n_newton = (0, 7) if alpha < 1.5 else (6, 8)
    if n > 8192:  # more entries crowd the threshold: one more halving per doubling of the row
        n_bisect += math.ceil(math.log2(n / 8192))
        n_newton += 1
    if dtype == torch.float64:
        n_newton += 2
    return mode, n_bisect, n_newton


def exact_step_newtons(n: int) -> int:
    """Newton steps before the exact step at α = 1.5 for rows of ``n ≤ 8192`` entries (see
    :func:`solver_schedule`): the fewest whose worst error on every row family stays within
    ``max(5e-7, 0.6 × floor)`` of ten Newton steps' error, the floor being that error's worst
    (``scripts/study_newton_schedule.py``): 4 up to 2048 entries (at 2048 the floor is 1e-6 and
    4 + exact adds at most 5.2e-7, on crowds of tied entries), 5 up to 4096 (4 + exact adds
    1.4e-6 there). Until session 16 every row took 7 Newton steps and no exact step."""
    return 4 if n <= 2048 else 5 if n <= 4096 else 6


def _check_alpha(alpha: float) -> float:
    # custom_ops must not import dash_flex (dash_flex imports custom_ops): a local check.
    alpha = float(alpha)
    if not (1.0 < alpha <= 2.0):
        raise ValueError(f"alpha must lie in (1, 2], got alpha={alpha}")
    return alpha


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _powers(x: Tensor, mode: int, d: float) -> tuple[Tensor, Tensor]:
    """``(x^d, x^(d−1))`` for ``x ≥ 0``, with ``x^(d−1) := 0`` where ``x = 0`` (off the support)."""
    if mode == MODE_SPARSEMAX:
        return x, (x > 0).to(x.dtype)
    if mode == MODE_ENTMAX15:
        return x * x, x
    p = x.pow(d)
    return p, torch.where(x > 0, p / x.clamp(min=torch.finfo(x.dtype).tiny), 0.0)


def _root(mass: Tensor, mode: int, alpha: float) -> Tensor:
    """``S^(−1/d) = S^(1−α)`` (``S > 0``; 1 where ``S = 0``, an all -inf row, whose step is 0 anyway)."""
    safe = torch.where(mass > 0, mass, 1.0)
    if mode == MODE_SPARSEMAX:
        return 1.0 / safe
    if mode == MODE_ENTMAX15:
        return torch.rsqrt(safe)
    return safe.pow(1.0 - alpha)


def _like_input(result: Tensor, like: Tensor) -> Tensor:
    # The fake kernels return empty_like(input); the real result must have the same strides.
    if result.stride() == like.stride():
        return result
    out = torch.empty_like(like, dtype=result.dtype)
    out.copy_(result)
    return out


def entmax_forward(x: Tensor, alpha: float) -> Tensor:
    """α-entmax of ``x`` over its last dimension (see the module docstring for the solver)."""
    alpha = _check_alpha(alpha)
    if x.numel() == 0:
        return torch.empty_like(x)
    n = x.shape[-1]
    mode, n_bisect, n_newton = solver_schedule(alpha, n, x.dtype)
    d = 1.0 / (alpha - 1.0)
    z = x.contiguous().to(_compute_dtype(x.dtype))

    top = z.amax(-1, keepdim=True)
    top = torch.where(top > -math.inf, top, 0.0)  # all -inf row: every s stays -inf, p = 0
    s = (z - top) * (alpha - 1.0)
    n_finite = (s > -math.inf).sum(-1, keepdim=True).clamp(min=1).to(s.dtype)

    lo = torch.full_like(top, -1.0)
    hi = -n_finite.pow(1.0 - alpha)
    for _ in range(n_bisect):
        mid = 0.5 * (lo + hi)
        mass = _powers((s - mid).clamp(min=0), mode, d)[0].sum(-1, keepdim=True)
        too_much = mass >= 1.0
        lo = torch.where(too_much, mid, lo)
        hi = torch.where(too_much, hi, mid)

    tau = lo
    for _ in range(n_newton):
        p, dp = _powers((s - tau).clamp(min=0), mode, d)
        mass = p.sum(-1, keepdim=True)  # S
        slope = dp.sum(-1, keepdim=True)  # D; 0 only on an all -inf row
        tau = tau + torch.where(slope > 0, mass * (1.0 - _root(mass, mode, alpha)) / slope.clamp(min=1e-30), 0.0)

    if mode == MODE_ENTMAX15:
        tau = tau + exact_step(s, tau)

    p = _powers((s - tau).clamp(min=0), mode, d)[0]
    total = p.sum(-1, keepdim=True)
    p = p * torch.where(total > 0, 1.0 / total.clamp(min=1e-30), 0.0)
    return _like_input(p.to(x.dtype), x)


def exact_step(s: Tensor, tau: Tensor) -> Tensor:
    """α = 1.5: the root ``δ`` of ``Σ_A (x_i − δ)² = 1`` on the support ``A`` of ``x = [s − τ]_+``
    (0 for a row without one), from ``S = Σ x²``, ``D = Σ x`` and ``|A|``; ``D² ≥ |A|(S − 1)``
    whenever the root exists (Cauchy–Schwarz gives ``D² ≤ |A|·S``), clamped at 0 against rounding."""
    x = (s - tau).clamp(min=0)
    mass, slope = (x * x).sum(-1, keepdim=True), x.sum(-1, keepdim=True)
    size = (x > 0).sum(-1, keepdim=True).to(s.dtype)
    root = (slope * slope - size * (mass - 1.0)).clamp(min=0).sqrt()
    return torch.where(slope > 0, (mass - 1.0) / (slope + root).clamp(min=torch.finfo(s.dtype).tiny), 0.0)


def _support_weights(p: Tensor, alpha: float) -> Tensor:
    """``s = p^(2−α)`` on the support, 0 off it: the diagonal of the entmax Jacobian's core."""
    if alpha == 2.0:
        return (p > 0).to(p.dtype)
    if alpha == 1.5:
        return p.clamp(min=0).sqrt()
    return torch.where(p > 0, p.clamp(min=torch.finfo(p.dtype).tiny).pow(2.0 - alpha), 0.0)


def entmax_backward(p: Tensor, grad_p: Tensor, alpha: float) -> Tensor:
    """Vector-Jacobian product of α-entmax over the last dimension.

    With ``s = p^(2−α)`` on the support: ``grad_x = s ⊙ (g − Σ(s⊙g) / Σs)``. Off the support the
    gradient is exactly 0 (even where ``g`` is not finite); an all-zero row gives 0.
    """
    alpha = _check_alpha(alpha)
    if p.numel() == 0:
        return torch.empty_like(p)
    cdt = _compute_dtype(p.dtype)
    pc = p.contiguous().to(cdt)
    g = grad_p.contiguous().to(cdt)
    s = _support_weights(pc, alpha)
    on = s > 0
    sg = torch.where(on, s * g, 0.0)
    s_sum = s.sum(-1, keepdim=True)
    c = torch.where(s_sum > 0, sg.sum(-1, keepdim=True) / s_sum.clamp(min=1e-30), 0.0)
    dx = torch.where(on, s * (g - c), 0.0)
    return _like_input(dx.to(grad_p.dtype), p)


def entmax_backward_grad_p(p: Tensor, grad_p: Tensor, v: Tensor, alpha: float) -> Tensor:
    """Gradient of ``<v, entmax_backward(p, grad_p)>`` with respect to ``p`` (double backward).

    ``y = s ⊙ (g − c)`` with ``c = Σ s g / Σ s``; ``∂<v, y>/∂s_i = (g_i − c)(v_i − Σ s v / Σ s)`` and
    ``ds/dp = (2−α) p^(1−α)`` on the support (0 for sparsemax, whose ``s`` is piecewise constant).
    """
    if p.numel() == 0 or alpha == 2.0:
        return torch.zeros_like(p)
    cdt = _compute_dtype(p.dtype)
    pc, g, vc = p.to(cdt), grad_p.to(cdt), v.to(cdt)
    s = _support_weights(pc, alpha)
    on = s > 0
    s_sum = s.sum(-1, keepdim=True)
    inv = torch.where(s_sum > 0, 1.0 / s_sum.clamp(min=1e-30), 0.0)
    cg = torch.where(on, s * g, 0.0).sum(-1, keepdim=True) * inv
    cv = torch.where(on, s * vc, 0.0).sum(-1, keepdim=True) * inv
    ds_dp = (2.0 - alpha) * pc.clamp(min=torch.finfo(cdt).tiny).pow(1.0 - alpha)
    out = torch.where(on, (g - cg) * (vc - cv) * ds_dp, 0.0)
    return out.to(p.dtype)
