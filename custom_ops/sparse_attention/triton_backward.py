"""Backward of the fused fine stage (Triton): two kernels, no atomics.

* ``_dq_dprior``: one program per (query tile, batch·query head) walks the tile's kept-block
  list (as the forward), recomputes ``P = exp(S − lse)``, forms ``dS = P ∘ (dO·Vᵀ − Δ)`` and
  accumulates ``dQ``; the prior's gradient for (block c, the tile's rows) is the row sum of dS
  over the block's keys, written once by this program (each (head, block, row) has one owner).
* ``_dk_dv``: one program per (key block, batch·query head) walks the list of query tiles that
  keep the block (the transpose of the forward's lists) and accumulates that head's ``dK`` and
  ``dV`` for the block; the group sum over query heads is a torch reduction afterwards.

``Δ_t = Σ_d dO_td (O_td + residual_td)`` is computed beforehand from the output to fp32
precision, so ``Σ_i dS_ti`` is 0 up to fp32 error (docs/design.md, "Numerics").
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_kernels import _scores


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
    IEEE: tl.constexpr,
):  # fmt: skip
    scale = tl.cast(scale, tl.float32)
    tile = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64 offsets (large B·H·S)
    b = bh // num_q_heads
    h = bh % num_q_heads
    h_kv = h // group_kv
    h_act = h // group_act
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < q_len
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n = tl.arange(0, BLOCK_SIZE)
    q_offs = b * stride_qb + h * stride_qh + rows[:, None] * stride_qt + offs_d[None, :] * stride_qd
    q = tl.load(Q + q_offs, mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    do = tl.load(
        DO + b * stride_dob + h * stride_doh + rows[:, None] * stride_dot + offs_dv[None, :] * stride_dod,
        mask=row_ok[:, None] & (offs_dv < VALUE_DIM)[None, :],
        other=0.0,
    )
    lse = tl.load(LSE + bh * q_len + rows, mask=row_ok, other=float("-inf"))
    lse = tl.where(lse == float("-inf"), 0.0, lse)  # rows with no key: every P is masked to 0 anyway
    delta = tl.load(DELTA + bh * q_len + rows, mask=row_ok, other=0.0)
    list_row = (b * (num_q_heads // group_act) + h_act) * num_tiles + tile
    count = tl.load(COUNT + list_row)
    prior_base = PRIOR + b * stride_pb + (h // group_sel) * stride_ph
    active_base = ACTIVE + b * stride_ab + h_act * stride_ah
    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for j in range(0, count):
        c = tl.load(LIST + list_row * stride_lh + j * stride_lt)
        keys = c * BLOCK_SIZE + offs_n
        key_ok = keys < kv_len
        k = tl.load(
            k_base + keys[:, None] * stride_kn + offs_d[None, :] * stride_kd,
            mask=key_ok[:, None] & (offs_d < HEAD_DIM)[None, :],
            other=0.0,
        )
        v = tl.load(
            v_base + keys[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
            mask=key_ok[:, None] & (offs_dv < VALUE_DIM)[None, :],
            other=0.0,
        )
        s, ok = _scores(q, k, prior_base, active_base, c, rows, row_ok, keys, key_ok, causal_offset, scale,
                        stride_pc, stride_pt, stride_ac, stride_at, CAUSAL, HAS_PRIOR, IEEE)  # fmt: skip
        p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
        if IEEE:
            dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        else:
            dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        if IEEE:
            dq += tl.dot(ds, k, input_precision="ieee")
        else:
            dq += tl.dot(ds.to(k.dtype), k)
        if HAS_PRIOR:
            tl.store(DPRIOR + bh * stride_gh + c * stride_gc + rows, tl.sum(ds, axis=1), mask=row_ok)
    tl.store(DQ + bh * q_len * HEAD_DIM + rows[:, None] * HEAD_DIM + offs_d[None, :], dq * scale,
             mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :])  # fmt: skip


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
    IEEE: tl.constexpr,
):  # fmt: skip
    scale = tl.cast(scale, tl.float32)
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64 offsets (large B·H·S)
    b = bh // num_q_heads
    h = bh % num_q_heads
    h_kv = h // group_kv
    h_act = h // group_act
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_m = tl.arange(0, BLOCK_M)
    keys = c * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    key_ok = keys < kv_len
    k = tl.load(
        K + b * stride_kb + h_kv * stride_kh + keys[:, None] * stride_kn + offs_d[None, :] * stride_kd,
        mask=key_ok[:, None] & (offs_d < HEAD_DIM)[None, :],
        other=0.0,
    )
    v = tl.load(
        V + b * stride_vb + h_kv * stride_vh + keys[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
        mask=key_ok[:, None] & (offs_dv < VALUE_DIM)[None, :],
        other=0.0,
    )
    list_row = (b * (num_q_heads // group_act) + h_act) * num_blocks + c
    count = tl.load(TCOUNT + list_row)
    prior_base = PRIOR + b * stride_pb + (h // group_sel) * stride_ph
    active_base = ACTIVE + b * stride_ab + h_act * stride_ah
    dk = tl.zeros([BLOCK_SIZE, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_SIZE, BLOCK_DV], tl.float32)
    for j in range(0, count):
        tile = tl.load(TLIST + list_row * stride_lh + j * stride_lt)
        rows = tile * BLOCK_M + offs_m
        row_ok = rows < q_len
        q = tl.load(
            Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qt + offs_d[None, :] * stride_qd,
            mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :],
            other=0.0,
        )
        do = tl.load(
            DO + b * stride_dob + h * stride_doh + rows[:, None] * stride_dot + offs_dv[None, :] * stride_dod,
            mask=row_ok[:, None] & (offs_dv < VALUE_DIM)[None, :],
            other=0.0,
        )
        lse = tl.load(LSE + bh * q_len + rows, mask=row_ok, other=float("-inf"))
        lse = tl.where(lse == float("-inf"), 0.0, lse)
        delta = tl.load(DELTA + bh * q_len + rows, mask=row_ok, other=0.0)
        s, ok = _scores(q, k, prior_base, active_base, c, rows, row_ok, keys, key_ok, causal_offset, scale,
                        stride_pc, stride_pt, stride_ac, stride_at, CAUSAL, HAS_PRIOR, IEEE)  # fmt: skip
        p = tl.where(ok, tl.exp(s - lse[:, None]), 0.0)
        if IEEE:
            dv += tl.dot(tl.trans(p), do, input_precision="ieee")
            dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        else:
            dv += tl.dot(tl.trans(p.to(do.dtype)), do)
            dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        if IEEE:
            dk += tl.dot(tl.trans(ds), q, input_precision="ieee")
        else:
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    out_rows = bh * num_blocks * BLOCK_SIZE + c * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    tl.store(DK + out_rows[:, None] * HEAD_DIM + offs_d[None, :], dk * scale,
             mask=key_ok[:, None] & (offs_d < HEAD_DIM)[None, :])  # fmt: skip
    tl.store(DV + out_rows[:, None] * VALUE_DIM + offs_dv[None, :], dv,
             mask=key_ok[:, None] & (offs_dv < VALUE_DIM)[None, :])  # fmt: skip


def sparse_attention_backward_launch(
    grad_out, query, key, value, prior, active, out, out_residual, lse, tile_list, tile_count,
    block_list, block_count, causal, scale, block_size, has_prior, block_m,
):  # fmt: skip
    """``(dq, dk, dv, dprior)``; ``tile_list/tile_count`` as the forward's, ``block_list [B, H_act,
    nb, n_tiles]`` / ``block_count`` the query tiles keeping each block. Launches directly."""
    B, Hq, Sq, D = query.shape
    Hkv, Skv, Dv = key.shape[1], key.shape[2], value.shape[-1]
    H_sel, nb = prior.shape[1], prior.shape[2]
    n_tiles = tile_list.shape[2]
    dev = query.device
    delta = (grad_out.float() * (out.float() + out_residual.float())).sum(-1).contiguous()
    dq = torch.empty(B, Hq, Sq, D, device=dev, dtype=torch.float32)
    dprior_h = torch.zeros(B, Hq, nb, Sq, device=dev, dtype=torch.float32)
    dk_h = torch.zeros(B, Hq, nb * block_size, D, device=dev, dtype=torch.float32)
    dv_h = torch.zeros(B, Hq, nb * block_size, Dv, device=dev, dtype=torch.float32)
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
        num_warps=4,
    )
    sizes = (Sq, Skv, Skv - Sq, Hq, Hq // Hkv, Hq // H_sel, Hq // active.shape[1])
    strides = (*query.stride(), *key.stride(), *value.stride(), *prior.stride(), *active_i8.stride())
    t_rows = tile_list.view(-1, tile_list.shape[-1])
    b_rows = block_list.view(-1, block_list.shape[-1])
    _dq_dprior[(n_tiles, B * Hq)](
        query, key, value, prior, active_i8, t_rows, tile_count, grad_out, lse, delta, dq, dprior_h,
        *sizes, n_tiles, *strides, t_rows.stride(0), t_rows.stride(1), *grad_out.stride(),
        dprior_h.stride(1), dprior_h.stride(2), scale, **common,
    )  # fmt: skip
    _dk_dv[(nb, B * Hq)](
        query, key, value, prior, active_i8, b_rows, block_count, grad_out, lse, delta, dk_h, dv_h,
        *sizes, nb, *strides, b_rows.stride(0), b_rows.stride(1), *grad_out.stride(), scale, **common,
    )  # fmt: skip
    G = Hq // Hkv
    dk = dk_h[:, :, :Skv].view(B, Hkv, G, Skv, D).sum(2)
    dv = dv_h[:, :, :Skv].view(B, Hkv, G, Skv, Dv).sum(2)
    dprior = dprior_h.view(B, H_sel, Hq // H_sel, nb, Sq).sum(2)
    return dq.to(query.dtype), dk.to(key.dtype), dv.to(value.dtype), dprior.to(prior.dtype)
