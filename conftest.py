"""Repository-wide pytest set-up.

On a machine without CUDA, Triton kernels run under Triton's CPU interpreter: triton reads
TRITON_INTERPRET when a kernel is decorated, so it must be set before any kernel module is
imported, which is why it lives here.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
