"""Triton forward kernel for block summaries: one program per (block, batch·head).

The block's keys ``[block_size, D]`` are loaded once; pooling logits, their softmax and the
weighted sum happen in registers in float32, so the summary costs one read of the keys.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _block_summary_fwd(
    K,
    U,
    OUT,
    seq_len,
    num_heads,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_kd,
    stride_uh,
    stride_ud,
    stride_ob,
    stride_oh,
    stride_oc,
    stride_od,
    logit_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_POOL: tl.constexpr,
):
    logit_scale = tl.cast(logit_scale, tl.float32)  # Inductor may pass Python floats as fp64
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64 offsets: B·H·S·D passes 2³¹ for a batch of long inputs
    b = bh // num_heads
    h = bh % num_heads
    offs_i = c * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    offs_d = tl.arange(0, BLOCK_D)
    real = offs_i < seq_len
    mask_d = offs_d < HEAD_DIM
    k = tl.load(
        K + b * stride_kb + h * stride_kh + offs_i[:, None] * stride_ks + offs_d[None, :] * stride_kd,
        mask=real[:, None] & mask_d[None, :],
        other=0.0,
    ).to(tl.float32)
    if HAS_POOL:
        u = tl.load(U + h * stride_uh + offs_d * stride_ud, mask=mask_d, other=0.0).to(tl.float32)
        logits = tl.sum(k * u[None, :], axis=1) * logit_scale
        logits = tl.where(real, logits, float("-inf"))
        w = tl.exp(logits - tl.max(logits, axis=0))
    else:
        w = tl.where(real, 1.0, 0.0)
    w = w / tl.sum(w, axis=0)
    summary = tl.sum(w[:, None] * k, axis=0)
    tl.store(OUT + b * stride_ob + h * stride_oh + c * stride_oc + offs_d * stride_od, summary, mask=mask_d)


def block_summaries_launch(
    key: torch.Tensor, pool_query: torch.Tensor | None, block_size: int, out: torch.Tensor, launcher=None
) -> torch.Tensor:
    """Fill ``out [B, H, nb, D]`` (float32). ``launcher`` wraps the kernel (``wrap_triton`` inside
    a ``triton_op``); None launches directly (eager, or the CPU interpreter in tests)."""
    B, H, S, D = key.shape
    nb = out.shape[2]
    kernel = _block_summary_fwd if launcher is None else launcher(_block_summary_fwd)
    u = pool_query if pool_query is not None else key  # any tensor: not read when HAS_POOL is False
    kernel[(nb, B * H)](
        key,
        u,
        out,
        S,
        H,
        *key.stride(),
        u.stride(0),
        u.stride(-1),
        *out.stride(),
        1.0 / math.sqrt(D),
        HEAD_DIM=D,
        BLOCK_SIZE=block_size,
        BLOCK_D=triton.next_power_of_2(D),
        HAS_POOL=pool_query is not None,
        num_warps=4 if block_size * D <= 8192 else 8,
    )
    return out
