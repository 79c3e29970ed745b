"""The coarse stage as three high-occupancy Triton kernels (the CUDA path of
``dash_flex::coarse_selection``):

1. ``_coarse_scores``: a tiled GEMM ``z = selection_scale · q·k̄ᵀ / √D`` per query head, one
   program per (``BM`` rows, ``BN`` blocks, batch·head), over chunks of query rows. Tiles
   entirely above the causal diagonal are skipped (nothing in them is eligible). For 16-bit
   queries ``k̄`` (fp32) is split into a high and a low 16-bit part and the two products summed
   (~16 mantissa bits; a single TF32 dot moved entmax probabilities by ~5% on the H200); fp32
   queries use an IEEE dot.
2. ``_group_entmax``: one program per (a few query rows, batch·KV head) of the chunk: each of
   the group's ``G`` heads' rows is loaded whole (only the eligible blocks are read), solved in
   registers by the entmax kernels' shared solver and summed into ``p̄``, written row-major
   (``probs``) with each row's mean of ``log p̄`` over its support.
3. ``_block_major_prior``: 64 × 64 tiles of ``p̄`` → the log-prior and the kept + forced flags,
   written block-major (query index contiguous), the layout the fine stage reads.

``coarse_selection_rows_launch`` (inference, ``dash_flex::coarse_selection_rows``) runs the first
two only, and solves a chunk's 512-block register rows that reach at most 384 blocks as 256 + 128
(:func:`inference_row_split`); the block-major op keeps whole rows, which its VJP repeats.

The backward (``coarse_selection_backward_split``) reuses the score GEMM to recompute ``z``;
``_group_entmax_vjp`` forms ``∂L/∂p̄`` from the gradients of both outputs (the log-prior's chain
rule included) and turns ``z`` into ``dz`` in place (entmax recomputed per head, then its VJP);
``_coarse_dq`` and ``_coarse_dk_bar`` are the two GEMMs ``dz·k̄`` and ``dzᵀ·q`` on tensor cores.

Why not a single fused kernel? The previous one (session 3, removed) kept ``z`` in a
per-program scratch to avoid writing it, but needed 16 warps per program and serial phases with
barriers: 8.9 ms at 32K on the H200, latency-bound; these two take 4.6 ms. Here ``z`` goes
through global memory in chunks of at most ``Z_BUDGET_BYTES`` (never a ``[B, Hq, Sq, nb]``
fp32 tensor), and both kernels run many small programs per SM.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..entmax.torch_impl import MODE_ENTMAX15, solver_schedule
from ..entmax.triton_kernels import _row_sum, _rows_sum, entmax_rows_split, entmax_rows_split_tail, piece_width

LN2 = tl.constexpr(0.6931471805599453)
BM = 64  # query rows per chunk are a multiple of this
# score GEMM: query rows × blocks per program, num_warps. H200, 128K (32K): (128, 128, 8) 9.50 ms
# (0.70), (128, 64, 4) 10.10 (0.69), (64, 64, 4) 11.65 (0.79), (64, 128, 4) 12.25 (0.89).
SCORE_TILE = (128, 128, 8)
# The looped GEMM (SCORE_LOOP 1: a program per row tile walks its blocks, its query tile loaded
# once) against the tiled one (0), H200 run 42, sum over 32K's chunks: looped (128, 64, 8)
# 0.665 ms, (64, 64, 4) 0.789; tiled (128, 128, 8) 0.735. Fetching the next k̄ tile a step ahead
# by hand lost (0.736–1.861 ms) and was removed: the device's Triton 3.6 appears to pipeline the
# loop itself (it asked 294912 B of shared memory for a looped (128, 128, 8), i.e. 3 stages).
# Session 14 (runs 72-73, (BM, BN, warps, stages), 32K sum / 128K sum over its timed chunks):
# (128, 32, 8, 4) 0.638 / 0.392 ms against (128, 64, 8, 3) 0.669 / 0.408; (256, 32, 8, 4) 0.665 /
# 0.379, (128, 64, 8, 4) 0.680 / 0.380. The GEMM is not bound by the bytes it writes: fp16 scores
# took 0.616 ms (run 69). On the H200 (128, 64, 8, 3) used 74 registers and 160 KB of shared
# memory (one program an SM); capping registers changed nothing (run 70).
SCORE_LOOP, SCORE_LOOP_TILE = 1, (128, 32, 8, 4)
# Rows of SCORE_WIDE_FROM blocks or more (128K) walk 64 blocks a step: H200, run 79, sum over the
# chunks, (128, 64, 8, 4) 7.74 ms against 8.08-8.22 at 128K, but 0.657 against 0.607 at 32K.
SCORE_WIDE_FROM, SCORE_WIDE_TILE = 2048, (128, 64, 8, 4)
Z_BUDGET_BYTES = 256 * 2**20  # the fp32 score chunk
# The inference op (coarse_selection_rows, split register rows) takes twice that: fewer, taller
# chunks. Training keeps Z_BUDGET_BYTES: its VJP repeats the forward's chunks (the same chunk widths
# give the same p̄ bits, which the prior's gradient needs). H100,
# run 93, the launch at 256 / 512 / 1024 MiB, two passes: 32K (4096 / 8192 / 16384 rows) 1.466 /
# 1.422, 1.362 / 1.371, 1.413 / 1.423 ms; 128K (1024 / 2048 / 4096 rows) 20.64 / 20.61, 19.80 /
# 19.77, 19.41 / 19.41 ms. Smaller chunks lose (run 92: 128 MiB 1.55 / 1.49 ms at 32K, 32.1 at
# 128K): shorter grids. 512 MiB adds 0.25 GiB to the 128K call's extra peak.
ROWS_Z_BUDGET_BYTES = 512 * 2**20
MAX_BLOCKS = 8192  # longest row of blocks solved in registers
PRIOR_TILE = 64  # rows × blocks per program of the block-major prior writer


@triton.jit
def _summary_tile(KB_HI, KB_LO, kb_base, c, num_blocks, stride_kc, stride_kd,
                  HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr):  # fmt: skip
    """k̄'s rows ``c`` (zeros past ``num_blocks``) as its two parts; for IEEE the one fp32 part twice."""
    offs_d = tl.arange(0, BLOCK_D)
    kb_offs = kb_base + c[:, None] * stride_kc + offs_d[None, :] * stride_kd
    kb_mask = (c < num_blocks)[:, None] & (offs_d < HEAD_DIM)[None, :]
    kb_hi = tl.load(KB_HI + kb_offs, mask=kb_mask, other=0.0)
    if IEEE:
        return kb_hi, kb_hi
    return kb_hi, tl.load(KB_LO + kb_offs, mask=kb_mask, other=0.0)


@triton.jit
def _score_tile(q, kb_hi, kb_lo, c, t, Z, z_base, q_len, num_blocks, stride_zt, stride_zc, row0, z_scale,
                IEEE: tl.constexpr):  # fmt: skip
    """``z[t, c] = z_scale · q·k̄[c]ᵀ`` for one tile of blocks ``c`` (masked past ``num_blocks``)."""
    if IEEE:
        z = tl.dot(q, tl.trans(kb_hi), input_precision="ieee")
    else:
        z = tl.dot(q, tl.trans(kb_hi)) + tl.dot(q, tl.trans(kb_lo))
    tl.store(Z + z_base + (t - row0)[:, None] * stride_zt + c[None, :] * stride_zc, z * z_scale,
             mask=(t < q_len)[:, None] & (c < num_blocks)[None, :])  # fmt: skip


