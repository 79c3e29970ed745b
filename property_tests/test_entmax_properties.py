"""Properties of α-entmax (``dash_flex.entmax``), each stated in its test's docstring.

Run eagerly and, for the core ones, through ``torch.compile`` as well.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo
from hypothesis import given
from hypothesis import strategies as st

from dash_flex import entmax
from dash_flex import testing as dt

# The compiled variant specialises on α and dtype: the nightly profile draws more combinations
# than Dynamo's default limit of 8 recompiles.
torch._dynamo.config.recompile_limit = 256
ALPHAS = st.sampled_from([1.1, 1.25, 1.5, 1.75, 2.0])
_compiled_entmax = torch.compile(entmax, backend="aot_eager", fullgraph=True, dynamic=True)


def _threshold(x: torch.Tensor, p: torch.Tensor, alpha: float) -> torch.Tensor:
    """τ recovered from the support: p_i^{α−1} = (α−1)x_i − τ, averaged over the support."""
    s = (alpha - 1) * x
    tau = torch.where(p > 0, s - p.pow(alpha - 1), torch.zeros_like(p)).sum(-1, keepdim=True)
    return tau / (p > 0).sum(-1, keepdim=True).clamp(min=1)


def _row_scale(x: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~torch.isfinite(x), 0).abs().amax(-1, keepdim=True).clamp(min=1)


@pytest.mark.parametrize("fn", [entmax, _compiled_entmax], ids=["eager", "compiled"])
@given(x=dt.entmax_inputs(), alpha=ALPHAS)
def test_distribution_with_nonempty_exact_support(fn, x, alpha):
    """p ≥ 0, Σp = 1, the support is non-empty, and p_i > 0 exactly where (α−1)x_i > τ
    (up to rounding at the boundary)."""
    p = fn(x, alpha=alpha)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(x.shape[0], dtype=x.dtype), atol=1e-9, rtol=0)
    assert ((p > 0).sum(-1) >= 1).all()
    assert (p[~torch.isfinite(x)] == 0).all()
    tau = _threshold(x, p, alpha)
    s = torch.where(torch.isfinite(x), (alpha - 1) * x, torch.full_like(x, -math.inf))
    boundary = (s - tau).abs() <= 1e-7 * _row_scale(x)
    assert (((p > 0) == (s > tau)) | boundary).all()


@given(x=dt.entmax_inputs(), alpha=ALPHAS, seed=st.integers(0, 2**16))
def test_permutation_equivariance(x, alpha, seed):
    """entmax(P x) = P entmax(x) for any permutation P of the entries."""
    perm = torch.randperm(x.shape[-1], generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(entmax(x[:, perm], alpha=alpha), entmax(x, alpha=alpha)[:, perm], atol=1e-10, rtol=0)


@given(x=dt.entmax_inputs(scale=st.sampled_from([0.1, 1.0, 10.0])), alpha=ALPHAS, shift=st.floats(-50, 50))
def test_shift_invariance(x, alpha, shift):
    """entmax(x + c) = entmax(x) for any constant c."""
    torch.testing.assert_close(entmax(x + shift, alpha=alpha), entmax(x, alpha=alpha), atol=1e-8, rtol=0)


@given(
    x=dt.entmax_inputs(scale=st.sampled_from([0.1, 1.0, 10.0]), masked=False),
    alpha=ALPHAS,
    index=st.integers(0, 200),
    bump=st.floats(1e-3, 5.0),
)
def test_monotone_in_each_input(x, alpha, index, bump):
    """Raising x_i never lowers p_i."""
    i = index % x.shape[-1]
    y = x.clone()
    y[:, i] += bump
    assert (entmax(y, alpha=alpha)[:, i] >= entmax(x, alpha=alpha)[:, i] - 1e-12).all()


@given(x=dt.entmax_inputs(masked=False))
def test_alpha_two_is_sparsemax(x):
    """α = 2 is sparsemax, the Euclidean projection onto the simplex (closed form by sorting)."""
    zs, _ = torch.sort(x, dim=-1, descending=True)
    k = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    cumsum = zs.cumsum(-1)
    k_z = (1 + k * zs > cumsum).sum(-1, keepdim=True)
    tau = (cumsum.gather(-1, k_z - 1) - 1) / k_z
    torch.testing.assert_close(
        entmax(x, alpha=2.0), torch.clamp(x - tau, min=0), atol=1e-9 * float(_row_scale(x).max()), rtol=0
    )


@given(x=dt.entmax_inputs(scale=st.sampled_from([0.5, 2.0, 10.0])), alpha=ALPHAS)
def test_jacobian_rows_sum_to_zero_and_vanish_off_support(x, alpha):
    """Σ_j ∂p_i/∂x_j = 0 (shift invariance, differentiated), and ∂p/∂x_j = 0 for every j off the
    support: an off-support input has no gradient whatever the upstream gradient."""
    row = x[:1].detach()
    jac = torch.autograd.functional.jacobian(lambda z: entmax(z, alpha=alpha), row)[0, :, 0, :]  # [n, n]
    assert jac.sum(-1).abs().max() <= 1e-8 * float(_row_scale(row).max())
    x = x.clone().requires_grad_()
    p = entmax(x, alpha=alpha)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    (grad,) = torch.autograd.grad(p, x, upstream)
    assert torch.isfinite(grad).all()
    assert (grad[p.detach() == 0] == 0).all()
