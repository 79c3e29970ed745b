"""Triton kernels of the decode coarse stage (``dash_flex::decode_selection``) and of the
split merge of ``dash_flex::sparse_decode``.

A decode step has one query per sequence, so the coarse stage is small (``G`` rows of ``nb``
blocks per (sequence, KV head)) and latency-bound: what costs is the number of kernels and
their serial depth, not flops. Two kernels replace the chain of ~20 small torch operators:

* ``_decode_scores``, one program per (chunk of ``CHUNK`` blocks, sequence·KV head): the
  ``G × CHUNK`` scores ``q·k̄`` in fp32 FMAs (exact like the torch definition; ``G`` is too
  small for ``tl.dot`` to pay), written to a ``[B·Hkv, G, nb]`` scratch. Spreading the summaries'
  read (``nb·D·4`` bytes, 1 MB per (sequence, KV head) at 128K) over many programs is what keeps
  it short.
* ``_decode_select``, one program per (sequence, KV head): the ``G`` rows back whole in
  registers (a ``[NB / SUB, G, SUB]`` tile), eligibility from the sequence's length, the
  entmax solver the other kernels share, the group mean, the log-prior, the active flags and
  the compact list of active blocks (an in-register prefix sum), i.e. everything the split-KV
  kernel reads.

``_merge_splits`` combines the split-KV kernel's per-split online-softmax states in one launch
(instead of a chain of torch reductions) and writes the output in the query dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..entmax.torch_impl import solver_schedule
from ..entmax.triton_kernels import entmax_rows_split

CHUNK = 32  # blocks per scoring program
MAX_DECODE_BLOCKS = 16384  # longest block row solved in registers (1M tokens at block 64)


@triton.jit
def _decode_scores(
    Q, KBAR, Z, num_blocks, num_kv_heads,
    stride_qb, stride_qh, stride_qd,
    stride_kb, stride_kh, stride_kc, stride_kd,
    z_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    z_scale = tl.cast(z_scale, tl.float32)  # Inductor may pass Python floats as fp64
    bh = tl.program_id(1).to(tl.int64)
    b = bh // num_kv_heads
    h = bh % num_kv_heads
    c = tl.program_id(0) * CHUNK + tl.arange(0, CHUNK)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    kb = tl.load(
        KBAR + b * stride_kb + h * stride_kh + c[:, None] * stride_kc + offs_d[None, :] * stride_kd,
        mask=(c < num_blocks)[:, None] & d_ok[None, :],
        other=0.0,
    ).to(tl.float32)
    for g in tl.static_range(GROUP):
        q = tl.load(Q + b * stride_qb + (h * GROUP + g) * stride_qh + offs_d * stride_qd, mask=d_ok, other=0.0)
        z = tl.sum(kb * q.to(tl.float32)[None, :], axis=1) * z_scale
        tl.store(Z + (bh * GROUP + g) * num_blocks + c, z, mask=c < num_blocks)


@triton.jit
def _decode_select(
    Z, LENGTHS, NUM_NEW, ACTIVE, PRIOR, LIST, COUNT, POS,
    num_blocks, num_kv_heads, inv_sigma, am1, d, one_minus_alpha,
    GROUP: tl.constexpr, GROUP_P2: tl.constexpr, NB: tl.constexpr, SUB: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, HAS_NUM_NEW: tl.constexpr,
    MODE: tl.constexpr, N_BISECT: tl.constexpr, N_NEWTON: tl.constexpr,
):  # fmt: skip
    inv_sigma = tl.cast(inv_sigma, tl.float32)
    am1, d, one_minus_alpha = tl.cast(am1, tl.float32), tl.cast(d, tl.float32), tl.cast(one_minus_alpha, tl.float32)
    bh = tl.program_id(0).to(tl.int64)  # int64 offsets (large B·H·nb)
    b = bh // num_kv_heads
    h = bh % num_kv_heads
    length = tl.load(LENGTHS + b)
    if HAS_NUM_NEW:
        n_new = tl.load(NUM_NEW + b).to(length.dtype)
    else:
        n_new = 1
    pos = tl.where(n_new > 0, length - n_new, -1)
    own = tl.where(pos >= 0, pos // BLOCK_SIZE, -1)

    # rows = the group's heads; block c of row g sits at [c // SUB, g, c % SUB]
    cols3 = tl.arange(0, NB // SUB)[:, None, None] * SUB + tl.arange(0, SUB)[None, None, :]
    g3 = tl.arange(0, GROUP_P2)[None, :, None]
    eligible = (cols3 < own) & (cols3 < num_blocks) & (g3 < GROUP)
    z = tl.load(Z + (bh * GROUP + g3) * num_blocks + cols3, mask=eligible, other=-float("inf"))
    p_bar = tl.sum(entmax_rows_split(z, am1, d, one_minus_alpha, MODE, N_BISECT, N_NEWTON), axis=1) / GROUP

    cols = tl.arange(0, NB // SUB)[:, None] * SUB + tl.arange(0, SUB)[None, :]
    selected = p_bar > 0
    log_p = tl.log(tl.where(selected, p_bar, 1.0))
    n_sel = tl.maximum(tl.sum(tl.sum(selected.to(tl.float32), axis=1), axis=0), 1.0)
    mean = tl.sum(tl.sum(tl.where(selected, log_p, 0.0), axis=1), axis=0) / n_sel
    prior = tl.where(selected, (log_p - mean) * inv_sigma, 0.0)
    active = selected | (cols == own)
    in_row = cols < num_blocks
    row_base = bh * num_blocks
    tl.store(PRIOR + row_base + cols, prior, mask=in_row)
    tl.store(ACTIVE + row_base + cols, active.to(tl.int8), mask=in_row)

    # compact list: active blocks first, in order (slot = prefix count − 1), zeros after
    flat = tl.reshape(active & in_row, [NB]).to(tl.int32)
    c_flat = tl.reshape(cols, [NB])
    upto = tl.cumsum(flat, axis=0)
    count = tl.sum(flat, axis=0)
    slot = tl.where(flat > 0, upto - 1, count + c_flat - upto)
    tl.store(LIST + row_base + slot, tl.where(flat > 0, c_flat, 0), mask=c_flat < num_blocks)
    tl.store(COUNT + bh, count)
    if h == 0:
        tl.store(POS + b, pos.to(tl.int64))


def select_launch(group: int, nb_padded: int) -> tuple[int, int]:
    """``(SUB, num_warps)`` of ``_decode_select`` for ``group`` query heads per KV head and rows of
    ``nb_padded`` blocks. One program per (sequence, KV head): the solve's latency is the step's.
    Every warp on the row's pieces (SUB) and the group's rows in each thread: the row reductions
    then run the rows side by side. H200, 128K (run 66, G = 4, 2048 blocks): 0.010 ms at (SUB 512,
    4 warps) against 0.030 at (512, 8) with two warps a row and 0.032 at (128, 4) with a warp a row."""
    elements = triton.next_power_of_2(group) * nb_padded
    warps = 4 if elements <= 8192 else (8 if elements <= 16384 else 16)
    return min(nb_padded, 128 * warps), warps


def decode_selection_launch(
    query: torch.Tensor,
    summaries: torch.Tensor,
    lengths: torch.Tensor,
    num_new: torch.Tensor | None,
    alpha: float,
    selection_scale: float,
    inv_sigma: float,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(active, prior, block_list, count, pos)`` as :func:`.torch_impl.decode_selection_torch`.
    Launches directly (CUDA, or the Triton interpreter on CPU tensors in tests)."""
    B, Hq, D = query.shape
    Hkv, nb = summaries.shape[1], summaries.shape[2]
    G = Hq // Hkv
    NB = max(16, triton.next_power_of_2(nb))
    if NB > MAX_DECODE_BLOCKS:
        raise ValueError(f"decode_selection: {nb} blocks exceed the register row limit {MAX_DECODE_BLOCKS}")
    dev = query.device
    z = torch.empty(B * Hkv, G, nb, device=dev, dtype=torch.float32)
    _decode_scores[(triton.cdiv(nb, CHUNK), B * Hkv)](
        query, summaries, z, nb, Hkv, *query.stride(), *summaries.stride(), selection_scale / D**0.5,
        GROUP=G, HEAD_DIM=D, BLOCK_D=max(16, triton.next_power_of_2(D)), CHUNK=CHUNK, num_warps=4,
    )  # fmt: skip
    active = torch.empty(B, Hkv, nb, device=dev, dtype=torch.bool)
    prior = torch.empty(B, Hkv, nb, device=dev, dtype=torch.float32)
    block_list = torch.empty(B, Hkv, nb, device=dev, dtype=torch.int32)
    count = torch.empty(B, Hkv, device=dev, dtype=torch.int32)
    pos = torch.empty(B, device=dev, dtype=torch.int64)
    mode, n_bisect, n_newton = solver_schedule(alpha, nb, torch.float32)
    sub, warps = select_launch(G, NB)
    _decode_select[(B * Hkv,)](
        z, lengths, lengths if num_new is None else num_new, active.view(torch.int8), prior, block_list, count, pos,
        nb, Hkv, inv_sigma, alpha - 1.0, 1.0 / (alpha - 1.0), 1.0 - alpha,
        GROUP=G, GROUP_P2=triton.next_power_of_2(G), NB=NB, SUB=sub, BLOCK_SIZE=block_size,
        HAS_NUM_NEW=num_new is not None, MODE=mode, N_BISECT=n_bisect, N_NEWTON=n_newton,
        num_warps=warps,
    )  # fmt: skip
    return active, prior, block_list, count, pos


