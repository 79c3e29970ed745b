"""Triton kernel for the log-prior: one program per (batch·head, 64 query rows).

Two passes over the row's blocks (in chunks): the first sums ``log p̄`` and counts the support,
the second writes the centred, scaled prior transposed (query index contiguous), so each row
is read twice from L2 and written once; nothing ``[Sq, nb]``-sized is materialised besides the
output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _log_prior_fwd(
    P,
    OUT,
    Sq,
    nb,
    sq_pad,
    nb_pad,
    inv_sigma,
    stride_pb,
    stride_ph,
    stride_pt,
    stride_pc,
    stride_ob,
    stride_oh,
    stride_oc,
    stride_ot,
    num_heads,
    ROWS: tl.constexpr,
    CHUNK: tl.constexpr,
):
    inv_sigma = tl.cast(inv_sigma, tl.float32)  # Inductor may pass Python floats as fp64
    bh = tl.program_id(0).to(tl.int64)  # int64 offsets: per-head p̄ passes 2³¹ elements at 128K
    t0 = tl.program_id(1) * ROWS
    b = bh // num_heads
    h = bh % num_heads
    rows = t0 + tl.arange(0, ROWS)
    row_ok = rows < Sq
    p_base = P + b * stride_pb + h * stride_ph + rows[:, None] * stride_pt
    log_sum = tl.zeros([ROWS], tl.float32)
    count = tl.zeros([ROWS], tl.float32)
    for c0 in range(0, nb, CHUNK):
        cols = c0 + tl.arange(0, CHUNK)
        m = row_ok[:, None] & (cols < nb)[None, :]
        p = tl.load(p_base + cols[None, :] * stride_pc, mask=m, other=0.0).to(tl.float32)
        sel = p > 0
        log_sum += tl.sum(tl.where(sel, tl.log(tl.where(sel, p, 1.0)), 0.0), axis=1)
        count += tl.sum(sel.to(tl.float32), axis=1)
    mean = log_sum / tl.maximum(count, 1.0)
    o_base = OUT + b * stride_ob + h * stride_oh + rows[:, None] * stride_ot
    for c0 in range(0, nb_pad, CHUNK):
        cols = c0 + tl.arange(0, CHUNK)
        m = row_ok[:, None] & (cols < nb)[None, :]
        p = tl.load(p_base + cols[None, :] * stride_pc, mask=m, other=0.0).to(tl.float32)
        sel = p > 0
        prior = tl.where(sel, (tl.log(tl.where(sel, p, 1.0)) - mean[:, None]) * inv_sigma, 0.0)
        tl.store(o_base + cols[None, :] * stride_oc, prior, mask=(rows < sq_pad)[:, None] & (cols < nb_pad)[None, :])


def log_prior_launch(probs: torch.Tensor, inv_sigma: float, out: torch.Tensor, launcher=None) -> torch.Tensor:
    """Fill ``out [B, H, nb_pad, Sq_pad]`` (float32, padding included) from ``probs [B, H, Sq, nb]``."""
    B, H, Sq, nb = probs.shape
    nb_pad, sq_pad = out.shape[2], out.shape[3]
    rows = 64
    kernel = _log_prior_fwd if launcher is None else launcher(_log_prior_fwd)
    kernel[(B * H, triton.cdiv(sq_pad, rows))](
        probs,
        out,
        Sq,
        nb,
        sq_pad,
        nb_pad,
        inv_sigma,
        *probs.stride(),
        *out.stride(),
        H,
        ROWS=rows,
        CHUNK=64,
        num_warps=4,
    )
    return out
