"""Argument checks shared by the reference and the fast path.

Every check runs on shapes, dtypes and Python scalars only, so it costs no kernel launch and
no host synchronisation, and it raises before any computation starts (SPEC §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_alpha(alpha: float) -> float:
    """α must be a real number in (1, 2]: α = 1 is softmax (not sparse), α > 2 is not covered."""
    if isinstance(alpha, torch.Tensor):
        raise TypeError("alpha must be a Python float, got a Tensor")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a float in (1, 2], got {type(alpha).__name__}")
    alpha = float(alpha)
    if not (1.0 < alpha <= 2.0):
        raise ValueError(f"alpha must lie in (1, 2], got alpha={alpha}")
    return alpha


def _check_positive_scalar(name: str, value, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(
            f"{name} must be a positive{' (or inf)' if allow_inf else ' finite'} float, got {name}={value}"
        )
    return value


@dataclass(frozen=True)
class AttentionShapes:
    """Sizes of one DashAttention call, read off the inputs once they are validated."""

    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    value_dim: int
    block_size: int

    @property
    def group_size(self) -> int:
        return self.q_heads // self.kv_heads

    @property
    def num_blocks(self) -> int:
        return -(-self.kv_len // self.block_size)


def check_attention_inputs(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor | None,
    *,
    alpha: float,
    block_size: int,
    causal: bool,
    scale: float | None,
    selection_scale: float,
    sigma: float,
    pool_query: torch.Tensor | None,
    score_mod=None,
    mask_mod=None,
) -> AttentionShapes:
    """Validate a `dash_attention` / `dash_select` call; return its sizes.

    `value=None` is used by `dash_select`, which never touches values.
    """
    tensors = {"query": query, "key": key}
    if value is not None:
        tensors["value"] = value
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D [batch, heads, seq, dim], got shape {tuple(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    for name, t in tensors.items():
        if t.dtype != query.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but query has {query.dtype}; they must match")
        if t.device != query.device:
            raise ValueError(f"{name} is on {t.device} but query is on {query.device}; they must match")

    B, Hq, Sq, D = query.shape
    Bk, Hkv, Skv, Dk = key.shape
    if Bk != B:
        raise ValueError(f"key batch size {Bk} differs from query batch size {B}")
    if Dk != D:
        raise ValueError(f"key head dim {Dk} differs from query head dim {D}")
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"query heads ({Hq}) must be a multiple of key heads ({Hkv})")
    if Sq == 0 or Skv == 0:
        raise ValueError(f"sequence lengths must be positive, got query {Sq} and key {Skv}")
    Dv = D
    if value is not None:
        Bv, Hv, Sv, Dv = value.shape
        if (Bv, Hv, Sv) != (B, Hkv, Skv):
            raise ValueError(
                f"value shape {tuple(value.shape)} must match key in batch, heads and length {(B, Hkv, Skv)}"
            )

    check_alpha(alpha)
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_size must be an int, got {type(block_size).__name__}")
    if block_size <= 0 or block_size % 16 != 0:
        raise ValueError(f"block_size must be a positive multiple of 16, got block_size={block_size}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if causal and Sq > Skv:
        raise ValueError(f"causal=True needs query length <= key length (bottom-right alignment), got {Sq} > {Skv}")
    if scale is not None:
        _check_positive_scalar("scale", scale)
    _check_positive_scalar("selection_scale", selection_scale)
    _check_positive_scalar("sigma", sigma, allow_inf=True)
    if pool_query is not None:
        if not isinstance(pool_query, torch.Tensor):
            raise TypeError(f"pool_query must be a Tensor or None, got {type(pool_query).__name__}")
        if tuple(pool_query.shape) != (Hkv, D):
            raise ValueError(
                f"pool_query must have shape [kv_heads, head_dim] = {(Hkv, D)}, got {tuple(pool_query.shape)}"
            )
        if pool_query.device != query.device:
            raise ValueError(f"pool_query is on {pool_query.device} but query is on {query.device}")
        if not pool_query.is_floating_point():
            raise TypeError(f"pool_query must be a floating tensor, got {pool_query.dtype}")
    for name, fn in (("score_mod", score_mod), ("mask_mod", mask_mod)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
    return AttentionShapes(B, Hq, Hkv, Sq, Skv, D, Dv, block_size)
