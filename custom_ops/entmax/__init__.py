"""α-entmax operators: ``torch.ops.dash_flex.entmax_forward`` and ``torch.ops.dash_flex.entmax_backward``.

``torch_impl`` is the plain-PyTorch path (CPU, float64) and the solver's reference text;
``triton_kernels`` holds the CUDA kernels and their launchers; ``ops`` registers the operators.
The user-facing function is ``dash_flex.entmax``.
"""

from . import ops, torch_impl  # noqa: F401  (importing ops registers the operators)
