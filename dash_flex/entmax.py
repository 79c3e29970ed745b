"""Differentiable α-entmax (the coarse stage's sparse distribution), backed by ``dash_flex::`` ops."""

from __future__ import annotations

import torch
from torch import Tensor

import custom_ops.entmax  # noqa: F401  (registers torch.ops.dash_flex.entmax_*)

from ._validation import _FLOAT_DTYPES, check_alpha

__all__ = ["entmax"]


def entmax(x: Tensor, alpha: float = 1.5, dim: int = -1) -> Tensor:
    r"""α-entmax of ``x`` along ``dim``: a sparse alternative to softmax.

    .. math::
        \mathrm{entmax}_\alpha(z)_i = \big[(\alpha-1)\,z_i - \tau\big]_+^{1/(\alpha-1)},
        \qquad \tau \text{ such that } \textstyle\sum_i p_i = 1,

    i.e. the maximiser of ``p·z + H^T_α(p)`` over the simplex (Tsallis entropy). ``α → 1`` tends to
    softmax, ``α = 1.5`` is the usual entmax, ``α = 2`` is sparsemax. Entries far enough below the
    top get exactly zero, and how many survive adapts to the scores.

    Args:
        x: float16, bfloat16, float32 or float64 tensor, at least one dimension. Entries must be
            finite or ``-inf``; ``-inf`` entries get exactly 0, and a slice of only ``-inf`` gives
            all zeros (and a zero gradient) rather than NaN. A slice of length 1 gives ``[1]``.
        alpha: Python float in ``(1, 2]`` (a Tensor is rejected: it selects a kernel specialisation).
        dim: the dimension to normalise over.

    Returns:
        ``p`` with the shape and dtype of ``x``, non-negative, summing to 1 along ``dim``.
        Internally float32 (float64 for float64 input). Differentiable: the gradient is
        ``s ⊙ (g − Σ s g / Σ s)`` with ``s = p^{2−α}`` on the support. Works in eager mode and
        under ``torch.compile(fullgraph=True)``, on CPU (PyTorch) and CUDA (Triton).

    Raises:
        ValueError: ``alpha`` outside ``(1, 2]``, or ``x`` zero-dimensional.
        TypeError: ``alpha`` not a real number, ``x`` not a floating tensor.
    """
    alpha = check_alpha(alpha)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension")
    if dim != -1 and dim != x.dim() - 1:
        x = x.movedim(dim, -1)
        return torch.ops.dash_flex.entmax_forward(x.contiguous(), alpha).movedim(-1, dim)
    return torch.ops.dash_flex.entmax_forward(x, alpha)
