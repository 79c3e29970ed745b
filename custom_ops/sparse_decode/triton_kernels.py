"""Split-KV decoding over a list of active blocks (Triton).

Pass 1, one program per (split, sequence·KV head): the G query heads of the KV head are the rows
of one tile (padded to 16 for ``tl.dot``), so each key block is read once for the whole group.
The program walks its share of the *compact* active-block list — ``ceil(count / n_splits)``
entries, computed from the runtime count so the work spreads over all splits whatever the
sparsity — with an online softmax (a software-pipelined loop: the next block's list entry and
keys load while this one computes), and writes a partial (max, sum, accumulator). Pass 2
(``selection_kernels._merge_splits``, one launch) merges the splits. Inactive blocks are never
read: the cost is the kept keys' bytes, which is what decoding is bound by.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .selection_kernels import merge_splits_launch


@triton.jit
def _sparse_decode_split(
    Q,
    K,
    V,
    LIST,
    COUNT,
    PRIOR,
    POS,
    ACC,
    M,
    L,
    num_kv_heads,
    n_splits,
    stride_qb,
    stride_qh,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_lb,
    stride_lh,
    stride_pb,
    stride_ph,
    scale,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    VALUE_DIM: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    IEEE: tl.constexpr,
    STAGES: tl.constexpr,
):
    scale = tl.cast(scale, tl.float32)  # Inductor may pass Python floats as fp64
    split = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64 offsets: B·Hkv·N·D passes 2³¹ for long or many caches
    b = bh // num_kv_heads
    h = bh % num_kv_heads
    count = tl.load(COUNT + b * num_kv_heads + h)
    pos = tl.load(POS + b)
    per_split = tl.cdiv(count, n_splits)
    start = split * per_split
    end = tl.minimum(start + per_split, count)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    offs_n = tl.arange(0, BLOCK_SIZE)
    row = offs_g < GROUP
    q = tl.load(
        Q + b * stride_qb + (h * GROUP + offs_g)[:, None] * stride_qh + offs_d[None, :] * stride_qd,
        mask=row[:, None] & (offs_d < HEAD_DIM)[None, :],
        other=0.0,
    )
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, BLOCK_DV], tl.float32)
    for j in tl.range(start, end, num_stages=STAGES):
        c = tl.load(LIST + b * stride_lb + h * stride_lh + j)
        keys = c * BLOCK_SIZE + offs_n
        visible = keys <= pos  # listed blocks are complete past blocks or the query's own block
        k = tl.load(
            k_base + keys[:, None] * stride_kn + offs_d[None, :] * stride_kd,
            mask=visible[:, None] & (offs_d < HEAD_DIM)[None, :],
            other=0.0,
        )
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = s * scale + tl.load(PRIOR + b * stride_pb + h * stride_ph + c)
        s = tl.where(visible[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a block with no visible key: no NaN
        rescale = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * rescale + tl.sum(p, axis=1)
        v = tl.load(
            v_base + keys[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
            mask=visible[:, None] & (offs_dv < VALUE_DIM)[None, :],
            other=0.0,
        )
        if IEEE:
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out_row = (bh * n_splits + split) * GROUP + offs_g
    tl.store(M + out_row, m_i, mask=row)
    tl.store(L + out_row, l_i, mask=row)
    tl.store(
        ACC + out_row[:, None] * VALUE_DIM + offs_dv[None, :],
        acc,
        mask=row[:, None] & (offs_dv < VALUE_DIM)[None, :],
    )


# Launch defaults (tuned on the H200 by scripts/profile_decode.py; see docs/decode.md).
TARGET_PROGRAMS = 528  # split-KV programs per launch (4 waves of 132 SMs)
NUM_WARPS = 4
NUM_STAGES = 2


def num_splits(batch_heads: int, num_blocks: int, target_programs: int | None = None) -> int:
    """Splits per (sequence, KV head) so that about ``target_programs`` programs run, never more
    splits than blocks."""
    target = TARGET_PROGRAMS if target_programs is None else target_programs
    return max(1, min(num_blocks, -(-target // batch_heads)))


def sparse_decode_launch(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    block_list: torch.Tensor,
    count: torch.Tensor,
    prior: torch.Tensor,
    pos: torch.Tensor,
    scale: float,
    block_size: int,
    n_splits: int,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Run both passes; ``block_list [B, Hkv, nb]`` int32 holds each row's active blocks first
    (``count [B, Hkv]`` int32 of them). Returns ``[B, Hq, Dv]`` in the query dtype. Launches
    directly: eager, or the CPU interpreter; ``num_warps`` / ``num_stages`` override the
    defaults (profiling)."""
    B, Hq, D = query.shape
    Hkv, Dv = key.shape[1], value.shape[-1]
    G = Hq // Hkv
    acc = torch.empty(B * Hkv * n_splits * G, Dv, device=query.device, dtype=torch.float32)
    m = torch.empty(B * Hkv * n_splits * G, device=query.device, dtype=torch.float32)
    denom = torch.empty_like(m)
    _sparse_decode_split[(n_splits, B * Hkv)](
        query,
        key,
        value,
        block_list,
        count,
        prior,
        pos,
        acc,
        m,
        denom,
        Hkv,
        n_splits,
        *query.stride(),
        *key.stride(),
        *value.stride(),
        block_list.stride(0),
        block_list.stride(1),
        prior.stride(0),
        prior.stride(1),
        scale,
        GROUP=G,
        GROUP_PAD=max(16, triton.next_power_of_2(G)),
        HEAD_DIM=D,
        BLOCK_D=max(16, triton.next_power_of_2(D)),
        VALUE_DIM=Dv,
        BLOCK_DV=max(16, triton.next_power_of_2(Dv)),
        BLOCK_SIZE=block_size,
        IEEE=query.dtype == torch.float32,
        STAGES=NUM_STAGES if num_stages is None else num_stages,
        num_warps=NUM_WARPS if num_warps is None else num_warps,
    )
    out = torch.empty(B, Hq, Dv, device=query.device, dtype=query.dtype)
    shape = (B, Hkv, n_splits, G)
    return merge_splits_launch(acc.view(*shape, Dv), m.view(shape), denom.view(shape), out)