@triton.jit
def _merge_splits(
    ACC, M, L, OUT, n_splits, num_kv_heads,
    stride_ob, stride_oh, stride_od,
    GROUP: tl.constexpr, GROUP_P2: tl.constexpr, VALUE_DIM: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0).to(tl.int64)  # int64 offsets (large B·H·nb)
    b = bh // num_kv_heads
    h = bh % num_kv_heads
    offs_g = tl.arange(0, GROUP_P2)
    offs_dv = tl.arange(0, BLOCK_DV)
    row = offs_g < GROUP
    dv_ok = offs_dv < VALUE_DIM
    m_run = tl.full([GROUP_P2], float("-inf"), tl.float32)
    l_run = tl.zeros([GROUP_P2], tl.float32)
    acc_run = tl.zeros([GROUP_P2, BLOCK_DV], tl.float32)
    for s in range(n_splits):
        r = (bh * n_splits + s) * GROUP + offs_g
        m_s = tl.load(M + r, mask=row, other=float("-inf"))
        l_s = tl.load(L + r, mask=row, other=0.0)
        a_s = tl.load(ACC + r[:, None] * VALUE_DIM + offs_dv[None, :], mask=row[:, None] & dv_ok[None, :], other=0.0)
        m_new = tl.maximum(m_run, m_s)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # every split so far empty: weights 0
        w_run = tl.exp(m_run - m_safe)
        w_s = tl.exp(m_s - m_safe)
        l_run = l_run * w_run + l_s * w_s
        acc_run = acc_run * w_run[:, None] + a_s * w_s[:, None]
        m_run = m_new
    out = acc_run / tl.where(l_run > 0, l_run, 1.0)[:, None]  # a row with no visible key: zeros
    tl.store(
        OUT + b * stride_ob + (h * GROUP + offs_g)[:, None] * stride_oh + offs_dv[None, :] * stride_od,
        out.to(OUT.dtype.element_ty),
        mask=row[:, None] & dv_ok[None, :],
    )


def merge_splits_launch(acc: torch.Tensor, m: torch.Tensor, denom: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Combine per-split states ``acc [B, Hkv, S, G, Dv]``, ``m / denom [B, Hkv, S, G]`` into
    ``out [B, Hq, Dv]`` (written in place, in its dtype); rows with no visible key give zeros."""
    B, Hkv, S, G, Dv = acc.shape
    _merge_splits[(B * Hkv,)](
        acc, m, denom, out, S, Hkv, *out.stride(),
        GROUP=G, GROUP_P2=triton.next_power_of_2(G), VALUE_DIM=Dv, BLOCK_DV=max(16, triton.next_power_of_2(Dv)),
        num_warps=4,
    )  # fmt: skip
    return out
