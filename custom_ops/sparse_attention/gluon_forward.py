"""The inference fine forward as a Gluon kernel for Hopper (sm_90): FA3-style overlap by hand.

The same attention as ``_sparse_attention_fwd`` with ``FROM_ROWS`` (triton_kernels.py): one program
per (``BLOCK_M``-row query tile, ``PACK`` query heads) walks the tile's list of key blocks, adds each
entry's bias row (log-prior in log2 units, ``−inf`` where a row does not keep the block) and runs an
online softmax. What Triton's own pipeliner does not do for this loop, written out here:

* K and V blocks come by TMA into a ring of ``STAGES`` shared-memory slots, two entries ahead,
  each slot with its own mbarriers (K and V apart, so the score MMA waits only for K);
* the score MMA of entry ``j + 1`` is issued asynchronously before the softmax of entry ``j``,
  so the tensor cores work while the warps compute exponentials (FA3's intra-warpgroup overlap);
  P·V of entry ``j`` is waited at the end of its step. ``OVERLAP_PV`` keeps it in flight into the
  next softmax instead: waits count groups in issue order (``wgmma.wait_group``), so after issuing
  QK(j+1) then PV(j), one group outstanding completes QK(j+1), and in the next step, after issuing
  QK(j+2), one outstanding completes PV(j) before the accumulator is rescaled. ptxas serialises
  the ``wgmma`` of that form (C7514: the in-flight accumulator is copied across the loop's back
  edge), so it is a candidate to time, not the default;
* 8 warps: two warpgroups of 64 rows each, so the score tile (32 fp32 a thread) and the output
  accumulator (64) fit without spills;
* ``_sparse_attention_fwd_ws``: the two warpgroups as separate partitions (not in lockstep) beside a
  one-warp TMA loader, slots released through mbarriers (FA3's layout).

Measured (run 107, H100): correct, and slower than the Triton kernel: the best schedule
(``_ws``, 4 stages) 73.8 ms at 128K against 66.1–69.0 (docs/design.md says why that may be), so
``ops.FINE_KERNEL`` defaults to ``"triton"``.

Scope (checked by :func:`supports`): causal or not, 16-bit inputs, head and value dims of 128,
64-key blocks, ``PACK · BLOCK_M == 128``, ``scale > 0``, K and V viewable as rows of their storage
(a query chunk's ``key[:, :, :kv_end]`` too) with ``kv_len`` a multiple of the block size.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_init,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

LOG2E: gl.constexpr = gl.constexpr(1.4426950408889634)
LN2: gl.constexpr = gl.constexpr(0.6931471805599453)
ROWS = 128  # PACK · BLOCK_M: two warpgroups of 64 rows
STAGES = 3  # K / V slots: entry j + 2 loads while entries j and j + 1 are in use


@gluon.jit
def _issue_kv(k_desc, v_desc, k_smem, v_smem, k_bar, v_bar, LIST, list_base, entry, count, kv_row0,
              BLOCK_SIZE: gl.constexpr, STAGES: gl.constexpr):  # fmt: skip
    """TMA loads of list entry ``entry``'s K and V block into slot ``entry % STAGES`` (nothing past
    the list's end)."""
    ok = entry < count
    c = gl.load(LIST + list_base + entry, mask=ok, other=0)
    slot = entry % STAGES
    row = kv_row0 + c * BLOCK_SIZE
    mbarrier.expect(k_bar.index(slot), k_desc.block_type.nbytes, pred=ok)
    tma.async_copy_global_to_shared(k_desc, [row, 0], k_bar.index(slot), k_smem.index(slot), pred=ok)
    mbarrier.expect(v_bar.index(slot), v_desc.block_type.nbytes, pred=ok)
    tma.async_copy_global_to_shared(v_desc, [row, 0], v_bar.index(slot), v_smem.index(slot), pred=ok)


