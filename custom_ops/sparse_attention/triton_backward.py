"""Backward of the fused fine stage (Triton): three kernels, no atomics.

* ``_delta_rows``: ``Δ_t = Σ_d dO_td (O_td + residual_td)`` per row (fp32), one pass over the
  16-bit tensors (0.20 ms at 32K on the H200, where the torch passes it replaced took ~1.3 ms; Δ
  in ``_dq_dprior``'s prologue timed the same, 17.61–17.74 against 17.64 ms for the whole
  backward, and is kept apart for clarity).
* ``_dq_dprior``: one program per (query tile, ``PACK`` query heads) walks the tile's kept-block
  list (as the forward), recomputes ``P = exp2(S₂ − lse₂)`` (log2 units), forms
  ``dS = P ∘ (dO·Vᵀ − Δ)`` and accumulates ``dQ``; the prior's gradient for (block c, the tile's
  rows) is the row sum of dS over the block's keys, summed over the packed heads (they share the
  prior) and written once by this program into its pack's slice of a zeroed buffer (pairs outside
  the tile's list stay 0); the launch sums the slices of a selection head's packs.
* ``_dk_dv``: one program per (key block, batch·KV head) walks, for each group of ``PACK`` query
  heads of the KV head, the query tiles that keep the block (the transpose of the forward's
  lists), and accumulates the KV head's ``dK`` and ``dV`` in fp32 registers: the sum over the
  group's query heads happens inside the dots, with no per-query-head buffer. It writes them
  once, in the key / value dtype (zeros for a block no tile keeps).

As in the forward, the rows' keep flags and prior enter as one row vector (``_row_bias``) and only
the diagonal (query tile, key block) pairs and a partial last block pay a per-element mask: the
tile's last list entries in ``_dq_dprior`` (``_first_masked_entry``), the block's first tiles in
``_dk_dv``. Every element of dQ, dK and dV is written, in the input dtypes. ``Δ`` reads the
output to fp32 precision (its 16-bit value plus the rounding residual the forward saved), so
``Σ_i dS_ti`` is 0 up to fp32 error (docs/design.md, "Numerics").
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_kernels import LOG2E, _first_masked_entry, _load_keys, _row_bias


@triton.jit
def _load_rows(base, rows, row_ok, stride_t, stride_d, DIM: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    return tl.load(base + rows[:, None] * stride_t + offs[None, :] * stride_d,
                   mask=row_ok[:, None] & (offs < DIM)[None, :], other=0.0)  # fmt: skip


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a.to(b.dtype), b)


@triton.jit
def _recompute_probs(q, k, keys, key_ok, rows, row_ok, lse2, c, prior_base, active_base, causal_offset, qk_scale,
                     stride_pc, stride_pt, stride_ac, stride_at, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                     HAS_PRIOR: tl.constexpr, IEEE: tl.constexpr):  # fmt: skip
    """``P = exp2(S₂ − lse₂)`` of one (query tile, key block) pair as the forward formed it: scores
    in log2 units plus the rows' bias (prior, keep flags), the per-element mask on ``MASKED``
    blocks only. Shared by both backward kernels."""
    bias = _row_bias(prior_base, active_base, c, rows, row_ok, stride_pc, stride_pt, stride_ac, stride_at, HAS_PRIOR)
    s = _dot(q, tl.trans(k), IEEE) * qk_scale + bias[:, None]
    if MASKED:
        ok = key_ok[None, :]
        if CAUSAL:
            ok = ok & (keys[None, :] <= rows[:, None] + causal_offset)
        s = tl.where(ok, s, float("-inf"))
    return tl.exp2(s - lse2[:, None])


@triton.jit
def _delta_rows(
    DO, OUT, OUT_RES, DELTA, q_len, num_q_heads,
    stride_dob, stride_doh, stride_dot, stride_dod,
    stride_ob, stride_oh, stride_ot, stride_od,
    ROWS: tl.constexpr, VALUE_DIM: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """``DELTA [B·Hq, q_len]``: ``Σ_d dO (O + residual)`` of ``ROWS`` rows of one (batch, head);
    batch·head on grid axis 0 (axis 1 allows only 65535 programs)."""
    bh = tl.program_id(0).to(tl.int64)
    b = bh // num_q_heads
    h = bh % num_q_heads
    rows = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < q_len
    do = _load_rows(DO + b * stride_dob + h * stride_doh, rows, row_ok, stride_dot, stride_dod, VALUE_DIM, BLOCK_DV)
    o = _load_rows(OUT + b * stride_ob + h * stride_oh, rows, row_ok, stride_ot, stride_od, VALUE_DIM, BLOCK_DV)
    o_res = _load_rows(OUT_RES + b * stride_ob + h * stride_oh, rows, row_ok, stride_ot, stride_od,
                       VALUE_DIM, BLOCK_DV)  # fmt: skip
    delta = tl.sum(do.to(tl.float32) * (o.to(tl.float32) + o_res.to(tl.float32)), axis=1)
    tl.store(DELTA + bh * q_len + rows, delta, mask=row_ok)


@triton.jit
def _dq_block(dq, q, do, lse2, delta, c, rows, row_ok, pos, pos_ok, k_base, v_base, prior_base, active_base, DPRIOR_ROW,
              kv_len, causal_offset, qk_scale, stride_kn, stride_kd, stride_vn, stride_vd, stride_pc, stride_pt,
              stride_ac, stride_at, stride_gc,
              PACK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_D: tl.constexpr, VALUE_DIM: tl.constexpr, BLOCK_DV: tl.constexpr, MASKED: tl.constexpr,
              CAUSAL: tl.constexpr, HAS_PRIOR: tl.constexpr, IEEE: tl.constexpr):  # fmt: skip
    keys = c * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    key_ok = keys < kv_len
    k = _load_keys(k_base, keys, key_ok, stride_kn, stride_kd, HEAD_DIM, BLOCK_D, MASKED)
    v = _load_keys(v_base, keys, key_ok, stride_vn, stride_vd, VALUE_DIM, BLOCK_DV, MASKED)
    p = _recompute_probs(q, k, keys, key_ok, rows, row_ok, lse2, c, prior_base, active_base, causal_offset, qk_scale,
                         stride_pc, stride_pt, stride_ac, stride_at, MASKED, CAUSAL, HAS_PRIOR, IEEE)  # fmt: skip
    ds = p * (_dot(do, tl.trans(v), IEEE) - delta[:, None])
    dq += _dot(ds, k, IEEE)
    if HAS_PRIOR:  # Σ over the block's keys, then over the packed heads (they share the prior row)
        d_prior = tl.sum(tl.reshape(tl.sum(ds, axis=1), [PACK, BLOCK_M]), axis=0)
        tl.store(DPRIOR_ROW + c * stride_gc + pos, d_prior, mask=pos_ok)
    return dq


@triton.jit
def _dq_dprior(
    Q, K, V, PRIOR, ACTIVE, LIST, COUNT, DO, LSE, DELTA, DQ, DPRIOR,
    q_len, kv_len, causal_offset, num_q_heads, group_kv, group_sel, group_act, num_tiles,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_pb, stride_ph, stride_pc, stride_pt,
    stride_ab, stride_ah, stride_ac, stride_at,
    stride_lh, stride_lt,
    stride_dob, stride_doh, stride_dot, stride_dod,
    stride_gh, stride_gc,
    scale,
    BLOCK_M: tl.constexpr, BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    VALUE_DIM: tl.constexpr, BLOCK_DV: tl.constexpr, CAUSAL: tl.constexpr, HAS_PRIOR: tl.constexpr,
    IEEE: tl.constexpr, PACK: tl.constexpr,
):  # fmt: skip
    qk_scale = tl.cast(scale, tl.float32) * LOG2E
    tile = tl.program_id(0)
    g = tl.program_id(1).to(tl.int64)  # int64 offsets (large B·H·S)
    bh0 = g * PACK
    b = bh0 // num_q_heads
    h0 = bh0 % num_q_heads
    offs_r = tl.arange(0, PACK * BLOCK_M)
    rows = tile * BLOCK_M + offs_r % BLOCK_M
    heads = h0 + offs_r // BLOCK_M
    row_ok = rows < q_len
    pos = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # the tile's positions, once (dprior rows)
    pos_ok = pos < q_len
    q = _load_rows(Q + b * stride_qb + heads[:, None] * stride_qh, rows, row_ok, stride_qt, stride_qd,
                   HEAD_DIM, BLOCK_D)  # fmt: skip
    do = _load_rows(DO + b * stride_dob + heads[:, None] * stride_doh, rows, row_ok, stride_dot, stride_dod,
                    VALUE_DIM, BLOCK_DV)  # fmt: skip
    stat = (bh0 + offs_r // BLOCK_M) * q_len + rows
    lse = tl.load(LSE + stat, mask=row_ok, other=float("-inf"))
    lse2 = tl.where(lse == float("-inf"), 0.0, lse * LOG2E)  # rows with no key: every P is 0 anyway
    delta = tl.load(DELTA + stat, mask=row_ok, other=0.0)
    h_act = h0 // group_act
    list_row = (b * (num_q_heads // group_act) + h_act) * num_tiles + tile
    count = tl.load(COUNT + list_row)
    n_lead = _first_masked_entry(LIST, list_row, count, stride_lh, stride_lt, tile, kv_len, causal_offset, BLOCK_M,
                                 BLOCK_SIZE, CAUSAL)  # fmt: skip
    prior_base = PRIOR + b * stride_pb + (h0 // group_sel) * stride_ph
    active_base = ACTIVE + b * stride_ab + h_act * stride_ah
    k_base = K + b * stride_kb + (h0 // group_kv) * stride_kh
    v_base = V + b * stride_vb + (h0 // group_kv) * stride_vh
    dprior_row = DPRIOR + g * stride_gh
    dq = tl.zeros([PACK * BLOCK_M, BLOCK_D], tl.float32)
    for j in range(0, n_lead):
        c = tl.load(LIST + list_row * stride_lh + j * stride_lt)
        dq = _dq_block(dq, q, do, lse2, delta, c, rows, row_ok, pos, pos_ok, k_base, v_base, prior_base,
                       active_base, dprior_row, kv_len, causal_offset, qk_scale, stride_kn, stride_kd, stride_vn,
                       stride_vd, stride_pc, stride_pt, stride_ac, stride_at, stride_gc, PACK, BLOCK_M, BLOCK_SIZE,
                       HEAD_DIM, BLOCK_D, VALUE_DIM, BLOCK_DV, False, CAUSAL, HAS_PRIOR, IEEE)  # fmt: skip
    for j in range(n_lead, count):
        c = tl.load(LIST + list_row * stride_lh + j * stride_lt)
        dq = _dq_block(dq, q, do, lse2, delta, c, rows, row_ok, pos, pos_ok, k_base, v_base, prior_base,
                       active_base, dprior_row, kv_len, causal_offset, qk_scale, stride_kn, stride_kd, stride_vn,
                       stride_vd, stride_pc, stride_pt, stride_ac, stride_at, stride_gc, PACK, BLOCK_M, BLOCK_SIZE,
                       HEAD_DIM, BLOCK_D, VALUE_DIM, BLOCK_DV, True, CAUSAL, HAS_PRIOR, IEEE)  # fmt: skip
    offs_d = tl.arange(0, BLOCK_D)
    tl.store(DQ + (bh0 + offs_r // BLOCK_M)[:, None] * q_len * HEAD_DIM + rows[:, None] * HEAD_DIM + offs_d[None, :],
             (dq * tl.cast(scale, tl.float32)).to(DQ.dtype.element_ty),
             mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :])  # fmt: skip


@triton.jit
def _dkdv_tile(dk, dv, k, v, tile, h0, b, keys, key_ok, c, Q, DO, LSE, DELTA, prior_base, active_base,
               q_len, causal_offset, qk_scale, num_q_heads,
               stride_qb, stride_qh, stride_qt, stride_qd, stride_dob, stride_doh, stride_dot, stride_dod,
               stride_pc, stride_pt, stride_ac, stride_at,
               PACK: tl.constexpr, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
               VALUE_DIM: tl.constexpr, BLOCK_DV: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
               HAS_PRIOR: tl.constexpr, IEEE: tl.constexpr):  # fmt: skip
    """One query tile (``BLOCK_M`` rows of ``PACK`` heads) against key block ``c``."""
    offs_r = tl.arange(0, PACK * BLOCK_M)
    rows = tile * BLOCK_M + offs_r % BLOCK_M
    heads = h0 + offs_r // BLOCK_M
    row_ok = rows < q_len
    q = _load_rows(Q + b * stride_qb + heads[:, None] * stride_qh, rows, row_ok, stride_qt, stride_qd,
                   HEAD_DIM, BLOCK_D)  # fmt: skip
    do = _load_rows(DO + b * stride_dob + heads[:, None] * stride_doh, rows, row_ok, stride_dot, stride_dod,
                    VALUE_DIM, BLOCK_DV)  # fmt: skip
    stat = (b * num_q_heads + heads) * q_len + rows
    lse = tl.load(LSE + stat, mask=row_ok, other=float("-inf"))
    lse2 = tl.where(lse == float("-inf"), 0.0, lse * LOG2E)
    delta = tl.load(DELTA + stat, mask=row_ok, other=0.0)
    p = _recompute_probs(q, k, keys, key_ok, rows, row_ok, lse2, c, prior_base, active_base, causal_offset, qk_scale,
                         stride_pc, stride_pt, stride_ac, stride_at, MASKED, CAUSAL, HAS_PRIOR, IEEE)  # fmt: skip
    dv += _dot(tl.trans(p), do, IEEE)
    ds = p * (_dot(do, tl.trans(v), IEEE) - delta[:, None])
    dk += _dot(tl.trans(ds), q, IEEE)
    return dk, dv


@triton.jit
def _dk_dv(
    Q, K, V, PRIOR, ACTIVE, TLIST, TCOUNT, DO, LSE, DELTA, DK, DV,
    q_len, kv_len, causal_offset, num_q_heads, group_kv, group_sel, group_act, num_blocks,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_pb, stride_ph, stride_pc, stride_pt,
    stride_ab, stride_ah, stride_ac, stride_at,
    stride_lh, stride_lt,
    stride_dob, stride_doh, stride_dot, stride_dod,
    scale,
    BLOCK_M: tl.constexpr, BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    VALUE_DIM: tl.constexpr, BLOCK_DV: tl.constexpr, CAUSAL: tl.constexpr, HAS_PRIOR: tl.constexpr,
    IEEE: tl.constexpr, PACK: tl.constexpr,
):  # fmt: skip
    """``DK`` / ``DV``: ``[B, Hkv, Skv, ·]`` contiguous, in the key / value dtype."""
    scale = tl.cast(scale, tl.float32)
    qk_scale = scale * LOG2E
    c = tl.program_id(0)
    bkv = tl.program_id(1).to(tl.int64)  # int64 offsets (large B·H·S)
    num_kv_heads = num_q_heads // group_kv
    b = bkv // num_kv_heads
    h_kv = bkv % num_kv_heads
    keys = c * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    key_ok = keys < kv_len
    k = _load_keys(K + b * stride_kb + h_kv * stride_kh, keys, key_ok, stride_kn, stride_kd, HEAD_DIM, BLOCK_D, True)
    v = _load_keys(V + b * stride_vb + h_kv * stride_vh, keys, key_ok, stride_vn, stride_vd, VALUE_DIM, BLOCK_DV,
                   True)  # fmt: skip
    dk = tl.zeros([BLOCK_SIZE, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_SIZE, BLOCK_DV], tl.float32)
    # Tiles whose first row sits before the block's last key need the per-element mask: with an
    # ascending list they come first (causal); a partial last block masks every tile. ``bound``,
    # the first tile that needs none, is ceil(((c + 1)·BLOCK_SIZE − 1 − causal_offset) / BLOCK_M)
    # clamped at 0 (Sq < Skv: blocks before the diagonal); with Sq > Skv it can pass the last tile
    # (every tile masked). A partial last block gets bound ≥ n_tiles. The count walk stops at the
    # list's end (the masked load past it reads ``bound``), so at most ``count`` steps.
    if CAUSAL:
        bound = tl.maximum((c + 1) * BLOCK_SIZE - 1 - causal_offset + BLOCK_M - 1, 0) // BLOCK_M
    for owner in range(0, group_kv // PACK):  # groups of PACK query heads, each with its tile list
        h0 = h_kv * group_kv + owner * PACK
        h_act = h0 // group_act
        list_row = (b * (num_q_heads // group_act) + h_act) * num_blocks + c
        count = tl.load(TCOUNT + list_row)
        if CAUSAL:
            n_mask = 0
            nxt = tl.load(TLIST + list_row * stride_lh, mask=count > 0, other=bound)
            while nxt < bound:
                n_mask += 1
                nxt = tl.load(TLIST + list_row * stride_lh + n_mask * stride_lt, mask=n_mask < count, other=bound)
        else:
            n_mask = tl.where((c + 1) * BLOCK_SIZE > kv_len, count, 0)
        prior_base = PRIOR + b * stride_pb + (h0 // group_sel) * stride_ph
        active_base = ACTIVE + b * stride_ab + h_act * stride_ah
        for j in range(0, n_mask):
            tile = tl.load(TLIST + list_row * stride_lh + j * stride_lt)
            dk, dv = _dkdv_tile(dk, dv, k, v, tile, h0, b, keys, key_ok, c, Q, DO, LSE, DELTA, prior_base,
                                active_base, q_len, causal_offset, qk_scale, num_q_heads,
                                stride_qb, stride_qh, stride_qt, stride_qd, stride_dob, stride_doh, stride_dot,
                                stride_dod, stride_pc, stride_pt, stride_ac, stride_at, PACK, BLOCK_M, HEAD_DIM,
                                BLOCK_D, VALUE_DIM, BLOCK_DV, True, CAUSAL, HAS_PRIOR, IEEE)  # fmt: skip
        for j in range(n_mask, count):
            tile = tl.load(TLIST + list_row * stride_lh + j * stride_lt)
            dk, dv = _dkdv_tile(dk, dv, k, v, tile, h0, b, keys, key_ok, c, Q, DO, LSE, DELTA, prior_base,
                                active_base, q_len, causal_offset, qk_scale, num_q_heads,
                                stride_qb, stride_qh, stride_qt, stride_qd, stride_dob, stride_doh, stride_dot,
                                stride_dod, stride_pc, stride_pt, stride_ac, stride_at, PACK, BLOCK_M, HEAD_DIM,
                                BLOCK_D, VALUE_DIM, BLOCK_DV, False, CAUSAL, HAS_PRIOR, IEEE)  # fmt: skip
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    out_rows = bkv * kv_len + keys
    tl.store(DK + out_rows[:, None] * HEAD_DIM + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty),
             mask=key_ok[:, None] & (offs_d < HEAD_DIM)[None, :])  # fmt: skip
    tl.store(DV + out_rows[:, None] * VALUE_DIM + offs_dv[None, :], dv.to(DV.dtype.element_ty),
             mask=key_ok[:, None] & (offs_dv < VALUE_DIM)[None, :])  # fmt: skip


DELTA_ROWS = 64  # rows per program of _delta_rows
# (num_warps, num_stages) of (_dq_dprior, _dk_dv), from the per-kernel sweep at 32K on the H200
# (profile_stages.py --backward-sweep, 64 rows over 4 packed heads, docs/benchmarks.md): Triton's
# default 3 stages 31.85 ms, 2 stages 19.38, 1 stage 22.09, 1 stage for _dq_dprior only 20.17,
# 8 warps for either kernel 30.2-30.8.
BACKWARD_LAUNCH = ((4, 2), (4, 2))


def _launch_options(num_warps: int, num_stages: int | None) -> dict:
    return {"num_warps": num_warps, **({} if num_stages is None else {"num_stages": num_stages})}


def sparse_attention_backward_launch(
    grad_out, query, key, value, prior, active, out, out_residual, lse, tile_list, tile_count,
    block_list, block_count, causal, scale, block_size, has_prior, block_m, pack=1, launch=BACKWARD_LAUNCH,
):  # fmt: skip
    """``(dq, dk, dv, dprior)``; ``tile_list/tile_count`` as the forward's (``block_m``-row tiles),
    ``block_list [B, H_act, nb, n_tiles]`` / ``block_count`` the query tiles keeping each block.
    ``pack`` query heads share a program (they must share the KV head, the prior and the flags).
    ``launch``: ``(num_warps, num_stages)`` of ``_dq_dprior`` and of ``_dk_dv`` (a stage count of
    None: Triton's default; launch sweeps in scripts/profile_stages.py). Launches directly."""
    B, Hq, Sq, D = query.shape
    Hkv, Skv, Dv = key.shape[1], key.shape[2], value.shape[-1]
    H_sel, nb = prior.shape[1], prior.shape[2]
    n_tiles = tile_list.shape[2]
    if pack < 1 or pack & (pack - 1):
        raise ValueError(f"pack={pack} must be a power of two")
    if (Hq // Hkv) % pack or (Hq // H_sel) % pack or (Hq // active.shape[1]) % pack:
        raise ValueError(f"pack={pack} heads must share their KV head, prior and flags")
    if nb * block_size < Skv:  # the dK / dV grid covers nb blocks: keys past them would stay unwritten
        raise ValueError(f"{nb} blocks of {block_size} do not cover {Skv} keys")
    dev = query.device
    # _delta_rows reads both with one set of strides (no copies for the forward's contiguous outputs)
    out, out_residual = out.contiguous(), out_residual.contiguous()
    delta = torch.empty(B, Hq, Sq, device=dev, dtype=torch.float32)
    block_dv = max(16, triton.next_power_of_2(Dv))
    _delta_rows[(B * Hq, triton.cdiv(Sq, DELTA_ROWS))](
        grad_out, out, out_residual, delta, Sq, Hq, *grad_out.stride(), *out.stride(),
        ROWS=DELTA_ROWS, VALUE_DIM=Dv, BLOCK_DV=block_dv, num_warps=4,
    )  # fmt: skip
    dq = torch.empty(B, Hq, Sq, D, device=dev, dtype=query.dtype)
    # one dprior slice per program's head pack: a slice is the packed heads' sum (they share the prior)
    dprior_p = torch.zeros(B, Hq // pack, nb, Sq, device=dev, dtype=torch.float32) if has_prior else dq
    dk = torch.empty(B, Hkv, Skv, D, device=dev, dtype=key.dtype)
    dv = torch.empty(B, Hkv, Skv, Dv, device=dev, dtype=value.dtype)
    active_i8 = active.view(torch.int8) if active.dtype == torch.bool else active
    common = dict(
        BLOCK_M=block_m,
        BLOCK_SIZE=block_size,
        HEAD_DIM=D,
        BLOCK_D=max(16, triton.next_power_of_2(D)),
        VALUE_DIM=Dv,
        BLOCK_DV=max(16, triton.next_power_of_2(Dv)),
        CAUSAL=causal,
        HAS_PRIOR=has_prior,
        IEEE=query.dtype == torch.float32,
        PACK=pack,
    )
    (dq_warps, dq_stages), (kv_warps, kv_stages) = launch
    sizes = (Sq, Skv, Skv - Sq, Hq, Hq // Hkv, Hq // H_sel, Hq // active.shape[1])
    strides = (*query.stride(), *key.stride(), *value.stride(), *prior.stride(), *active_i8.stride())
    t_rows = tile_list.view(-1, tile_list.shape[-1])
    b_rows = block_list.view(-1, block_list.shape[-1])
    _dq_dprior[(n_tiles, B * Hq // pack)](
        query, key, value, prior, active_i8, t_rows, tile_count, grad_out, lse, delta, dq, dprior_p,
        *sizes, n_tiles, *strides, t_rows.stride(0), t_rows.stride(1), *grad_out.stride(),
        dprior_p.stride(1), dprior_p.stride(2), scale, **common, **_launch_options(dq_warps, dq_stages),
    )  # fmt: skip
    _dk_dv[(nb, B * Hkv)](
        query, key, value, prior, active_i8, b_rows, block_count, grad_out, lse, delta, dk, dv,
        *sizes, nb, *strides, b_rows.stride(0), b_rows.stride(1), *grad_out.stride(), scale, **common,
        **_launch_options(kv_warps, kv_stages),
    )  # fmt: skip
    if has_prior:
        dprior = dprior_p.view(B, H_sel, Hq // H_sel // pack, nb, Sq)
        dprior = dprior[:, :, 0] if dprior.shape[2] == 1 else dprior.sum(2)
    else:
        dprior = torch.zeros_like(prior, dtype=torch.float32)
    return dq, dk, dv, dprior.to(prior.dtype)