@triton.jit
def _coarse_scores(
    Q, KB_HI, KB_LO, Z, q_len, row0, num_blocks, num_q_heads, causal_offset,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kc, stride_kd,
    stride_zb, stride_zh, stride_zt, stride_zc,
    z_scale,
    GROUP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, CAUSAL: tl.constexpr, IEEE: tl.constexpr, LOOP: tl.constexpr,
):  # fmt: skip
    """Rows ``[row0, q_len)`` (``q_len``: the chunk's end). ``KB_HI`` / ``KB_LO``: k̄'s high and low
    16-bit parts (:func:`split_summaries`); for fp32 queries ``KB_HI`` is k̄ itself (fp32, IEEE
    dot) and ``KB_LO`` is not read. ``LOOP`` 0: one program per (``BM`` rows, ``BN`` blocks) tile;
    1: one per ``BM`` rows, walking the row tile's blocks ``BN`` at a time (its query tile loaded
    once)."""
    z_scale = tl.cast(z_scale, tl.float32)  # Inductor may pass Python floats as fp64
    bh = tl.program_id(2).to(tl.int64)  # int64 offsets: the outputs pass 2³¹ elements at 128K
    b = bh // num_q_heads
    h = bh % num_q_heads
    t = row0 + tl.program_id(0) * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, BLOCK_D)
    reach = num_blocks
    if CAUSAL:  # eligible means c < own(t); the tile's last row has the largest own block
        last = tl.minimum(row0 + tl.program_id(0) * BM + BM, q_len) - 1
        reach = tl.minimum((last + causal_offset) // BLOCK_SIZE, num_blocks)
    kb_base = b * stride_kb + (h // GROUP) * stride_kh
    z_base = b * stride_zb + h * stride_zh
    q_ptrs = Q + b * stride_qb + h * stride_qh + t[:, None] * stride_qt + offs_d[None, :] * stride_qd
    q_mask = (t < q_len)[:, None] & (offs_d < HEAD_DIM)[None, :]
    if LOOP == 0:
        if tl.program_id(1) * BN < reach:
            q = tl.load(q_ptrs, mask=q_mask, other=0.0)
            c = tl.program_id(1) * BN + tl.arange(0, BN)
            kb_hi, kb_lo = _summary_tile(KB_HI, KB_LO, kb_base, c, num_blocks, stride_kc, stride_kd, HEAD_DIM,
                                         BLOCK_D, IEEE)  # fmt: skip
            _score_tile(q, kb_hi, kb_lo, c, t, Z, z_base, q_len, num_blocks, stride_zt, stride_zc, row0, z_scale,
                        IEEE)  # fmt: skip
    else:
        q = tl.load(q_ptrs, mask=q_mask, other=0.0)
        for c0 in range(0, reach, BN):
            c = c0 + tl.arange(0, BN)
            kb_hi, kb_lo = _summary_tile(KB_HI, KB_LO, kb_base, c, num_blocks, stride_kc, stride_kd, HEAD_DIM, BLOCK_D,
                                         IEEE)  # fmt: skip
            _score_tile(q, kb_hi, kb_lo, c, t, Z, z_base, q_len, num_blocks, stride_zt, stride_zc, row0, z_scale,
                        IEEE)  # fmt: skip


# lg2.approx.ftz.f32 flushes subnormal inputs; _log2_scaled's inputs are scaled by 2^24 first, so a
# subnormal p̄ (down to 2^-149) is read as a normal number and its logarithm stays exact. (2^64 would
# do as well for the range, but each log then rounds at the ulp of numbers near 64: the row mean's
# error grew from ~1e-6 to 5-10e-6 in a float32 emulation; near 24 it stays ~1e-6.)
LOG2_SCALE = tl.constexpr(16777216.0)  # 2^24
LOG2_OFFSET = tl.constexpr(24.0)


@triton.jit
def _log2_scaled(x, INTERPRETED: tl.constexpr):
    """``log₂ x + 24`` of ``0 < x ≤ 1`` in one MUFU op, ``lg2.approx.ftz.f32`` of ``x · 2²⁴`` (relative
    error ~2⁻²²; the caller subtracts the 24 once per row, not per entry). Triton lowers ``tl.log``
    and ``tl.log2`` to a ~22-instruction polynomial, which in the entmax kernel's per-row mean of
    ``log p̄`` cost about as many instructions as three of its Newton steps (sm_90 SASS at 512
    blocks: 617 → 222 instructions after the solves). The Triton interpreter (CPU tests) has no
    inline assembly: ``tl.log2`` there."""
    if INTERPRETED:
        return tl.log2(tl.where(x > 0, x, 1.0)) + LOG2_OFFSET
    else:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [x * LOG2_SCALE], dtype=tl.float32,
                                         is_pure=True, pack=1)  # fmt: skip


@triton.jit
def _group_entmax(
    Z, PROBS, MEAN_LOG, q_len, row0, num_blocks, z_cols, causal_offset,
    stride_zb, stride_zh, stride_zt, stride_zc,
    stride_pb, stride_ph, stride_pt, stride_pc,
    stride_mb, stride_mh,
    am1, d, one_minus_alpha,
    GROUP: tl.constexpr, ROWS: tl.constexpr, NB: tl.constexpr, NB_OUT: tl.constexpr, SUB: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, CAUSAL: tl.constexpr, MODE: tl.constexpr, N_BISECT: tl.constexpr,
    N_NEWTON: tl.constexpr, TAIL: tl.constexpr, INTERPRETED: tl.constexpr, N_HALF: tl.constexpr,
):  # fmt: skip
    """``p̄`` (row-major, as ``probs``) and each row's mean of ``log p̄`` over its selected blocks;
    in training :func:`_block_major_prior` turns both into the prior and the flags, at inference
    the fine stage's list builder reads them. The register row is blocks
    ``[0, NB)`` and, with ``TAIL > 0`` (inference only, :func:`inference_row_split`), ``[NB, NB +
    TAIL)`` in a second tile of ``TAIL // SUB`` pieces."""
    am1, d, one_minus_alpha = tl.cast(am1, tl.float32), tl.cast(d, tl.float32), tl.cast(one_minus_alpha, tl.float32)
    HAS_TAIL: tl.constexpr = TAIL > 0
    TAIL_PIECES: tl.constexpr = max(TAIL // SUB, 1)
    # the grid is (row programs, KV heads, batch): no integer division by the head count (~20
    # instructions of a one-row program); int64 offsets: the outputs pass 2³¹ elements at 128K
    h_kv = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    t = (row0 + tl.program_id(0) * ROWS + tl.arange(0, ROWS))[None, :, None]  # [1, ROWS, 1]
    t_ok = t < q_len
    # block c of row r sits at [c // SUB, r, c % SUB]; the launch sizes SUB so warps split SUB, not K
    cols = tl.arange(0, NB // SUB)[:, None, None] * SUB + tl.arange(0, SUB)[None, None, :]
    cols_t = NB + tl.arange(0, TAIL_PIECES)[:, None, None] * SUB + tl.arange(0, SUB)[None, None, :]
    own = (t + causal_offset) // BLOCK_SIZE
    # BOUND (rows of up to 1024 blocks): loads masked only by the row's allocated columns (z_cols,
    # a multiple of 16 for the chunk buffers) vectorise, 4 entries a load; the ineligible entries
    # they read (unwritten above the causal diagonal: any bits, NaN included) become −inf through a
    # min with a bound tile, +inf on the eligible blocks and −inf past them (min ignores a NaN
    # operand). The bound is arithmetic, (blocks left − ½)·∞: as a select the compiler turned the
    # min back into per-entry predicates. A per-entry load mask costs one load and ~3 predicate
    # instructions per entry (sm_90 SASS at 512 blocks: a thread's 16 predicates do not fit its 7
    # predicate registers; 119 → 99 instructions per head before the solve). Wider rows keep the
    # per-entry masks: the bound tile's registers made 2048-block rows spill. (A NaN score on an
    # eligible block, from non-finite inputs, becomes +inf here and empties the row; with the
    # masks, as in the VJP, it is dropped. Finite inputs give finite scores.)
    BOUND: tl.constexpr = NB + TAIL <= 1024
    end = own if CAUSAL else num_blocks
    if BOUND:
        load_ok = (cols < z_cols) & t_ok
        load_ok_t = (cols_t < z_cols) & t_ok
        bound = ((end - cols).to(tl.float32) - 0.5) * float("inf")
        bound_t = ((end - cols_t).to(tl.float32) - 0.5) * float("inf")
    else:
        load_ok = (cols < end) & t_ok
        load_ok_t = (cols_t < end) & t_ok
    p_bar = tl.zeros([NB // SUB, ROWS, SUB], tl.float32)
    p_bar_t = tl.zeros([TAIL_PIECES, ROWS, SUB], tl.float32)
    z_row = Z + b * stride_zb + (t - row0) * stride_zt
    for g in range(GROUP):
        head = (h_kv * GROUP + g) * stride_zh
        z = tl.load(z_row + head + cols * stride_zc, mask=load_ok, other=-float("inf"))
        if BOUND:
            z = tl.minimum(z, bound, propagate_nan=tl.PropagateNan.NONE)
        if HAS_TAIL:
            z_t = tl.load(z_row + head + cols_t * stride_zc, mask=load_ok_t, other=-float("inf"))
            if BOUND:
                z_t = tl.minimum(z_t, bound_t, propagate_nan=tl.PropagateNan.NONE)
            p, p_t = entmax_rows_split_tail(z, z_t, am1, d, one_minus_alpha, MODE, N_BISECT, N_NEWTON, True, N_HALF)
            p_bar += p
            p_bar_t += p_t
        else:
            p, _ = entmax_rows_split_tail(z, z, am1, d, one_minus_alpha, MODE, N_BISECT, N_NEWTON, False, N_HALF)
            p_bar += p
    p_bar = p_bar / GROUP
    p_bar_t = p_bar_t / GROUP
    out_row = PROBS + b * stride_pb + h_kv * stride_ph + t * stride_pt
    tl.store(out_row + cols * stride_pc, p_bar, mask=t_ok & (cols < num_blocks))
    if HAS_TAIL:
        tl.store(out_row + cols_t * stride_pc, p_bar_t, mask=t_ok & (cols_t < num_blocks))
    selected, selected_t = p_bar > 0, p_bar_t > 0
    log_p = tl.where(selected, _log2_scaled(p_bar, INTERPRETED), 0.0)  # log₂ p̄ + 24 on the support
    log_p_t = tl.where(selected_t, _log2_scaled(p_bar_t, INTERPRETED), 0.0)
    n_sel = _rows_sum(selected.to(tl.float32), selected_t.to(tl.float32), HAS_TAIL)
    rows = row0 + tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    # natural log, as the prior's; 0 for a row that selects nothing (before any key block)
    mean = (_rows_sum(log_p, log_p_t, HAS_TAIL) - LOG2_OFFSET * n_sel) / tl.maximum(n_sel, 1.0) * LN2
    tl.store(MEAN_LOG + b * stride_mb + h_kv * stride_mh + rows, mean, mask=rows < q_len)
    # blocks past this launch's register row (NB + TAIL, cut to the chunk's causal reach): zeros
    t2 = tl.reshape(t, [ROWS, 1])
    for k0 in tl.static_range(NB + TAIL, NB_OUT, SUB):
        c2 = k0 + tl.arange(0, SUB)[None, :]
        tl.store(PROBS + b * stride_pb + h_kv * stride_ph + t2 * stride_pt + c2 * stride_pc,
                 tl.zeros([ROWS, SUB], tl.float32), mask=(t2 < q_len) & (c2 < num_blocks))  # fmt: skip


@triton.jit
def _block_major_prior(
    PROBS, MEAN_LOG, PRIOR, ACTIVE, q_len, num_blocks, nb_pad, sq_pad, num_kv_heads, causal_offset,
    stride_pb, stride_ph, stride_pt,
    stride_mb, stride_mh,
    stride_rb, stride_rh, stride_rc,
    stride_ab, stride_ah, stride_ac,
    inv_sigma,
    TM: tl.constexpr, TN: tl.constexpr, BLOCK_SIZE: tl.constexpr, CAUSAL: tl.constexpr,
):  # fmt: skip
    """One (``TM`` rows × ``TN`` blocks) tile: the log-prior ``(log p̄ − mean) / σ`` on the selected
    blocks (0 elsewhere) and the kept + forced flags, written block-major (query index
    contiguous) over the padded ``[nb_pad, sq_pad]`` range. Reading ``p̄`` row-major and writing
    whole tiles keeps both sides coalesced: the entmax kernel's programs own 1–16 rows, and its
    block-major stores of 4–64 contiguous bytes cost 24 of 69 ms at 128K (H200). The innermost
    strides are 1 (fresh contiguous tensors) and written so: the compiler then knows which axis
    is contiguous on each side and transposes through shared memory."""
    inv_sigma = tl.cast(inv_sigma, tl.float32)
    bh = tl.program_id(2).to(tl.int64)
    b = bh // num_kv_heads
    h_kv = bh % num_kv_heads
    t = tl.program_id(0) * TM + tl.arange(0, TM)
    c = tl.program_id(1) * TN + tl.arange(0, TN)
    t_ok = t < q_len
    live = True
    if CAUSAL:  # tiles above the diagonal hold no selected or forced block
        last = tl.minimum(tl.program_id(0) * TM + TM, q_len) - 1
        live = tl.program_id(1) * TN <= (last + causal_offset) // BLOCK_SIZE
    if live:
        p = tl.load(
            PROBS + b * stride_pb + h_kv * stride_ph + t[:, None] * stride_pt + c[None, :],
            mask=t_ok[:, None] & (c < num_blocks)[None, :],
            other=0.0,
        )
    else:
        p = tl.zeros([TM, TN], tl.float32)
    mean = tl.load(MEAN_LOG + b * stride_mb + h_kv * stride_mh + t, mask=t_ok, other=0.0)
    selected = p > 0
    prior = tl.where(selected, (tl.log(tl.where(selected, p, 1.0)) - mean[:, None]) * inv_sigma, 0.0)
    active = selected
    if CAUSAL:
        active = active | ((c[None, :] == ((t + causal_offset) // BLOCK_SIZE)[:, None]) & t_ok[:, None])
    out_mask = (t < sq_pad)[:, None] & (c < nb_pad)[None, :]
    tl.store(PRIOR + b * stride_rb + h_kv * stride_rh + c[None, :] * stride_rc + t[:, None], prior,
             mask=out_mask)  # fmt: skip
    tl.store(ACTIVE + b * stride_ab + h_kv * stride_ah + c[None, :] * stride_ac + t[:, None],
             active.to(tl.int8), mask=out_mask)  # fmt: skip


@triton.jit
def _group_entmax_vjp(
    Z, DZ_SPLIT, GRAD, DPRIOR, PROBS, q_len, row0, num_blocks, num_kv_heads, causal_offset, lo_offset,
    stride_zb, stride_zh, stride_zt, stride_zc,
    stride_gb, stride_gh, stride_gt, stride_gc,
    stride_rb, stride_rh, stride_rc, stride_rt,
    stride_pb, stride_ph, stride_pt, stride_pc,
    am1, d, one_minus_alpha, inv_sigma,
    GROUP: tl.constexpr, ROWS: tl.constexpr, NB: tl.constexpr, NB_OUT: tl.constexpr, SUB: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, CAUSAL: tl.constexpr, MODE: tl.constexpr, N_BISECT: tl.constexpr,
    N_NEWTON: tl.constexpr, HAS_GRAD_PROBS: tl.constexpr, HAS_GRAD_PRIOR: tl.constexpr, SPLIT: tl.constexpr,
):  # fmt: skip
    """The backward's middle: ``g = ∂L/∂p̄`` from the two outputs' gradients — ``GRAD`` (of
    ``probs``, row-major) plus the log-prior's chain rule on ``DPRIOR`` (of the prior, block-major)
    with the saved ``p̄`` (``PROBS``): ``(δ_c − mean_{S} δ) / (σ p̄_c)`` on the support ``S`` —
    then, for each head of the group, recompute ``p = entmax(z)`` from the scores and overwrite
    them, in place, with ``dz = s ⊙ (g/G − Σ s·g/G / Σ s)`` (``s = p^{2−α}`` on the support);
    0 off the support (rows past ``q_len`` are not written). With ``SPLIT``, ``dz`` is written as
    two bf16 parts in the same bytes (``DZ_SPLIT``, a bf16 view of ``Z``: the high part in columns
    ``[0, nb)`` of the row, the rounding error from column ``lo_offset`` on) for the GEMMs' tensor
    cores. Each program owns its rows; the parts depend on the whole row's reductions, so they are
    stored after every thread's load, and a barrier orders the constant tail stores, whose bytes
    (high-part columns ``[NB, nb)`` = fp32 columns ``[NB/2, nb/2)``) other threads may have loaded."""
    am1, d, one_minus_alpha = tl.cast(am1, tl.float32), tl.cast(d, tl.float32), tl.cast(one_minus_alpha, tl.float32)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // num_kv_heads
    h_kv = bh % num_kv_heads
    t = (row0 + tl.program_id(0) * ROWS + tl.arange(0, ROWS))[None, :, None]
    t_ok = t < q_len
    cols = tl.arange(0, NB // SUB)[:, None, None] * SUB + tl.arange(0, SUB)[None, None, :]
    if CAUSAL:
        eligible = (cols < (t + causal_offset) // BLOCK_SIZE) & t_ok
    else:
        eligible = (cols < num_blocks) & t_ok
    g = tl.zeros([NB // SUB, ROWS, SUB], tl.float32)
    if HAS_GRAD_PROBS:
        grad_ptr = GRAD + b * stride_gb + h_kv * stride_gh + t * stride_gt + cols * stride_gc
        g += tl.load(grad_ptr, mask=eligible, other=0.0)
    if HAS_GRAD_PRIOR:  # the prior is (log p̄ − its mean over the support) / σ
        p_bar = tl.load(PROBS + b * stride_pb + h_kv * stride_ph + t * stride_pt + cols * stride_pc, mask=eligible,
                        other=0.0)  # fmt: skip
        selected = p_bar > 0
        delta = tl.load(DPRIOR + b * stride_rb + h_kv * stride_rh + cols * stride_rc + t * stride_rt,
                        mask=selected, other=0.0)  # fmt: skip
        n_sel = tl.maximum(_row_sum(selected.to(tl.float32)), 1.0)
        centred = delta - (_row_sum(delta) / n_sel)[None, :, None]
        g += tl.where(selected, centred * tl.cast(inv_sigma, tl.float32) / tl.where(selected, p_bar, 1.0), 0.0)
    g = g * (1.0 / GROUP)
    for head in range(GROUP):
        z_ptr = Z + b * stride_zb + (h_kv * GROUP + head) * stride_zh + (t - row0) * stride_zt + cols * stride_zc
        z = tl.load(z_ptr, mask=eligible, other=-float("inf"))
        p = entmax_rows_split(z, am1, d, one_minus_alpha, MODE, N_BISECT, N_NEWTON)
        if MODE == 0:
            s = (p > 0).to(tl.float32)
        elif MODE == 1:
            s = tl.sqrt(p)
        else:
            s = tl.where(p > 0, tl.exp2((1.0 + one_minus_alpha) * tl.log2(tl.where(p > 0, p, 1.0))), 0.0)
        s_sum = _row_sum(s)
        mean_g = _row_sum(s * g) / tl.where(s_sum > 0, s_sum, 1.0)
        dz = tl.where(p > 0, s * (g - mean_g[None, :, None]), 0.0)
        row_base = (h_kv * GROUP + head) * stride_zh + (t - row0) * stride_zt
        t2 = tl.reshape(t, [ROWS, 1])
        tail_base = (h_kv * GROUP + head) * stride_zh + (t2 - row0) * stride_zt
        if SPLIT:  # bf16 view: twice the fp32 strides
            hi = dz.to(tl.bfloat16)
            lo = (dz - hi.to(tl.float32)).to(tl.bfloat16)
            split_ptr = DZ_SPLIT + 2 * (b * stride_zb + row_base) + cols * stride_zc
            tl.store(split_ptr, hi, mask=t_ok & (cols < num_blocks))
            tl.store(split_ptr + lo_offset, lo, mask=t_ok & (cols < num_blocks))
        else:
            tl.store(z_ptr, dz, mask=t_ok & (cols < num_blocks))
        if SPLIT and NB < NB_OUT:
            tl.debug_barrier()
        for k0 in tl.static_range(NB, NB_OUT, SUB):  # blocks past the chunk's causal reach: dz = 0
            c2 = k0 + tl.arange(0, SUB)[None, :]
            tail_mask = (t2 < q_len) & (c2 < num_blocks)
            if SPLIT:
                tail_ptr = DZ_SPLIT + 2 * (b * stride_zb + tail_base) + c2 * stride_zc
                tl.store(tail_ptr, tl.zeros([ROWS, SUB], tl.bfloat16), mask=tail_mask)
                tl.store(tail_ptr + lo_offset, tl.zeros([ROWS, SUB], tl.bfloat16), mask=tail_mask)
            else:
                tail_ptr = Z + b * stride_zb + tail_base + c2 * stride_zc
                tl.store(tail_ptr, tl.zeros([ROWS, SUB], tl.float32), mask=tail_mask)


@triton.jit
def _bf16_dot(a, b, INTERPRETED: tl.constexpr):
    """``a·b`` of bf16 tiles, fp32 accumulation. Triton's interpreter multiplies bf16 tiles as the
    raw uint16 bits (numpy has no bf16), so under it the exact fp32 values are multiplied instead."""
    if INTERPRETED:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _coarse_dq(
    DZ, KB_HI, KB_LO, DQ, q_len, row0, num_blocks, num_q_heads, causal_offset, lo_offset,
    stride_zb, stride_zh, stride_zt, stride_zc,
    stride_kb, stride_kh, stride_kc, stride_kd,
    stride_qb, stride_qh, stride_qt, stride_qd,
    c_scale,
    GROUP: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, CAUSAL: tl.constexpr, SPLIT: tl.constexpr, INTERPRETED: tl.constexpr,
):  # fmt: skip
    """``dq[t] = c · Σ_c dz[t, c] k̄[c]`` for the chunk's rows ``[row0, q_len)`` of one query head,
    written in the query's dtype. ``SPLIT``: ``dz`` and ``k̄`` as bf16 high + low parts (``DZ``
    the VJP kernel's bf16 view, low part at ``lo_offset``), three bf16 products (~16 mantissa
    bits); otherwise fp32 and an IEEE dot (fp32 inputs). Under causal masking ``dz[t, c] = 0``
    for ``c ≥ own(t)``: the sum stops at the tile's last row's own block."""
    bh = tl.program_id(1).to(tl.int64)
    b = bh // num_q_heads
    h = bh % num_q_heads
    t = row0 + tl.program_id(0) * BM + tl.arange(0, BM)
    t_ok = t < q_len
    offs_d = tl.arange(0, BLOCK_D)
    offs_k = tl.arange(0, BK)
    if CAUSAL:
        reach = (tl.minimum(row0 + tl.program_id(0) * BM + BM, q_len) - 1 + causal_offset) // BLOCK_SIZE
        reach = tl.minimum(tl.maximum(reach, 0), num_blocks)
    else:
        reach = num_blocks
    z_base = DZ + b * stride_zb + h * stride_zh + (t - row0)[:, None] * stride_zt
    k_offs = b * stride_kb + (h // GROUP) * stride_kh + offs_d[None, :] * stride_kd
    acc = tl.zeros([BM, BLOCK_D], tl.float32)
    for c0 in range(0, reach, BK):
        c = c0 + offs_k
        z_mask = t_ok[:, None] & (c < reach)[None, :]
        k_mask = (c < reach)[:, None] & (offs_d < HEAD_DIM)[None, :]
        dz = tl.load(z_base + c[None, :] * stride_zc, mask=z_mask, other=0.0)
        kb_hi = tl.load(KB_HI + k_offs + c[:, None] * stride_kc, mask=k_mask, other=0.0)
        if SPLIT:
            dz_lo = tl.load(z_base + lo_offset + c[None, :] * stride_zc, mask=z_mask, other=0.0)
            kb_lo = tl.load(KB_LO + k_offs + c[:, None] * stride_kc, mask=k_mask, other=0.0)
            acc += _bf16_dot(dz, kb_hi, INTERPRETED) + _bf16_dot(dz, kb_lo, INTERPRETED)
            acc += _bf16_dot(dz_lo, kb_hi, INTERPRETED)
        else:
            acc += tl.dot(dz, kb_hi, input_precision="ieee")
    acc = acc * tl.cast(c_scale, tl.float32)
    tl.store(DQ + b * stride_qb + h * stride_qh + t[:, None] * stride_qt + offs_d[None, :] * stride_qd,
             acc.to(DQ.dtype.element_ty), mask=t_ok[:, None] & (offs_d < HEAD_DIM)[None, :])  # fmt: skip


@triton.jit
def _coarse_dk_bar(
    DZ, Q, DKB, row0, n_rows, num_blocks, num_kv_heads, causal_offset, rows_per_split, lo_offset,
    stride_zb, stride_zh, stride_zt, stride_zc,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_ks, stride_kb, stride_kh, stride_kc,
    c_scale,
    GROUP: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, CAUSAL: tl.constexpr, SPLIT: tl.constexpr, INTERPRETED: tl.constexpr,
):  # fmt: skip
    """``dk̄[c] += c · Σ_{g, t} dz[g, t, c] q[g, t]`` over one slice of the chunk's rows
    (``program_id(2)``: ``rows_per_split`` rows each) and the group's ``GROUP`` query heads, added
    into that slice's own partial sum ``DKB[split]`` (read-modify-write: each (slice, blocks, KV
    head) has one program per launch and launches run in order, so the sums are deterministic).
    ``SPLIT``: ``dz`` as bf16 high + low parts (as :func:`_coarse_dq`) and ``q`` as bf16 (exact)
    or, for fp16 queries, its own bf16 high + low parts; otherwise fp32 IEEE dots. Under causal
    masking rows before the first that sees block ``c0`` are skipped."""
    bkv = tl.program_id(1).to(tl.int64)
    b = bkv // num_kv_heads
    h_kv = bkv % num_kv_heads
    split = tl.program_id(2)
    c = tl.program_id(0) * BN + tl.arange(0, BN)
    c_ok = c < num_blocks
    offs_d = tl.arange(0, BLOCK_D)
    offs_m = tl.arange(0, BM)
    first = split * rows_per_split  # relative to row0
    end = tl.minimum(first + rows_per_split, n_rows)
    if CAUSAL:  # row t sees block c when c < own(t), i.e. t + offset ≥ (c + 1)·bs
        seen_from = (tl.program_id(0) * BN + 1) * BLOCK_SIZE - causal_offset - row0
        first = tl.maximum(first, seen_from // BM * BM)
    acc = tl.zeros([BN, BLOCK_D], tl.float32)
    for head in range(GROUP):
        h = h_kv * GROUP + head
        for m0 in range(first, end, BM):
            r = m0 + offs_m
            r_ok = r < end  # r ≥ first ≥ 0
            z_ptr = DZ + b * stride_zb + h * stride_zh + r[:, None] * stride_zt + c[None, :] * stride_zc
            dz = tl.load(z_ptr, mask=r_ok[:, None] & c_ok[None, :], other=0.0)
            q_ptr = Q + b * stride_qb + h * stride_qh + (row0 + r)[:, None] * stride_qt + offs_d[None, :] * stride_qd
            q = tl.load(q_ptr, mask=r_ok[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
            if SPLIT:
                dz_lo = tl.load(z_ptr + lo_offset, mask=r_ok[:, None] & c_ok[None, :], other=0.0)
                q_hi = q.to(tl.bfloat16)
                acc += _bf16_dot(tl.trans(dz), q_hi, INTERPRETED) + _bf16_dot(tl.trans(dz_lo), q_hi, INTERPRETED)
                if Q.dtype.element_ty != tl.bfloat16:  # fp16: q = q_hi + q_lo exactly
                    q_lo = (q.to(tl.float32) - q_hi.to(tl.float32)).to(tl.bfloat16)
                    acc += _bf16_dot(tl.trans(dz), q_lo, INTERPRETED)
            else:
                acc += tl.dot(tl.trans(dz), q.to(tl.float32), input_precision="ieee")
    out = DKB + split * stride_ks + b * stride_kb + h_kv * stride_kh + c[:, None] * stride_kc + offs_d[None, :]
    mask = c_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    tl.store(out, tl.load(out, mask=mask, other=0.0) + acc * tl.cast(c_scale, tl.float32), mask=mask)


def row_fits(nb_pad: int) -> bool:
    """Whether rows of ``nb_pad`` blocks fit the entmax kernel's register tile."""
    return triton.next_power_of_2(nb_pad) <= MAX_BLOCKS


# (rows per program, num_warps) of the entmax kernels per register row length, the same for the
# forward and the VJP: the VJP recomputes each head's p, and the same launch makes it bitwise the
# forward's (a tiny p̄ cannot drop in or out of the support, where the prior's gradient divides by
# it). Since session 13 the row reductions sum a thread's pieces first (piece_width), and one warp
# per program is fastest at every width up to 2048, forward and VJP (H200 runs 63-64,
# scripts/study_coarse_kernels.py: 1024 blocks 0.092 ms a 128K chunk against 0.125 over 2 warps,
# VJP 0.19 against 1.47; 2048 0.178 against 0.221, VJP 0.31 against 1.56; 32K's chunks 1.06 ms in
# all against 1.42 before). 4096 blocks (past 128K tokens) is not measured. Before session 13
# (reductions per piece) the table had (1, 2) at 1024 and 2048 (128K dash_select_only 46.44 →
# 44.70 ms against (4, 4) / (2, 4), runs 47-48); (1, 2) was never the cause of the 128K stall
# (docs/entmax.md, "Early exit").
ENTMAX_CONFIGS = {64: (2, 1), 128: (2, 1), 256: (1, 1), 512: (1, 1), 1024: (1, 1), 2048: (1, 1), 4096: (1, 2)}


# Under Triton's interpreter (CPU tests) every program is a Python call: 16 rows per program keep
# the suite fast (1-row programs doubled its time). Each row's solve is independent of the others
# in its program, so the results are those of the GPU launch; one test runs the GPU's 1-row launch.
INTERPRETER_ROWS = 16


def entmax_config(nb_padded: int, interpreted: bool = False) -> tuple[int, int]:
    """``(rows, num_warps)`` of the entmax kernel and its VJP for rows of ``nb_padded`` (a power of
    two) blocks; wider rows than the table's span 8 warps. ``interpreted``: ``INTERPRETER_ROWS``."""
    rows, warps = ENTMAX_CONFIGS[max(64, nb_padded)] if nb_padded <= 4096 else (1, 8)
    return (INTERPRETER_ROWS, warps) if interpreted else (rows, warps)


def chunk_width(nb_padded: int, causal: bool, row0: int, n_rows: int, q_len: int, offset: int, block_size: int) -> int:
    """Register row length for the chunk of query rows ``[row0, row0 + n_rows)``: under causal
    masking no row of it reaches past its last row's own block, so early chunks solve narrower
    rows (at 32K, 8 chunks: 2752 instead of 4096 lanes in all, a third less solver work)."""
    if not causal:
        return nb_padded
    last = min(row0 + n_rows, q_len) - 1
    reach = (last + offset) // block_size + 1  # blocks 0 .. own(last)
    return min(nb_padded, max(16, triton.next_power_of_2(max(reach, 1))))


# Inference only (the VJP recomputes p with the whole-row launch, so training keeps it): a chunk
# whose register row is a power of two W in TAIL_SPLIT_WIDTHS but whose causal reach is at most
# 3W/4 solves W/2 blocks plus a W/4 tail tile. H200, one warp a program (run 64): 512 → 256 + 128
# 0.145 ms against 0.171 a 32K chunk; 1024 → 512 + 256 0.072 against 0.092 and 2048 → 1024 + 512
# 0.144 against 0.178 a 128K chunk. Narrower tails (64) force a 64-block piece width, which was
# slower (run 56: 256 + 64 0.192 ms, 128 + 64 0.159 against 0.139 for 256 whole); the wide splits
# lost at 128K in run 56 (44.7 → 62.2 ms) with two-warp programs and reductions per piece.
TAIL_SPLIT_WIDTHS = (512, 1024, 2048)


def inference_row_split(width: int, causal: bool, row0: int, n_rows: int, q_len: int, offset: int, block_size: int,
                        split_widths: tuple[int, ...] | None = None) -> tuple[int, int]:  # fmt: skip
    """``(main, tail)`` blocks of a chunk's register row on the inference path (``tail = 0``: the
    whole ``width`` of :func:`chunk_width`); ``split_widths``: the widths that may split
    (``TAIL_SPLIT_WIDTHS``)."""
    if not causal or width not in (TAIL_SPLIT_WIDTHS if split_widths is None else split_widths):
        return width, 0
    reach = (min(row0 + n_rows, q_len) - 1 + offset) // block_size + 1
    return (width // 2, width // 4) if reach <= 3 * width // 4 else (width, 0)


def chunk_rows(batch: int, q_heads: int, num_blocks: int, sq_pad: int, budget: int | None = None) -> int:
    """Query rows per chunk: the ``[B, Hq, rows, nb]`` fp32 scores fit ``budget`` bytes (a multiple
    of ``BM`` and ``ROWS``, at least one tile)."""
    per_row = batch * q_heads * max(num_blocks, 1) * 4
    rows = (Z_BUDGET_BYTES if budget is None else budget) // per_row
    rows = max(BM, rows // BM * BM)
    return min(rows, -(-sq_pad // BM) * BM)


def split_summaries(k_bar: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """k̄ (fp32) as the score GEMM reads it: for 16-bit queries its high part in ``dtype`` and the
    rounding error in ``dtype`` (the two products sum to ~16 mantissa bits); for fp32, k̄ twice."""
    kb = k_bar.float().contiguous()
    if dtype == torch.float32:
        return kb, kb
    hi = kb.to(dtype)
    return hi, (kb - hi.float()).to(dtype)


def launch_scores(
    query: torch.Tensor,
    kb_parts: tuple[torch.Tensor, torch.Tensor],
    z: torch.Tensor,
    row0: int,
    n_rows: int,
    selection_scale: float,
    causal: bool,
    offset: int,
    block_size: int,
    tile: tuple[int, ...] | None = None,
    looped: int | None = None,
) -> None:
    """``z[:, :, :n_rows] = selection_scale · q[:, :, row0 : row0 + n_rows]·k̄ᵀ / √D`` (fp32; tiles
    above the causal diagonal are left unwritten): the score GEMM of the forward and the backward.
    ``kb_parts`` from :func:`split_summaries`; ``tile = (BM, BN, num_warps[, num_stages])``
    overrides the tile (3 stages by default; the looped default is ``SCORE_WIDE_TILE`` for rows of
    ``SCORE_WIDE_FROM`` blocks or more), ``looped`` (0 tiled, 1 a program per row tile walking its
    blocks; see ``_coarse_scores``) ``SCORE_LOOP``."""
    B, Hq, Sq, D = query.shape
    kb_hi, kb_lo = kb_parts
    nb = kb_hi.shape[2]
    looped = SCORE_LOOP if looped is None else looped
    if tile is None:
        tile = (SCORE_WIDE_TILE if nb >= SCORE_WIDE_FROM else SCORE_LOOP_TILE) if looped else SCORE_TILE
    bm, bn, warps, *stages = tile
    _coarse_scores[(triton.cdiv(n_rows, bm), 1 if looped else triton.cdiv(nb, bn), B * Hq)](
        query, kb_hi, kb_lo, z, row0 + n_rows, row0, nb, Hq, offset, *query.stride(), *kb_hi.stride(), *z.stride(),
        selection_scale / D**0.5,
        GROUP=Hq // kb_hi.shape[1], BM=bm, BN=bn, HEAD_DIM=D, BLOCK_D=max(16, triton.next_power_of_2(D)),
        BLOCK_SIZE=block_size, CAUSAL=causal, IEEE=query.dtype == torch.float32, LOOP=int(looped), num_warps=warps,
        num_stages=stages[0] if stages else 3,
    )  # fmt: skip


def readable_columns(z: torch.Tensor) -> int:
    """How many columns of each row of ``z [B, H, rows, nb]`` lie in its storage: the row stride
    for the chunk buffers (rows padded to a multiple of 16 columns, ``[..., :nb]`` views), else
    ``nb``. The entmax kernel loads that many and masks the ineligible ones in registers."""
    *dims, nb = z.shape
    if z.stride(3) != 1 or z.stride(2) < nb or z.numel() == 0:
        return nb
    last = z.storage_offset() + sum((n - 1) * st for n, st in zip(dims, z.stride()[:3])) + z.stride(2)
    return z.stride(2) if last * z.element_size() <= z.untyped_storage().nbytes() else nb


def launch_group_entmax(
    z: torch.Tensor,
    probs: torch.Tensor,
    mean_log: torch.Tensor,
    row0: int,
    n_rows: int,
    width: int,
    nb_out: int,
    alpha: float,
    causal: bool,
    offset: int,
    block_size: int,
    schedule: tuple[int, int, int],
    rows: int,
    warps: int,
    tail: int = 0,
    half_newton: bool = False,
) -> None:
    """``_group_entmax`` on the query chunk ``[row0, row0 + n_rows)`` whose scores ``z`` hold:
    ``p̄`` into ``probs [B, Hkv, Sq, nb]`` and the mean ``log p̄`` into ``mean_log``; ``width`` is the
    chunk's register row (:func:`chunk_width`; with ``tail``, its first tile, see
    :func:`inference_row_split`), ``nb_out`` the row zero-filled past it up to ``nb_out`` (from ``width``
    + ``tail``: nothing filled), ``schedule =
    (mode, n_bisect, n_newton)`` (:func:`solver_schedule`), ``(rows, warps)`` the launch
    (:func:`entmax_config`). ``half_newton`` (α = 1.5 only; other α ignore it): all Newton steps
    but the last on float16 pairs, the last, the exact step and the rest in float32 (the inference
    launch's, see ``entmax_rows_split_tail``)."""
    B, Hq = z.shape[:2]
    Hkv, Sq, nb = probs.shape[1:]
    mode, n_bisect, n_newton = schedule
    n_half = n_newton - 1 if half_newton and mode == MODE_ENTMAX15 else 0
    _group_entmax[(triton.cdiv(n_rows, rows), Hkv, B)](
        z, probs, mean_log, Sq, row0, nb, readable_columns(z), offset,
        *z.stride(), *probs.stride(), *mean_log.stride()[:2],
        alpha - 1.0, 1.0 / (alpha - 1.0), 1.0 - alpha,
        GROUP=Hq // Hkv, ROWS=rows, NB=width, NB_OUT=nb_out, SUB=tail or piece_width(width, rows, warps),
        BLOCK_SIZE=block_size, CAUSAL=causal, MODE=mode, N_BISECT=n_bisect, N_NEWTON=n_newton, TAIL=tail,
        INTERPRETED=z.device.type != "cuda", N_HALF=n_half, num_warps=warps,
    )  # fmt: skip


# Without the zero fill, the inference launch's chunks start at multiples of this: the fine stage's
# tallest query tile (sparse_attention.ops.FORWARD_ROWS_SINGLE; the packed tile is 32 rows), whose
# list builder reads p̄ up to the tile's causal reach, so a tile must not straddle two chunks.
ROWS_CHUNK_MULTIPLE = 128


def _empty_probs(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The p̄ output, uninitialised (a test fills it with a poison to show nothing reads what the
    inference launch leaves unwritten)."""
    return torch.empty(shape, device=device, dtype=torch.float32)


def coarse_selection_rows_launch(
    query: torch.Tensor,
    k_bar: torch.Tensor,
    alpha: float,
    selection_scale: float,
    causal: bool,
    kv_len: int,
    block_size: int,
    z_budget: int | None = None,
    rows: int | None = None,
    num_warps: int | None = None,
    score_tile: tuple[int, int, int] | None = None,
    score_loop: int | None = None,
    tails: bool = False,
    zero_fill: bool = True,
    half_newton: bool = False,
    heavy_first: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probs, mean_log)`` as :func:`.torch_impl.coarse_selection_rows_torch`: the score GEMM and
    ``_group_entmax`` over chunks of query rows. Launches directly (CUDA, or the Triton
    interpreter on CPU tensors in tests); ``z_budget`` (bytes of the score chunk; the inference op
    passes ``ROWS_Z_BUDGET_BYTES``), ``rows`` and
    ``num_warps`` (of the entmax kernel) override :func:`entmax_config`, ``score_tile`` and
    ``score_loop`` the GEMM's tile and ``SCORE_LOOP``. ``tails``: split register rows as
    :func:`inference_row_split` says (the inference op asks for it); by default whole rows, the
    launch the VJP repeats (training). ``zero_fill=False`` (the inference op): under causal masking
    ``probs`` is written only up to each chunk's register row (its causal reach rounded up, zeros
    past each row's own block), not zero-filled past it, and chunks start at multiples of
    ``ROWS_CHUNK_MULTIPLE`` rows, so every query tile of the fine stage lies in one chunk and reads
    only written entries (H100, run 95: 128K 19.78 → 18.94–19.02 ms). ``half_newton`` (the
    inference op): the entmax kernel's Newton steps on float16 pairs (:func:`launch_group_entmax`);
    training keeps float32 steps, which its VJP repeats bit for bit. ``heavy_first`` (the inference
    op): under causal masking the score chunks run last rows first, the widest first, so the host
    launches the narrow early chunks while the GPU works (in row order, their kernels outran the
    host's launches); each chunk computes the same bits either way."""
    B, Hq, Sq, D = query.shape
    Hkv, nb = k_bar.shape[1], k_bar.shape[2]
    NB = max(16, triton.next_power_of_2(nb))
    if NB > MAX_BLOCKS:
        raise ValueError(f"coarse_selection: {nb} blocks exceed the register row limit {MAX_BLOCKS}")
    if rows is not None and BM % rows:
        raise ValueError(f"rows must divide {BM}, got {rows}")
    dev = query.device
    mean_log = torch.empty(B, Hkv, Sq, device=dev, dtype=torch.float32)
    chunk = chunk_rows(B, Hq, nb, Sq, z_budget)
    if not zero_fill and chunk < Sq:  # (at least 128 rows: a chunk may then pass the budget, up to 2x)
        chunk = max(ROWS_CHUNK_MULTIPLE, chunk // ROWS_CHUNK_MULTIPLE * ROWS_CHUNK_MULTIPLE)
    probs = _empty_probs((B, Hkv, Sq, nb), dev)
    # rows of z start 64-byte aligned: the entmax kernel's loads vectorise only when the row
    # stride is a multiple of 16 (H200, 128K in query chunks: 72 ms with nb = 1080, 34 with 2048)
    z = torch.empty(B, Hq, min(chunk, Sq), -(-nb // 16) * 16, device=dev, dtype=torch.float32)[..., :nb]
    kb_parts = split_summaries(k_bar, query.dtype)
    mode, n_bisect, n_newton = solver_schedule(alpha, nb, torch.float32)
    offset = kv_len - Sq
    starts = range(0, Sq, chunk)
    for row0 in reversed(starts) if heavy_first and causal else starts:
        n_rows = min(chunk, Sq - row0)
        launch_scores(
            query, kb_parts, z, row0, n_rows, selection_scale, causal, offset, block_size, score_tile, score_loop
        )
        width = chunk_width(NB, causal, row0, n_rows, Sq, offset, block_size)
        config_rows, config_warps = entmax_config(width, interpreted=dev.type != "cuda")
        main, tail = (width, 0)
        if tails:
            main, tail = inference_row_split(width, causal, row0, n_rows, Sq, offset, block_size)
        schedule = (mode, n_bisect, n_newton)
        nb_out = NB if zero_fill else main + tail
        launch_group_entmax(z, probs, mean_log, row0, n_rows, main, nb_out, alpha, causal, offset, block_size,
                            schedule, rows or config_rows, num_warps or config_warps, tail, half_newton)  # fmt: skip
    return probs, mean_log


def coarse_selection_split_launch(
    query: torch.Tensor,
    k_bar: torch.Tensor,
    alpha: float,
    selection_scale: float,
    inv_sigma: float,
    causal: bool,
    kv_len: int,
    block_size: int,
    sq_pad: int,
    nb_pad: int,
    **overrides,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(probs, prior, active)`` as :func:`.torch_impl.coarse_selection_torch`: the rows
    (:func:`coarse_selection_rows_launch` with whole register rows, as the VJP recomputes them; it
    takes the ``overrides``), then ``_block_major_prior``."""
    if max(16, triton.next_power_of_2(nb_pad)) > MAX_BLOCKS:
        raise ValueError(f"coarse_selection: {nb_pad} blocks exceed the register row limit {MAX_BLOCKS}")
    if not overrides.get("zero_fill", True) or overrides.get("tails", False):
        raise ValueError("coarse_selection: the block-major prior reads whole zero-filled rows (no zero_fill/tails)")
    probs, mean_log = coarse_selection_rows_launch(
        query, k_bar, alpha, selection_scale, causal, kv_len, block_size, **overrides
    )
    B, Hkv, Sq, nb = probs.shape
    prior = torch.empty(B, Hkv, nb_pad, sq_pad, device=query.device, dtype=torch.float32)
    active = torch.empty(B, Hkv, nb_pad, sq_pad, device=query.device, dtype=torch.bool)
    active_i8 = active.view(torch.int8)
    tile = PRIOR_TILE
    _block_major_prior[(triton.cdiv(sq_pad, tile), triton.cdiv(nb_pad, tile), B * Hkv)](
        probs, mean_log, prior, active_i8, Sq, nb, nb_pad, sq_pad, Hkv, kv_len - Sq,
        *probs.stride()[:3], *mean_log.stride()[:2], *prior.stride()[:3], *active_i8.stride()[:3], inv_sigma,
        TM=tile, TN=tile, BLOCK_SIZE=block_size, CAUSAL=causal, num_warps=4,
    )  # fmt: skip
    return probs, prior, active


# dq GEMM: (rows, blocks per step, warps); dk̄ GEMM: (blocks, rows per step, warps, row slices per chunk)
DQ_TILE = (64, 64, 4)
DK_TILE = (64, 64, 4, 8)


def coarse_selection_backward_split(
    grad_probs: torch.Tensor | None,
    grad_prior: torch.Tensor | None,
    probs: torch.Tensor,
    query: torch.Tensor,
    k_bar: torch.Tensor,
    alpha: float,
    selection_scale: float,
    inv_sigma: float,
    causal: bool,
    kv_len: int,
    block_size: int,
    z_budget: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dq, dk̄)`` as :func:`.torch_impl.coarse_selection_backward_torch` on ``∂L/∂p̄ = grad_probs
    + log_prior_backward(grad_prior)`` (either may be None), chunked over query rows: the score
    GEMM recomputes ``z``, ``_group_entmax_vjp`` forms ``∂L/∂p̄`` in registers and turns ``z``
    into ``dz`` in place (16-bit inputs: as bf16 high + low parts), and two GEMMs on tensor cores
    (bf16 products of the parts, ~16 mantissa bits; IEEE fp32 for fp32 inputs) give
    ``dq = c·dz·k̄`` and ``dk̄ += c·dzᵀ·q`` (``c = selection_scale/√D``), both stopping at the
    causal reach. Nothing ``[B, Hq, Sq, nb]``-sized is allocated."""
    B, Hq, Sq, D = query.shape
    Hkv, nb = k_bar.shape[1], k_bar.shape[2]
    G = Hq // Hkv
    NB = max(16, triton.next_power_of_2(nb))
    if NB > MAX_BLOCKS:
        raise ValueError(f"coarse_selection: {nb} blocks exceed the register row limit {MAX_BLOCKS}")
    dev = query.device
    chunk = chunk_rows(B, Hq, nb, Sq, z_budget)
    # 64-byte aligned rows, as in the forward (the entmax kernel's loads vectorise)
    nb_row = -(-nb // 16) * 16
    z_rows = torch.empty(B, Hq, min(chunk, Sq), nb_row, device=dev, dtype=torch.float32)
    z = z_rows[..., :nb]
    split = query.dtype != torch.float32  # dz as bf16 high + low parts for the tensor-core GEMMs
    z_split = z_rows.view(torch.bfloat16)  # [B, Hq, rows, 2·nb_row]: high part, then low from nb_row
    kb = k_bar.float().contiguous()
    kb_parts = split_summaries(kb, query.dtype)  # the score GEMM's (query dtype)
    # the dq GEMM's: bf16 parts (the score GEMM's own for bf16 queries), fp32 k̄ for fp32 queries
    if not split:
        kb_grad = (kb, kb)
    else:
        kb_grad = kb_parts if query.dtype == torch.bfloat16 else split_summaries(kb, torch.bfloat16)
    # unused pointers when a gradient is absent: any fp32 tensor (never read)
    grad = probs if grad_probs is None else grad_probs.float()
    d_prior = probs.new_zeros(1, 1, 1, 1) if grad_prior is None else grad_prior.float()
    dq = torch.empty(B, Hq, Sq, D, device=dev, dtype=query.dtype)
    dq_rows, dq_step, dq_warps = DQ_TILE
    dk_blocks, dk_step, dk_warps, splits = DK_TILE
    dk_parts = torch.zeros(splits, B, Hkv, nb, D, device=dev, dtype=torch.float32)
    mode, n_bisect, n_newton = solver_schedule(alpha, nb, torch.float32)
    offset = kv_len - Sq
    c = selection_scale / D**0.5
    block_d = max(16, triton.next_power_of_2(D))
    interpreted = query.device.type != "cuda"  # CPU tensors reach Triton only through its interpreter
    for row0 in range(0, Sq, chunk):
        n_rows = min(chunk, Sq - row0)
        zc = z[:, :, :n_rows]
        dz = z_split[:, :, :n_rows] if split else zc
        launch_scores(query, kb_parts, zc, row0, n_rows, selection_scale, causal, offset, block_size)
        width = chunk_width(NB, causal, row0, n_rows, Sq, offset, block_size)
        rows, num_warps = entmax_config(width, interpreted)
        _group_entmax_vjp[(triton.cdiv(n_rows, rows), B * Hkv)](
            zc, z_split, grad, d_prior, probs, Sq, row0, nb, Hkv, offset, nb_row,
            *zc.stride(), *grad.stride(), *d_prior.stride(), *probs.stride(),
            alpha - 1.0, 1.0 / (alpha - 1.0), 1.0 - alpha, inv_sigma,
            GROUP=G, ROWS=rows, NB=width, NB_OUT=NB, SUB=piece_width(width, rows, num_warps), BLOCK_SIZE=block_size,
            CAUSAL=causal, MODE=mode, N_BISECT=n_bisect, N_NEWTON=n_newton, HAS_GRAD_PROBS=grad_probs is not None,
            HAS_GRAD_PRIOR=grad_prior is not None, SPLIT=split, num_warps=num_warps,
        )  # fmt: skip
        _coarse_dq[(triton.cdiv(n_rows, dq_rows), B * Hq)](
            dz, *kb_grad, dq, row0 + n_rows, row0, nb, Hq, offset, nb_row, *dz.stride(), *kb.stride(), *dq.stride(),
            c, GROUP=G, BM=dq_rows, BK=dq_step, HEAD_DIM=D, BLOCK_D=block_d, BLOCK_SIZE=block_size, CAUSAL=causal,
            SPLIT=split, INTERPRETED=interpreted, num_warps=dq_warps, num_stages=2,
        )  # fmt: skip
        rows_per_split = -(-triton.cdiv(n_rows, splits) // dk_step) * dk_step
        _coarse_dk_bar[(triton.cdiv(nb, dk_blocks), B * Hkv, splits)](
            dz, query, dk_parts, row0, n_rows, nb, Hkv, offset, rows_per_split, nb_row,
            *dz.stride(), *query.stride(), *dk_parts.stride()[:4], c,
            GROUP=G, BN=dk_blocks, BM=dk_step, HEAD_DIM=D, BLOCK_D=block_d, BLOCK_SIZE=block_size, CAUSAL=causal,
            SPLIT=split, INTERPRETED=interpreted, num_warps=dk_warps,
        )  # fmt: skip
    return dq, dk_parts.sum(0).to(k_bar.dtype)