@gluon.jit
def _q_tile_to_shared(Q, b, h0, tile, q_len, stride_qb, stride_qh, stride_qt, BLOCK_M: gl.constexpr,
                      ROWS: gl.constexpr, HEAD_DIM: gl.constexpr, WARPS: gl.constexpr):  # fmt: skip
    """The program's queries ``[ROWS, D]`` in shared memory for the score MMA: row ``r`` is head
    ``h0 + r // BLOCK_M`` at position ``tile·BLOCK_M + r % BLOCK_M`` (zeros past ``q_len``)."""
    dtype: gl.constexpr = Q.dtype.element_ty
    q_load: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [WARPS, 1], [1, 0])
    offs_r = gl.arange(0, ROWS, layout=gl.SliceLayout(1, q_load))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, q_load))
    pos = tile * BLOCK_M + offs_r % BLOCK_M
    ptrs = (
        Q + b * stride_qb + (h0 + offs_r // BLOCK_M)[:, None] * stride_qh + pos[:, None] * stride_qt + offs_d[None, :]
    )
    q = gl.load(ptrs, mask=(pos < q_len)[:, None], other=0.0)
    layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([ROWS, HEAD_DIM], dtype)
    return gl.allocate_shared_memory(dtype, [ROWS, HEAD_DIM], layout, q)


@gluon.jit
def _lead_entries(LIST, list_base, count, tile, kv_len, causal_offset, BLOCK_M: gl.constexpr,
                  BLOCK_SIZE: gl.constexpr, CAUSAL: gl.constexpr):  # fmt: skip
    """Leading list entries that need no per-element mask (``_first_masked_entry`` of the Triton
    kernel): blocks from ``first_block`` on may hold keys past a row's position (causal) or past
    ``kv_len``; a walk back from the list's end."""
    if CAUSAL:
        first_block = gl.maximum((tile * BLOCK_M + causal_offset + 1) // BLOCK_SIZE, 0)
    else:
        first_block = kv_len // BLOCK_SIZE
    n_lead = count
    last = gl.load(LIST + list_base + n_lead - 1, mask=n_lead > 0, other=-1)
    while last >= first_block:
        n_lead -= 1
        last = gl.load(LIST + list_base + n_lead - 1, mask=n_lead > 0, other=-1)
    return n_lead


@gluon.jit
def _program_tile(num_tiles, num_q_heads, group_kv, group_sel, PACK: gl.constexpr, HEAVY_FIRST: gl.constexpr):
    """The program's query tile and heads: ``(tile, bh0, b, h0, bh_kv, list_row)``, ``bh0`` the first of
    its ``PACK`` (batch, query head) rows, ``bh_kv`` their (batch, KV head) and ``list_row`` the row of
    their tile's list, count and bias."""
    tile = gl.program_id(0)
    if HEAVY_FIRST:  # causal: late tiles list the most blocks; launched first, they leave no long tail
        tile = num_tiles - 1 - tile
    bh0 = gl.program_id(1).to(gl.int64) * PACK  # int64 offsets: the bias passes 2³¹ elements at 128K
    b = bh0 // num_q_heads
    h0 = bh0 % num_q_heads
    bh_kv = b * (num_q_heads // group_kv) + h0 // group_kv
    list_row = (b * (num_q_heads // group_sel) + h0 // group_sel) * num_tiles + tile
    return tile, bh0, b, h0, bh_kv, list_row


@gluon.jit
def _store_rows(acc, m_i, l_i, OUT, LSE, b, h0, bh0, tile, q_len, stride_ob, stride_oh, stride_ot, ROW0,
                N_ROWS: gl.constexpr, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr):  # fmt: skip
    """Rows ``ROW0 …`` of the tile (``N_ROWS`` of them; row ``r``: head ``h0 + r // BLOCK_M`` at
    position ``tile·BLOCK_M + r % BLOCK_M``): the output ``acc / l`` (zeros where a row kept nothing)
    and the natural-log LSE (the backward's convention; −inf there) from the log2-unit running max."""
    o_rows: gl.constexpr = gl.SliceLayout(1, acc.type.layout)
    m_rows: gl.constexpr = m_i.type.layout
    has_key = l_i > 0
    out = acc * gl.convert_layout(1.0 / gl.where(has_key, l_i, 1.0), o_rows)[:, None]
    rows_o = ROW0 + gl.arange(0, N_ROWS, layout=o_rows)
    pos_o = tile * BLOCK_M + rows_o % BLOCK_M
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, acc.type.layout))
    heads_o = h0 + rows_o // BLOCK_M
    out_ptrs = OUT + b * stride_ob + heads_o[:, None] * stride_oh + pos_o[:, None] * stride_ot + offs_d[None, :]
    gl.store(out_ptrs, out.to(OUT.dtype.element_ty), mask=(pos_o < q_len)[:, None])
    rows = ROW0 + gl.arange(0, N_ROWS, layout=m_rows)
    pos = tile * BLOCK_M + rows % BLOCK_M
    lse = gl.where(has_key, (m_i + gl.log2(gl.where(has_key, l_i, 1.0))) * LN2, float("-inf"))
    gl.store(LSE + (bh0 + rows // BLOCK_M) * q_len + pos, lse, mask=pos < q_len)


@gluon.jit
def _softmax_step(s, m_i, l_i, bias, masked, keys, rows_pos, causal_offset, qk_scale, CAUSAL: gl.constexpr):
    """One online-softmax step on raw products ``s`` (fp32, the score MMA's layout) with the entry's
    bias row (log2 units): ``(p, alpha, m_new, l_new)``. The bias is constant along a row, so the
    row max is taken on the raw products and a score costs one FMA before its exp2; a masked entry
    (the tile's diagonal blocks) first sets keys past a row's position to −inf."""
    if CAUSAL:
        if masked:
            s = gl.where(keys[None, :] <= rows_pos[:, None] + causal_offset, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale + bias)
    m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)  # rows that keep nothing so far: no NaN
    alpha = gl.exp2(m_i - m_safe)
    p = gl.exp2(s * qk_scale + (bias - m_safe)[:, None])
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, alpha, m_new, l_i


@gluon.jit
def _softmax_pair_step(s_a, s_b, m_i, l_i, bias_a, bias_b, masked_a, masked_b, keys_a, keys_b, rows_pos,
                       causal_offset, qk_scale, CAUSAL: gl.constexpr):  # fmt: skip
    """:func:`_softmax_step` over two entries at once: ``(p_a, p_b, alpha, m_new, l_new)``, one running
    max and one rescale ``alpha`` for both (an entry whose bias row is −inf adds nothing)."""
    if CAUSAL:
        if masked_a:
            s_a = gl.where(keys_a[None, :] <= rows_pos[:, None] + causal_offset, s_a, float("-inf"))
        if masked_b:
            s_b = gl.where(keys_b[None, :] <= rows_pos[:, None] + causal_offset, s_b, float("-inf"))
    m_a = gl.max(s_a, axis=1) * qk_scale + bias_a
    m_b = gl.max(s_b, axis=1) * qk_scale + bias_b
    m_new = gl.maximum(m_i, gl.maximum(m_a, m_b))
    m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)  # rows that keep nothing so far: no NaN
    alpha = gl.exp2(m_i - m_safe)
    p_a = gl.exp2(s_a * qk_scale + (bias_a - m_safe)[:, None])
    p_b = gl.exp2(s_b * qk_scale + (bias_b - m_safe)[:, None])
    l_i = l_i * alpha + (gl.sum(p_a, axis=1) + gl.sum(p_b, axis=1))
    return p_a, p_b, alpha, m_new, l_i


@gluon.jit
def _sparse_attention_fwd_gluon(
    Q, k_desc, v_desc, BIAS, LIST, COUNT, OUT, LSE,
    q_len, kv_len, kv_head_rows, causal_offset, num_q_heads, group_kv, group_sel, num_tiles,
    stride_qb, stride_qh, stride_qt,
    stride_lh, stride_bias_row, stride_bias_slot,
    stride_ob, stride_oh, stride_ot,
    scale,
    BLOCK_M: gl.constexpr, BLOCK_SIZE: gl.constexpr, HEAD_DIM: gl.constexpr, PACK: gl.constexpr,
    CAUSAL: gl.constexpr, HEAVY_FIRST: gl.constexpr, STAGES: gl.constexpr, OVERLAP_PV: gl.constexpr,
):  # fmt: skip
    ROWS: gl.constexpr = PACK * BLOCK_M
    gl.static_assert(ROWS == 128, "two warpgroups of 64 rows")
    dtype: gl.constexpr = k_desc.dtype
    # the score tile [ROWS, BLOCK_SIZE] and the output accumulator [ROWS, HEAD_DIM]: wgmma layouts,
    # 8 warps along the rows (two warpgroups)
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[8, 1],
                                                       instr_shape=[16, BLOCK_SIZE, 16])  # fmt: skip
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[8, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])  # fmt: skip
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    s_cols: gl.constexpr = gl.SliceLayout(0, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)

    qk_scale = scale.to(gl.float32) * LOG2E
    tile, bh0, b, h0, bh_kv, list_row = _program_tile(num_tiles, num_q_heads, group_kv, group_sel, PACK, HEAVY_FIRST)

    # Q: [ROWS, D] (row r: head h0 + r // BLOCK_M at position tile·BLOCK_M + r % BLOCK_M) into shared
    q_smem = _q_tile_to_shared(Q, b, h0, tile, q_len, stride_qb, stride_qh, stride_qt, BLOCK_M, ROWS, HEAD_DIM,
                               gl.num_warps())  # fmt: skip

    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_SIZE, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_SIZE, HEAD_DIM], v_desc.layout)
    k_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(k_bar.index(i), count=1)
        mbarrier.init(v_bar.index(i), count=1)
    fence_async_shared()  # Q's stores and the barriers' inits before the async proxy reads them

    list_base = list_row * stride_lh
    count = gl.load(COUNT + list_row)
    kv_row0 = (bh_kv * kv_head_rows).to(gl.int32)  # the head's first row in the [rows, D] view
    n_lead = _lead_entries(LIST, list_base, count, tile, kv_len, causal_offset, BLOCK_M, BLOCK_SIZE, CAUSAL)

    for i in gl.static_range(STAGES - 1):
        _issue_kv(k_desc, v_desc, k_smem, v_smem, k_bar, v_bar, LIST, list_base, i, count, kv_row0, BLOCK_SIZE,
                  STAGES)  # fmt: skip

    rows_s = gl.arange(0, ROWS, layout=s_rows)
    pos_s = tile * BLOCK_M + rows_s % BLOCK_M
    row_ok = pos_s < q_len
    keys0 = gl.arange(0, BLOCK_SIZE, layout=s_cols)
    bias_base = BIAS + list_row * stride_bias_row + rows_s % BLOCK_M
    m_i = gl.full([ROWS], float("-inf"), gl.float32, layout=s_rows)
    l_i = gl.zeros([ROWS], gl.float32, layout=s_rows)
    # loop-carried as an async accumulator (PV(j) may still run when the next step begins)
    acc = warpgroup_mma_init(gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout))
    s_zero = gl.zeros([ROWS, BLOCK_SIZE], gl.float32, layout=s_layout)

    # the first score MMA, synchronously (a list may be empty: then nothing is read)
    if count > 0:
        mbarrier.wait(k_bar.index(0), 0)
    s = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False)
    for j in range(count):
        slot = j % STAGES
        if not OVERLAP_PV:  # entry j − 1's slot is free (step j − 1 ended on wait(0) in each warpgroup):
            # entry j + 2's loads go there now, a whole step before QK(j + 2) waits for its K. The
            # barrier: every warpgroup has waited before the one issuing thread overwrites the slot
            gl.thread_barrier()
            _issue_kv(k_desc, v_desc, k_smem, v_smem, k_bar, v_bar, LIST, list_base, j + STAGES - 1, count, kv_row0,
                      BLOCK_SIZE, STAGES)  # fmt: skip
        # QK(j + 1) on the tensor cores while this entry's softmax runs (past the list's end: a
        # stale slot, its result never read)
        nxt = j + 1
        nslot = nxt % STAGES
        mbarrier.wait(k_bar.index(nslot), (nxt // STAGES) & 1, pred=nxt < count)
        s_next = warpgroup_mma(q_smem, k_smem.index(nslot).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        bias = gl.load(bias_base + j * stride_bias_slot, mask=row_ok, other=float("-inf"))
        c = gl.load(LIST + list_base + j)
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, bias, j >= n_lead, c * BLOCK_SIZE + keys0, pos_s,
                                           causal_offset, qk_scale, CAUSAL)  # fmt: skip
        # PV(j − 1) was issued before QK(j + 1): one group outstanding means it is done
        acc = warpgroup_mma_wait(1, deps=[acc])
        if OVERLAP_PV:  # only now is entry j − 1's slot free: the loads of entry j + 2 go there
            gl.thread_barrier()
            _issue_kv(k_desc, v_desc, k_smem, v_smem, k_bar, v_bar, LIST, list_base, j + STAGES - 1, count, kv_row0,
                      BLOCK_SIZE, STAGES)  # fmt: skip
        acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
        p16 = gl.convert_layout(p.to(dtype), p_layout)
        mbarrier.wait(v_bar.index(slot), (j // STAGES) & 1)
        acc = warpgroup_mma(p16, v_smem.index(slot), acc, is_async=True)
        if OVERLAP_PV:  # QK(j + 1) was issued before PV(j): one group outstanding means the scores are in
            s = warpgroup_mma_wait(1, deps=[s_next])
        else:  # nothing in flight across the loop's back edge (ptxas serialises the wgmma otherwise)
            s, acc = warpgroup_mma_wait(0, deps=[s_next, acc])
            acc = warpgroup_mma_init(acc)
    acc = warpgroup_mma_wait(0, deps=[acc])
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(k_bar.index(i))
        mbarrier.invalidate(v_bar.index(i))

    _store_rows(acc, m_i, l_i, OUT, LSE, b, h0, bh0, tile, q_len, stride_ob, stride_oh, stride_ot, 0, ROWS, BLOCK_M,
                HEAD_DIM)  # fmt: skip


def supports(query, key, value, block_list, count, bias, causal: bool, scale: float, block_size: int, block_m: int,
             pack: int, out=None) -> bool:  # fmt: skip
    """Whether the Gluon kernels take this launch (else the Triton kernel): an sm_90 GPU, 16-bit
    inputs, head and value dims of 128, 64-key blocks, 128-row tiles, ``scale > 0``, K and V
    readable as rows of their storage by TMA (:func:`_rows_view`; ``kv_len`` a multiple of the
    block size), unit last strides for Q and ``out``, and the list builder's layouts (contiguous
    lists, counts and bias rows of ``block_m`` rows)."""
    Skv, D = key.shape[2], key.shape[3]
    return (
        query.is_cuda
        and torch.cuda.get_device_capability(query.device)[0] == 9
        and query.dtype in (torch.bfloat16, torch.float16)
        and key.dtype == value.dtype == query.dtype
        and D == value.shape[-1] == query.shape[-1] == 128
        and block_size == 64
        and pack * block_m == ROWS
        and scale > 0
        and Skv % block_size == 0
        and query.stride(-1) == 1
        and (out is None or out.stride(-1) == 1)
        and all(t.is_contiguous() for t in (block_list, count, bias))
        and bias.shape[-1] == block_m
        and _rows_view(key) is not None
        and _rows_view(value) is not None
        and key.stride() == value.stride()
    )


def _rows_view(t: torch.Tensor):
    """``(rows, head_rows)``: ``t [B, H, S, D]`` as the rows ``[n, D]`` of its storage that TMA reads
    (head ``i``'s tokens from row ``i · head_rows``), or None: a last dim that is not contiguous,
    token rows that do not follow each other, heads not a whole number of rows apart, batch and
    head dims that do not merge, an unaligned base, or rows past an int32 coordinate. A query
    chunk's keys (``key[:, :, :kv_end]`` of a longer K) qualify."""
    B, H, S, D = t.shape
    st = t.stride()
    if t.numel() == 0 or st[3] != 1 or st[2] != D or st[1] % D or (B > 1 and st[0] != H * st[1]):
        return None
    head_rows = st[1] // D if H > 1 or B > 1 else S
    n_rows = (B * H - 1) * head_rows + S
    if head_rows < S or n_rows >= 2**31 or t.data_ptr() % 16:
        return None
    return torch.as_strided(t, (n_rows, D), (D, 1)), head_rows


def _kv_descriptors(key: torch.Tensor, value: torch.Tensor, block_size: int):
    """TMA descriptors of K and V as rows (:func:`_rows_view`; :func:`supports` checked both), boxes
    of one block, and the rows between heads."""
    D = key.shape[-1]
    gl_dtype = gl.bfloat16 if key.dtype == torch.bfloat16 else gl.float16
    layout = gl.NVMMASharedLayout.get_default_for([block_size, D], gl_dtype)
    (k_rows, head_rows), (v_rows, _) = _rows_view(key), _rows_view(value)
    return (TensorDescriptor.from_tensor(k_rows, [block_size, D], layout),
            TensorDescriptor.from_tensor(v_rows, [block_size, D], layout), head_rows)  # fmt: skip


def sparse_attention_rows_gluon(query, key, value, block_list, count, bias, causal: bool, scale: float,
                                block_size: int, block_m: int, pack: int, out=None,
                                overlap_pv: bool = False):  # fmt: skip
    """``(out, lse)``: :func:`triton_kernels.sparse_attention_rows_launch`'s result (up to fp32
    rounding) from the Gluon kernel; the caller checks :func:`supports` first."""
    return _launch(_sparse_attention_fwd_gluon, query, key, value, block_list, count, bias, causal, scale, block_size,
                   block_m, pack, out, STAGES=STAGES, OVERLAP_PV=overlap_pv, num_warps=8)  # fmt: skip


def _launch(kernel, query, key, value, block_list, count, bias, causal, scale, block_size, block_m, pack, out,
            **options):  # fmt: skip
    """Both kernels' launch: the same arguments, ``options`` their own constexprs and launch options."""
    B, Hq, Sq, D = query.shape
    Hkv, Skv = key.shape[1], key.shape[2]
    _, H_sel, n_tiles, nb, _ = bias.shape
    if out is None:
        out = torch.empty(B, Hq, Sq, D, device=query.device, dtype=query.dtype)
    lse = torch.empty(B, Hq, Sq, device=query.device, dtype=torch.float32)
    k_desc, v_desc, head_rows = _kv_descriptors(key, value, block_size)
    list_rows = block_list.view(-1, block_list.shape[-1])
    kernel[(n_tiles, B * Hq // pack)](
        query, k_desc, v_desc, bias, list_rows, count, out, lse,
        Sq, Skv, head_rows, Skv - Sq, Hq, Hq // Hkv, Hq // H_sel, n_tiles,
        query.stride(0), query.stride(1), query.stride(2),
        list_rows.stride(0), nb * block_m, block_m,
        out.stride(0), out.stride(1), out.stride(2),
        scale,
        BLOCK_M=block_m, BLOCK_SIZE=block_size, HEAD_DIM=D, PACK=pack, CAUSAL=causal, HEAVY_FIRST=causal, **options,
    )  # fmt: skip
    return out, lse


# ----------------------------------------------------------------------------- warp-specialised
@gluon.jit
def _ws_loader(k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, LIST, list_base, count, kv_row0,
               BLOCK_SIZE: gl.constexpr, STAGES: gl.constexpr):  # fmt: skip
    """The load partition (one warp): each list entry's K and V block by TMA into the ring, once
    both consumer warpgroups have released the slot (its empty barriers take two arrivals)."""
    for j in range(count):
        slot = j % STAGES
        phase = (j // STAGES) & 1
        row = kv_row0 + gl.load(LIST + list_base + j) * BLOCK_SIZE
        mbarrier.wait(k_empty.index(slot), phase ^ 1)
        mbarrier.expect(k_ready.index(slot), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [row, 0], k_ready.index(slot), k_smem.index(slot))
        mbarrier.wait(v_empty.index(slot), phase ^ 1)
        mbarrier.expect(v_ready.index(slot), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [row, 0], v_ready.index(slot), v_smem.index(slot))


@gluon.jit
def _ws_pair_loop(q_wg, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, LIST, list_base, count, n_lead,
                  bias_base, stride_bias_slot, row_ok, pos, causal_offset, qk_scale, m_i, l_i, acc,
                  BLOCK_SIZE: gl.constexpr, CAUSAL: gl.constexpr, STAGES: gl.constexpr, WG: gl.constexpr):  # fmt: skip
    """A consumer's walk two entries a step (``PAIRS``): 128 keys a step as FA3's tiles have, so the
    step's fixed costs (the accumulator's rescale, the waits, the turn) are paid once per two
    blocks. A step: the pair's softmax, then P·V of both and the next pair's two score MMAs,
    issued in turns with the other warpgroup (``PINGPONG``'s schedule). Past the list's end an
    entry reads the slot of the one before it (data that is there) under a −inf bias row, so it
    adds nothing and no slot is read before it was written; it waits for and releases nothing."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_SIZE, 16])  # fmt: skip
    o_layout: gl.constexpr = acc.type.layout
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    dtype: gl.constexpr = k_smem.dtype
    keys0 = gl.arange(0, BLOCK_SIZE, layout=gl.SliceLayout(0, s_layout))
    s_zero = gl.zeros([64, BLOCK_SIZE], gl.float32, layout=s_layout)

    # the first pair's scores
    has_b = count > 1
    mbarrier.wait(k_ready.index(0), 0, pred=count > 0)
    mbarrier.wait(k_ready.index(1), 0, pred=has_b)
    s_a = warpgroup_mma(q_wg, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s_b = warpgroup_mma(q_wg, k_smem.index(has_b.to(gl.int32)).permute((1, 0)), s_zero, use_acc=False,
                        is_async=True)  # fmt: skip
    s_a, s_b = warpgroup_mma_wait(0, deps=[s_a, s_b])
    mbarrier.arrive(k_empty.index(0), count=1, pred=count > 0)
    mbarrier.arrive(k_empty.index(1), count=1, pred=has_b)
    for e in range(0, count, 2):
        has_b = e + 1 < count
        slot_a = e % STAGES
        slot_b = (e + has_b.to(gl.int32)) % STAGES
        bias_a = gl.load(bias_base + e * stride_bias_slot, mask=row_ok, other=float("-inf"))
        bias_b = gl.load(bias_base + (e + 1) * stride_bias_slot, mask=row_ok & has_b, other=float("-inf"))
        c_a = gl.load(LIST + list_base + e)
        c_b = gl.load(LIST + list_base + e + 1, mask=has_b, other=0)
        p_a, p_b, alpha, m_i, l_i = _softmax_pair_step(s_a, s_b, m_i, l_i, bias_a, bias_b, e >= n_lead,
                                                       e + 1 >= n_lead, c_a * BLOCK_SIZE + keys0,
                                                       c_b * BLOCK_SIZE + keys0, pos, causal_offset, qk_scale,
                                                       CAUSAL)  # fmt: skip
        acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
        pa16 = gl.convert_layout(p_a.to(dtype), p_layout)
        pb16 = gl.convert_layout(p_b.to(dtype), p_layout)
        # the data first, then the turn: a warpgroup never holds the other up on a load
        mbarrier.wait(v_ready.index(slot_a), (e // STAGES) & 1)
        mbarrier.wait(v_ready.index(slot_b), ((e + 1) // STAGES) & 1, pred=has_b)
        more_a = e + 2 < count
        more_b = e + 3 < count
        nslot_a = (e + 2) % STAGES
        nslot_b = (e + 2 + more_b.to(gl.int32)) % STAGES
        mbarrier.wait(k_ready.index(nslot_a), ((e + 2) // STAGES) & 1, pred=more_a)
        mbarrier.wait(k_ready.index(nslot_b), ((e + 3) // STAGES) & 1, pred=more_b)
        mbarrier.wait(turn.index(WG), (e // 2) & 1)
        acc = warpgroup_mma(pa16, v_smem.index(slot_a), acc, is_async=True)
        acc = warpgroup_mma(pb16, v_smem.index(slot_b), acc, is_async=True)
        s_a = warpgroup_mma(q_wg, k_smem.index(nslot_a).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        s_b = warpgroup_mma(q_wg, k_smem.index(nslot_b).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        mbarrier.arrive(turn.index(1 - WG), count=1)
        s_a, s_b, acc = warpgroup_mma_wait(0, deps=[s_a, s_b, acc])
        mbarrier.arrive(k_empty.index(nslot_a), count=1, pred=more_a)
        mbarrier.arrive(k_empty.index(nslot_b), count=1, pred=more_b)
        mbarrier.arrive(v_empty.index(slot_a), count=1)
        mbarrier.arrive(v_empty.index(slot_b), count=1, pred=has_b)
    return m_i, l_i, acc


@gluon.jit
def _ws_consumer(q_smem, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, BIAS, LIST, OUT, LSE, list_base,
                 list_row, count, n_lead, tile, bh0, b, h0, q_len, causal_offset, stride_bias_row, stride_bias_slot,
                 stride_ob, stride_oh, stride_ot, qk_scale, BLOCK_M: gl.constexpr, BLOCK_SIZE: gl.constexpr,
                 HEAD_DIM: gl.constexpr, CAUSAL: gl.constexpr, STAGES: gl.constexpr, PINGPONG: gl.constexpr,
                 PAIRS: gl.constexpr, WG: gl.constexpr):  # fmt: skip
    """A consumer warpgroup: rows ``64·WG …`` of the tile (with 32-row tiles, heads ``h0 + 2·WG`` and
    ``+ 1``; with one 128-row head, its positions ``64·WG …``). Nothing is in flight across the
    loop's back edge (ptxas serialises the wgmma otherwise). Two schedules:

    * default: the score MMA of entry ``j + 1`` runs while entry ``j``'s softmax does, P·V(j) is
      issued after it; the warpgroups run unsynchronised;
    * ``PINGPONG`` (FA3's inter-warpgroup schedule): a step is softmax(j), then P·V(j) and
      QK(j + 1) issued together, in turns: a warpgroup issues its MMAs only after the other issued
      its own for the same step (``turn``: one barrier each, one arrival a step), so one
      warpgroup's softmax runs while the other's MMAs use the tensor cores;
    * ``PAIRS``: that schedule two entries a step (:func:`_ws_pair_loop`)."""
    WG_ROWS: gl.constexpr = 64
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_SIZE, 16])  # fmt: skip
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])  # fmt: skip
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    q_wg = q_smem.slice(WG * WG_ROWS, WG_ROWS)
    rows = WG * WG_ROWS + gl.arange(0, WG_ROWS, layout=s_rows)  # rows of the whole tile (any BLOCK_M)
    pos = tile * BLOCK_M + rows % BLOCK_M
    row_ok = pos < q_len
    bias_base = BIAS + list_row * stride_bias_row + rows % BLOCK_M
    m_i = gl.full([WG_ROWS], float("-inf"), gl.float32, layout=s_rows)
    l_i = gl.zeros([WG_ROWS], gl.float32, layout=s_rows)
    acc = gl.zeros([WG_ROWS, HEAD_DIM], gl.float32, layout=o_layout)
    if PAIRS:
        m_i, l_i, acc = _ws_pair_loop(q_wg, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, LIST, list_base,
                                      count, n_lead, bias_base, stride_bias_slot, row_ok, pos, causal_offset,
                                      qk_scale, m_i, l_i, acc, BLOCK_SIZE, CAUSAL, STAGES, WG)  # fmt: skip
    else:
        m_i, l_i, acc = _ws_single_loop(q_wg, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, LIST,
                                        list_base, count, n_lead, bias_base, stride_bias_slot, row_ok, pos,
                                        causal_offset, qk_scale, m_i, l_i, acc, BLOCK_SIZE, CAUSAL, STAGES, PINGPONG,
                                        WG)  # fmt: skip
    _store_rows(acc, m_i, l_i, OUT, LSE, b, h0, bh0, tile, q_len, stride_ob, stride_oh, stride_ot, WG * WG_ROWS,
                WG_ROWS, BLOCK_M, HEAD_DIM)  # fmt: skip


@gluon.jit
def _ws_single_loop(q_wg, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, LIST, list_base, count, n_lead,
                    bias_base, stride_bias_slot, row_ok, pos, causal_offset, qk_scale, m_i, l_i, acc,
                    BLOCK_SIZE: gl.constexpr, CAUSAL: gl.constexpr, STAGES: gl.constexpr, PINGPONG: gl.constexpr,
                    WG: gl.constexpr):  # fmt: skip
    """A consumer's walk one entry a step (:func:`_ws_consumer`'s first two schedules)."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_SIZE, 16])  # fmt: skip
    o_layout: gl.constexpr = acc.type.layout
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    dtype: gl.constexpr = k_smem.dtype
    keys0 = gl.arange(0, BLOCK_SIZE, layout=gl.SliceLayout(0, s_layout))
    s_zero = gl.zeros([64, BLOCK_SIZE], gl.float32, layout=s_layout)

    mbarrier.wait(k_ready.index(0), 0, pred=count > 0)
    s = warpgroup_mma(q_wg, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False)
    mbarrier.arrive(k_empty.index(0), count=1, pred=count > 0)
    for j in range(count):
        slot = j % STAGES
        nxt = j + 1
        nslot = nxt % STAGES
        more = nxt < count
        if not PINGPONG:  # QK(j + 1) beside this entry's softmax (past the list's end: a stale slot, never read)
            mbarrier.wait(k_ready.index(nslot), (nxt // STAGES) & 1, pred=more)
            s_next = warpgroup_mma(q_wg, k_smem.index(nslot).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        bias = gl.load(bias_base + j * stride_bias_slot, mask=row_ok, other=float("-inf"))
        c = gl.load(LIST + list_base + j)
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, bias, j >= n_lead, c * BLOCK_SIZE + keys0, pos,
                                           causal_offset, qk_scale, CAUSAL)  # fmt: skip
        acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
        p16 = gl.convert_layout(p.to(dtype), p_layout)
        mbarrier.wait(v_ready.index(slot), (j // STAGES) & 1)
        if PINGPONG:  # the data first, then the turn: a warpgroup never holds the other up on a load
            mbarrier.wait(k_ready.index(nslot), (nxt // STAGES) & 1, pred=more)
            mbarrier.wait(turn.index(WG), j & 1)
            pv = warpgroup_mma(p16, v_smem.index(slot), acc, is_async=True)
            s_next = warpgroup_mma(q_wg, k_smem.index(nslot).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            mbarrier.arrive(turn.index(1 - WG), count=1)
        else:
            pv = warpgroup_mma(p16, v_smem.index(slot), acc, is_async=True)
        s, acc = warpgroup_mma_wait(0, deps=[s_next, pv])
        mbarrier.arrive(k_empty.index(nslot), count=1, pred=more)
        mbarrier.arrive(v_empty.index(slot), count=1)
    return m_i, l_i, acc


@gluon.jit
def _sparse_attention_fwd_ws(
    Q, k_desc, v_desc, BIAS, LIST, COUNT, OUT, LSE,
    q_len, kv_len, kv_head_rows, causal_offset, num_q_heads, group_kv, group_sel, num_tiles,
    stride_qb, stride_qh, stride_qt,
    stride_lh, stride_bias_row, stride_bias_slot,
    stride_ob, stride_oh, stride_ot,
    scale,
    BLOCK_M: gl.constexpr, BLOCK_SIZE: gl.constexpr, HEAD_DIM: gl.constexpr, PACK: gl.constexpr,
    CAUSAL: gl.constexpr, HEAVY_FIRST: gl.constexpr, STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr,
    PINGPONG: gl.constexpr, PAIRS: gl.constexpr,
):  # fmt: skip
    """:func:`_sparse_attention_fwd_gluon`'s attention with its two warpgroups as separate partitions
    (each its 64 rows; in turns with ``PINGPONG``, :func:`_ws_consumer`) beside a one-warp TMA load
    partition (FA3's layout)."""
    ROWS: gl.constexpr = PACK * BLOCK_M
    gl.static_assert(ROWS == 128, "two consumer warpgroups of 64 rows")
    dtype: gl.constexpr = k_desc.dtype
    qk_scale = scale.to(gl.float32) * LOG2E
    tile, bh0, b, h0, bh_kv, list_row = _program_tile(num_tiles, num_q_heads, group_kv, group_sel, PACK, HEAVY_FIRST)

    q_smem = _q_tile_to_shared(Q, b, h0, tile, q_len, stride_qb, stride_qh, stride_qt, BLOCK_M, ROWS, HEAD_DIM,
                               gl.num_warps())  # fmt: skip
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_SIZE, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_SIZE, HEAD_DIM], v_desc.layout)
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # both consumer warpgroups release a slot
        mbarrier.init(v_empty.index(i), count=2)
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    fence_async_shared()
    if PINGPONG or PAIRS:  # warpgroup 0 takes the first turn (the pair walk always takes turns)
        mbarrier.arrive(turn.index(0), count=1)

    list_base = list_row * stride_lh
    count = gl.load(COUNT + list_row)
    kv_row0 = (bh_kv * kv_head_rows).to(gl.int32)  # the head's first row in the [rows, D] view
    n_lead = _lead_entries(LIST, list_base, count, tile, kv_len, causal_offset, BLOCK_M, BLOCK_SIZE, CAUSAL)

    gl.warp_specialize([
        (_ws_consumer, (q_smem, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, BIAS, LIST, OUT, LSE,
                        list_base, list_row, count, n_lead, tile, bh0, b, h0, q_len, causal_offset, stride_bias_row,
                        stride_bias_slot, stride_ob, stride_oh, stride_ot, qk_scale, BLOCK_M, BLOCK_SIZE, HEAD_DIM,
                        CAUSAL, STAGES, PINGPONG, PAIRS, 0)),
        (_ws_consumer, (q_smem, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, BIAS, LIST, OUT, LSE,
                        list_base, list_row, count, n_lead, tile, bh0, b, h0, q_len, causal_offset, stride_bias_row,
                        stride_bias_slot, stride_ob, stride_oh, stride_ot, qk_scale, BLOCK_M, BLOCK_SIZE, HEAD_DIM,
                        CAUSAL, STAGES, PINGPONG, PAIRS, 1)),
        (_ws_loader, (k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, LIST, list_base, count,
                      kv_row0, BLOCK_SIZE, STAGES)),
    ], [4, 1], [CONSUMER_REGS, 24])  # fmt: skip


def sparse_attention_rows_gluon_ws(query, key, value, block_list, count, bias, causal: bool, scale: float,
                                   block_size: int, block_m: int, pack: int, out=None,
                                   consumer_regs: int = 232, maxnreg: int = 168, stages: int = STAGES,
                                   pingpong: bool = False, pairs: bool = False):  # fmt: skip
    """:func:`sparse_attention_rows_gluon` through the warp-specialised kernel. ``consumer_regs`` /
    ``maxnreg``: the consumer worker's registers and the kernel's cap (3 warpgroups × 128 threads ×
    ``maxnreg`` ≤ 64K); ``stages``: K / V slots in the ring (32 KiB each; ≥ 2, ≥ 3 with ``pairs``:
    with 2 the pair walk's step waits for the next pair's K, which the in-order loader issues only
    after a V slot this step still holds); ``pingpong``: the consumers' MMAs in turns; ``pairs``:
    two entries a step, in turns (:func:`_ws_consumer`)."""
    if stages < (3 if pairs else 2):
        raise ValueError(f"stages={stages}: the ring needs at least {3 if pairs else 2} slots here")
    return _launch(_sparse_attention_fwd_ws, query, key, value, block_list, count, bias, causal, scale, block_size,
                   block_m, pack, out, STAGES=stages, CONSUMER_REGS=consumer_regs, PINGPONG=pingpong or pairs,
                   PAIRS=pairs, num_warps=4, maxnreg=maxnreg)  # fmt: skip


def sparse_attention_rows_gluon_ws_pingpong(query, key, value, block_list, count, bias, causal: bool, scale: float,
                                            block_size: int, block_m: int, pack: int, out=None):  # fmt: skip
    """:func:`sparse_attention_rows_gluon_ws` with the consumers' MMAs in turns (``FINE_KERNEL``
    ``"gluon_ws_pingpong"``)."""
    return sparse_attention_rows_gluon_ws(query, key, value, block_list, count, bias, causal, scale, block_size,
                                          block_m, pack, out, pingpong=True)  # fmt: skip


PAIR_STAGES = 6  # two entries a step: the pair in use, the next pair's K, and loads a pair ahead


def sparse_attention_rows_gluon_ws_pairs(query, key, value, block_list, count, bias, causal: bool, scale: float,
                                         block_size: int, block_m: int, pack: int, out=None):  # fmt: skip
    """:func:`sparse_attention_rows_gluon_ws` two entries a step, the consumers in turns
    (``FINE_KERNEL`` ``"gluon_ws_pairs"``), with a ring of :data:`PAIR_STAGES` slots."""
    return sparse_attention_rows_gluon_ws(query, key, value, block_list, count, bias, causal, scale, block_size,
                                          block_m, pack, out, stages=PAIR_STAGES, pairs=True)  # fmt: skip
