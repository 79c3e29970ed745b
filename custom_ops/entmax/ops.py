"""The α-entmax operators of namespace ``dash_flex``: schemas, kernels, fake kernels, autograd.

Public ops (both over the last dimension; ``dash_flex.entmax`` moves ``dim`` there and back):

* ``dash_flex::entmax_forward(Tensor x, float alpha) -> Tensor``
* ``dash_flex::entmax_backward(Tensor p, Tensor grad_p, float alpha) -> Tensor``

They are ``torch.library.triton_op``s whose body branches on the device: the Triton kernels
(through ``wrap_triton``, so that Inductor sees them) for fp16 / bf16 / fp32 CUDA tensors, the
PyTorch path everywhere else (CPU, and float64 on any device). That single branching body is
what compiles and passes ``opcheck`` on CPU; registering a CPU kernel on a ``triton_op`` does not.

The PyTorch path sits behind two opaque ``custom_op``s (``dash_flex::entmax_forward_torch``,
``dash_flex::entmax_backward_torch``): a compiled graph calls them instead of tracing the
unrolled solver loop, which cut a cold CPU ``torch.compile`` of an entmax forward+backward from
~24 s to ~10 s (2-core machine) and keeps compiled CPU results bitwise equal to eager.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import torch_impl

try:  # triton ships with Linux CUDA builds of torch; without it every device uses the PyTorch path
    from . import triton_kernels
except ImportError:  # pragma: no cover
    triton_kernels = None

__all__ = ["entmax_forward", "entmax_backward", "entmax_forward_torch", "entmax_backward_torch"]


def _use_triton(*tensors: Tensor) -> bool:
    return triton_kernels is not None and all(t.device.type == "cuda" and t.dtype != torch.float64 for t in tensors)


# ----------------------------------------------------------------------------- PyTorch path
@torch.library.custom_op("dash_flex::entmax_forward_torch", mutates_args=())
def entmax_forward_torch(x: Tensor, alpha: float) -> Tensor:
    """``entmax_forward`` in plain PyTorch (float32 inside, float64 for float64)."""
    return torch_impl.entmax_forward(x, alpha)


@torch.library.custom_op("dash_flex::entmax_backward_torch", mutates_args=())
def entmax_backward_torch(p: Tensor, grad_p: Tensor, alpha: float) -> Tensor:
    """``entmax_backward`` in plain PyTorch."""
    return torch_impl.entmax_backward(p, grad_p, alpha)


# ----------------------------------------------------------------------------- public ops
@torch.library.triton_op("dash_flex::entmax_forward", mutates_args=())
def entmax_forward(x: Tensor, alpha: float) -> Tensor:
    """α-entmax over the last dim: ``p_i = [(α−1)x_i − τ]_+^{1/(α−1)}``, ``Σ p = 1``."""
    torch_impl._check_alpha(alpha)
    if _use_triton(x):
        return torch_impl._like_input(triton_kernels.entmax_forward(x, alpha), x)
    return torch.ops.dash_flex.entmax_forward_torch(x, alpha)


@torch.library.triton_op("dash_flex::entmax_backward", mutates_args=())
def entmax_backward(p: Tensor, grad_p: Tensor, alpha: float) -> Tensor:
    """VJP of α-entmax given its output ``p``: ``s ⊙ (g − Σ s g / Σ s)`` with ``s = p^(2−α)`` on the support."""
    torch_impl._check_alpha(alpha)
    if _use_triton(p, grad_p):
        return torch_impl._like_input(triton_kernels.entmax_backward(p, grad_p, alpha), p)
    return torch.ops.dash_flex.entmax_backward_torch(p, grad_p, alpha)


# ----------------------------------------------------------------------------- fake kernels
@entmax_forward_torch.register_fake
@entmax_forward.register_fake
def _forward_fake(x: Tensor, alpha: float) -> Tensor:
    return torch.empty_like(x)


@entmax_backward_torch.register_fake
@entmax_backward.register_fake
def _backward_fake(p: Tensor, grad_p: Tensor, alpha: float) -> Tensor:
    return torch.empty_like(p, dtype=grad_p.dtype)


# ----------------------------------------------------------------------------- autograd
def _forward_setup_context(ctx, inputs, output) -> None:
    _, alpha = inputs
    ctx.save_for_backward(output)  # the Jacobian needs only p (and α)
    ctx.alpha = alpha


def _forward_backward(ctx, grad: Tensor):
    (p,) = ctx.saved_tensors
    return torch.ops.dash_flex.entmax_backward(p, grad, ctx.alpha), None


# The private PyTorch-path ops get the same formulas, so they are complete ops on their own.
for _op in (entmax_forward, entmax_forward_torch):
    _op.register_autograd(_forward_backward, setup_context=_forward_setup_context)


def _backward_setup_context(ctx, inputs, output) -> None:
    p, grad_p, alpha = inputs
    ctx.save_for_backward(p, grad_p)
    ctx.alpha = alpha


def _backward_backward(ctx, v: Tensor):
    # Double backward. The VJP is linear and symmetric in grad_p (diag(s) − s sᵀ/Σs), so its
    # gradient with respect to grad_p is the same op applied to v; the one with respect to p
    # goes through s(p) = p^(2−α).
    p, grad_p = ctx.saved_tensors
    grad_p_p = torch_impl.entmax_backward_grad_p(p, grad_p, v, ctx.alpha) if ctx.needs_input_grad[0] else None
    grad_grad_p = torch.ops.dash_flex.entmax_backward(p, v, ctx.alpha) if ctx.needs_input_grad[1] else None
    return grad_p_p, grad_grad_p, None


for _op in (entmax_backward, entmax_backward_torch):
    _op.register_autograd(_backward_backward, setup_context=_backward_setup_context)
