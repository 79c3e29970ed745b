"""Block-sparse flash forward over a selection (Triton).

One program per (query tile of ``BLOCK_M`` rows, ``PACK`` query heads). It walks the tile's
compact list of key blocks — the union of the blocks its rows keep — and for each block adds
the log-prior as a *row vector* (one value per query row, read contiguously from the
query-major layout) and masks rows that do not keep the block with the active flags, also a
row vector. No per-element gather, unlike a FlexAttention score_mod (FIELD_NOTES: that gather
was the 2–4× cost). Online softmax in fp32 and log2 units: on an unmasked block (and scale > 0)
the row max is taken on the raw products and a score costs one FMA before its exp2; only the
tile's diagonal blocks (and a partial last block) pay a per-element mask. Writes the output, its
rounding residual (for the backward; not at inference) and the row LSE (natural log).
``_row_bias`` and ``_load_keys`` are shared with the backward kernels (triton_backward.py), so
all three mask the same pairs. ``FROM_ROWS`` (inference, ``dash_flex::sparse_attention_rows``):
the bias rows come instead by list slot from the tile list builder, which forms them from ``p̄``
rows (list_kernels.py), so the coarse stage writes no block-major prior or flags.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .torch_impl import check_out

LOG2E = tl.constexpr(1.4426950408889634)
# The rows launch (inference) loads K and V through TMA descriptors where their layout allows it
# (`_kv_descriptors`) and `default_descriptors` says (from DESCRIPTOR_MIN_KV_LEN keys, on the
# launch that was measured). H200, run 72, the fine kernel alone on the benchmark's lists: 128K
# 68.0–68.7 ms against 69.4–70.7 with pointer loads, 32K 4.74–4.76 against 4.69–4.72 (no gain
# there); three stages or 8 warps with descriptors were slower (98.4 / 85.4 ms at 128K). Same bits
# either way. A descriptor launch costs host time, which short calls cannot hide (run 75, 8K
# dash_fused: ~1.1 ms a call against 0.69 with pointers).
KV_DESCRIPTORS = True
DESCRIPTOR_MIN_KV_LEN = 65536
# Causal launches start with the last query tiles, which list the most blocks, so the launch does
# not end on them (a partial last wave of the longest programs). H200, run 80, dash_fused end to
# end, two runs each: 32K 6.65 / 6.66 ms against 6.68 / 6.75; 128K whole 93.71 / 94.00 against
# 94.51 / 94.69, in 7 uniform chunks 97.31 / 97.09 against 97.87 / 97.28, in 15 uniform chunks
# even (before fused_chunk_bounds). Same bits.
HEAVY_TILES_FIRST = True
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _row_bias(prior_base, active_base, c, rows, row_ok, stride_pc, stride_pt, stride_ac, stride_at,
              HAS_PRIOR: tl.constexpr):  # fmt: skip
    """Block ``c``'s additive term per query row, in log2 units: ``prior · log₂e`` where the row
    keeps the block, ``−inf`` where it does not (so masking by the flags costs nothing per score).
    Shared by the forward and both backward kernels, so all three mask the same pairs."""
    keep = tl.load(active_base + c * stride_ac + rows * stride_at, mask=row_ok, other=0) != 0
    if HAS_PRIOR:
        prior = tl.load(prior_base + c * stride_pc + rows * stride_pt, mask=row_ok, other=0.0)
        return tl.where(keep, prior * LOG2E, float("-inf"))
    return tl.where(keep, 0.0, float("-inf"))


@triton.jit
def _load_keys(base, keys, key_ok, stride_n, stride_d, DIM: tl.constexpr, BLOCK: tl.constexpr,
               MASKED: tl.constexpr):  # fmt: skip
    """``[len(keys), BLOCK]`` rows of a K or V block (zeros past ``DIM``). ``MASKED`` blocks (the
    diagonal, a partial last block) also zero the keys past ``kv_len``; a lead block lies inside
    the keys, so its load needs no predicate when ``BLOCK == DIM``."""
    offs = tl.arange(0, BLOCK)
    ptrs = base + keys[:, None] * stride_n + offs[None, :] * stride_d
    if MASKED:
        return tl.load(ptrs, mask=key_ok[:, None] & (offs < DIM)[None, :], other=0.0)
    elif BLOCK == DIM:
        return tl.load(ptrs)
    else:
        return tl.load(ptrs, mask=(offs < DIM)[None, :], other=0.0)


@triton.jit
def _first_masked_entry(LIST, list_row, count, stride_lh, stride_lt, tile, kv_len, causal_offset,
                        BLOCK_M: tl.constexpr, BLOCK_SIZE: tl.constexpr, CAUSAL: tl.constexpr):  # fmt: skip
    """Number of leading entries of the ``BLOCK_M``-row query tile's ascending block list that need
    no per-element mask: blocks from ``first_block`` on may hold keys past a row's position (causal)
    or past ``kv_len``. A short walk back from the end (a tile's diagonal blocks). Shared by the
    forward and the backward's ``_dq_dprior``."""
    if CAUSAL:  # ≥ 0: with Sq > Skv early rows sit before every key (and the walk must stop at 0)
        first_block = tl.maximum((tile * BLOCK_M + causal_offset + 1) // BLOCK_SIZE, 0)
    else:
        first_block = kv_len // BLOCK_SIZE
    n_lead = count
    last = tl.load(LIST + list_row * stride_lh + (n_lead - 1) * stride_lt, mask=n_lead > 0, other=-1)
    while last >= first_block:
        n_lead -= 1
        last = tl.load(LIST + list_row * stride_lh + (n_lead - 1) * stride_lt, mask=n_lead > 0, other=-1)
    return n_lead


@triton.jit
def _fwd_block(acc, m_i, l_i, q, c, bias, rows, k_base, v_base, kv_len, causal_offset, qk_scale,
               stride_kn, stride_kd, stride_vn, stride_vd, bh_kv,
               BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VALUE_DIM: tl.constexpr,
               BLOCK_DV: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, IEEE: tl.constexpr,
               FOLD_MAX: tl.constexpr, USE_DESC: tl.constexpr):  # fmt: skip
    """One online-softmax step over key block ``c`` (scores in log2 units). ``bias`` is the block's
    row vector (from :func:`_row_bias`, or the list entry's bias rows with ``FROM_ROWS``; ``-inf``
    where a row does not keep the block). On an
    unmasked block with ``qk_scale > 0`` (``FOLD_MAX``) the bias is constant along each row, so the
    row max of the scores is the row max of the raw products, scaled, plus the bias, and a score
    costs one FMA before its exp2 (H200, 32K: 5.41 against 5.76 ms with the scores formed first).
    ``MASKED`` blocks (the diagonal, a partial last block) also compare keys against the rows'
    positions and ``kv_len``. ``USE_DESC``: ``k_base`` / ``v_base`` are tensor descriptors of K and V
    as ``[B·H_kv, kv_len, D]`` (TMA loads; rows past ``kv_len`` come as zeros) and ``bh_kv`` the
    program's row of them."""
    keys = c * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    key_ok = keys < kv_len
    if USE_DESC:
        k = k_base.load([bh_kv, c * BLOCK_SIZE, 0]).reshape(BLOCK_SIZE, BLOCK_D)
    else:
        k = _load_keys(k_base, keys, key_ok, stride_kn, stride_kd, HEAD_DIM, BLOCK_D, MASKED)
    if IEEE:
        raw = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        raw = tl.dot(q, tl.trans(k))
    FOLD: tl.constexpr = FOLD_MAX and not MASKED
    if FOLD:
        m_new = tl.maximum(m_i, tl.max(raw, axis=1) * qk_scale + bias)
    else:
        s = raw * qk_scale + bias[:, None]
        if MASKED:
            ok = key_ok[None, :]
            if CAUSAL:
                ok = ok & (keys[None, :] <= rows[:, None] + causal_offset)
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that keep nothing so far: no NaN
    rescale = tl.exp2(m_i - m_safe)
    if FOLD:
        p = tl.exp2(raw * qk_scale + (bias - m_safe)[:, None])
    else:
        p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * rescale + tl.sum(p, axis=1)
    if USE_DESC:
        v = v_base.load([bh_kv, c * BLOCK_SIZE, 0]).reshape(BLOCK_SIZE, BLOCK_DV)
    else:
        v = _load_keys(v_base, keys, key_ok, stride_vn, stride_vd, VALUE_DIM, BLOCK_DV, MASKED)
    if IEEE:
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def _fwd_blocks(acc, m_i, l_i, q, LIST, list_row, j0, j1, rows, row_ok, k_base, v_base, prior_base, active_base,
                kv_len, causal_offset, qk_scale, stride_lh, stride_lt, stride_kn, stride_kd,
                stride_vn, stride_vd, stride_pc, stride_pt, stride_ac, stride_at, bh_kv,
                BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, VALUE_DIM: tl.constexpr,
                BLOCK_DV: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_PRIOR: tl.constexpr,
                IEEE: tl.constexpr, FOLD_MAX: tl.constexpr, FROM_ROWS: tl.constexpr,
                USE_DESC: tl.constexpr):  # fmt: skip
    """:func:`_fwd_block` over the list entries ``[j0, j1)``. (Loading the next entry's block index
    and bias row a step ahead was slower: H200 run 55, 32K, same process, 5.41 ms against 5.04.)"""
    for j in range(j0, j1):
        c = tl.load(LIST + list_row * stride_lh + j * stride_lt)
        if FROM_ROWS:  # the list entry's bias rows, by slot: one contiguous row vector, no flags
            bias = tl.load(prior_base + j * stride_pc + rows * stride_pt, mask=row_ok, other=float("-inf"))
        else:
            bias = _row_bias(prior_base, active_base, c, rows, row_ok, stride_pc, stride_pt, stride_ac, stride_at,
                             HAS_PRIOR)  # fmt: skip
        acc, m_i, l_i = _fwd_block(acc, m_i, l_i, q, c, bias, rows, k_base, v_base, kv_len, causal_offset, qk_scale,
                                   stride_kn, stride_kd, stride_vn, stride_vd, bh_kv, BLOCK_SIZE, HEAD_DIM, BLOCK_D,
                                   VALUE_DIM, BLOCK_DV, MASKED, CAUSAL, IEEE, FOLD_MAX, USE_DESC)  # fmt: skip
    return acc, m_i, l_i


@triton.jit
def _sparse_attention_fwd(
    Q, K, V, K_DESC, V_DESC, PRIOR, ACTIVE, LIST, COUNT, OUT, OUT_RES, LSE,
    q_len, kv_len, causal_offset, num_q_heads, group_kv, group_sel, group_act, num_tiles,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_pb, stride_ph, stride_pc, stride_pt,
    stride_ab, stride_ah, stride_ac, stride_at,
    stride_lh, stride_lt,
    stride_ob, stride_oh, stride_ot, stride_od,
    scale,
    BLOCK_M: tl.constexpr, BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    VALUE_DIM: tl.constexpr, BLOCK_DV: tl.constexpr, CAUSAL: tl.constexpr, HAS_PRIOR: tl.constexpr,
    IEEE: tl.constexpr, PACK: tl.constexpr, FOLD_MAX: tl.constexpr, STORE_RESIDUAL: tl.constexpr,
    FROM_ROWS: tl.constexpr, USE_DESC: tl.constexpr, HEAVY_FIRST: tl.constexpr,
):  # fmt: skip
    # A program owns BLOCK_M query rows of each of PACK query heads (consecutive, same KV head and
    # same selection): row r is head h0 + r // BLOCK_M at position tile·BLOCK_M + r % BLOCK_M, so
    # every K/V block read serves PACK heads. FROM_ROWS: PRIOR is the bias by list slot, [B·H_act,
    # n_tiles, nb, BLOCK_M] (stride_pb: a list row, stride_pc: a slot, stride_pt: a row; tile-local
    # rows), and ACTIVE is not read.
    qk_scale = tl.cast(scale, tl.float32) * LOG2E  # Inductor may pass Python floats as fp64
    tile = tl.program_id(0)
    if HEAVY_FIRST:  # causal: late tiles list the most blocks; launched first, they leave no long tail
        tile = num_tiles - 1 - tile
    bh0 = tl.program_id(1).to(tl.int64) * PACK  # int64 offsets: the prior passes 2³¹ elements at 128K
    b = bh0 // num_q_heads
    h0 = bh0 % num_q_heads
    h_kv = h0 // group_kv
    h_act = h0 // group_act
    offs_r = tl.arange(0, PACK * BLOCK_M)
    rows = tile * BLOCK_M + offs_r % BLOCK_M
    heads = h0 + offs_r // BLOCK_M
    row_ok = rows < q_len
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tl.load(
        Q + b * stride_qb + heads[:, None] * stride_qh + rows[:, None] * stride_qt + offs_d[None, :] * stride_qd,
        mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :],
        other=0.0,
    )
    list_row = (b * (num_q_heads // group_act) + h_act) * num_tiles + tile
    count = tl.load(COUNT + list_row)
    n_lead = _first_masked_entry(LIST, list_row, count, stride_lh, stride_lt, tile, kv_len, causal_offset, BLOCK_M,
                                 BLOCK_SIZE, CAUSAL)  # fmt: skip
    if FROM_ROWS:
        prior_base = PRIOR + list_row.to(tl.int64) * stride_pb - tile * BLOCK_M * stride_pt
    else:
        prior_base = PRIOR + b * stride_pb + (h0 // group_sel) * stride_ph
    active_base = ACTIVE + b * stride_ab + h_act * stride_ah
    bh_kv = (b * (num_q_heads // group_kv) + h_kv).to(tl.int32)
    if USE_DESC:  # K / V as [B·H_kv, kv_len, D] descriptors: TMA loads (the launch decides)
        k_base = K_DESC
        v_base = V_DESC
    else:
        k_base = K + b * stride_kb + h_kv * stride_kh
        v_base = V + b * stride_vb + h_kv * stride_vh
    m_i = tl.full([PACK * BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([PACK * BLOCK_M], tl.float32)
    acc = tl.zeros([PACK * BLOCK_M, BLOCK_DV], tl.float32)
    acc, m_i, l_i = _fwd_blocks(acc, m_i, l_i, q, LIST, list_row, 0, n_lead, rows, row_ok, k_base, v_base,
                                prior_base, active_base, kv_len, causal_offset, qk_scale, stride_lh, stride_lt,
                                stride_kn, stride_kd, stride_vn, stride_vd, stride_pc, stride_pt, stride_ac,
                                stride_at, bh_kv, BLOCK_SIZE, HEAD_DIM, BLOCK_D, VALUE_DIM, BLOCK_DV, False, CAUSAL,
                                HAS_PRIOR, IEEE, FOLD_MAX, FROM_ROWS, USE_DESC)  # fmt: skip
    acc, m_i, l_i = _fwd_blocks(acc, m_i, l_i, q, LIST, list_row, n_lead, count, rows, row_ok, k_base, v_base,
                                prior_base, active_base, kv_len, causal_offset, qk_scale, stride_lh, stride_lt,
                                stride_kn, stride_kd, stride_vn, stride_vd, stride_pc, stride_pt, stride_ac,
                                stride_at, bh_kv, BLOCK_SIZE, HEAD_DIM, BLOCK_D, VALUE_DIM, BLOCK_DV, True, CAUSAL,
                                HAS_PRIOR, IEEE, FOLD_MAX, FROM_ROWS, USE_DESC)  # fmt: skip
    has_key = l_i > 0
    out = acc / tl.where(has_key, l_i, 1.0)[:, None]
    out_hi = out.to(OUT.dtype.element_ty)
    out_offs = b * stride_ob + heads[:, None] * stride_oh + rows[:, None] * stride_ot + offs_dv[None, :] * stride_od
    out_mask = row_ok[:, None] & (offs_dv < VALUE_DIM)[None, :]
    tl.store(OUT + out_offs, out_hi, mask=out_mask)
    if STORE_RESIDUAL:  # what rounding to the input dtype dropped: the backward's Δ uses out + residual
        tl.store(OUT_RES + out_offs, (out - out_hi.to(tl.float32)).to(OUT.dtype.element_ty), mask=out_mask)
    # natural-log LSE (the backward's convention) from the log2-unit running max
    lse = tl.where(has_key, (m_i + tl.log2(tl.where(has_key, l_i, 1.0))) * LN2, float("-inf"))
    tl.store(LSE + (bh0 + offs_r // BLOCK_M) * q_len + rows, lse, mask=row_ok)


def sparse_attention_launch(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prior: torch.Tensor,
    active: torch.Tensor,
    block_list: torch.Tensor,
    count: torch.Tensor,
    causal: bool,
    scale: float,
    block_size: int,
    has_prior: bool,
    block_m: int,
    num_warps: int | None = None,
    num_stages: int | None = None,
    pack: int = 1,
    store_residual: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``block_list [B, H_act, n_tiles, nb]`` / ``count [B, H_act, n_tiles]``: each ``block_m``-row
    query tile's kept blocks (see :func:`ops.tile_block_lists`). ``pack`` query heads share a
    program (they must share the KV head, the prior and the flags). ``store_residual=False``: no
    rounding residual (an empty ``out_res``; inference). Launches directly (eager, or the CPU
    interpreter in tests)."""
    _check_pack(pack, query.shape[1], key.shape[1], prior.shape[1], active.shape[1])
    active_i8 = active.view(torch.int8) if active.dtype == torch.bool else active
    return _launch(
        query, key, value, prior, prior.stride(), active_i8, active_i8.stride(), None, block_list, count, causal,
        scale, block_size, has_prior, block_m, num_warps, num_stages, pack, store_residual,
    )  # fmt: skip


def sparse_attention_rows_launch(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    block_list: torch.Tensor,
    count: torch.Tensor,
    bias: torch.Tensor,
    causal: bool,
    scale: float,
    block_size: int,
    block_m: int,
    num_warps: int | None = None,
    num_stages: int | None = None,
    pack: int = 1,
    use_descriptors: bool | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)`` of the same attention on lists whose entries carry their bias rows: ``bias [B,
    H_sel, n_tiles, nb, block_m]`` (log2 units, ``−inf`` where a row does not keep the block), as
    :func:`list_kernels.tile_lists_and_bias_from_rows_launch` builds them from p̄ rows. No residual
    (inference). ``use_descriptors``: K and V through TMA descriptors where their layout allows
    (:func:`_kv_descriptors`); by default as :func:`default_descriptors` says. ``out``: written in
    place when given (any strides: a query chunk's rows of a whole call's output)."""
    B, H_sel, n_tiles, nb, rows = bias.shape
    if rows != block_m or not bias.is_contiguous():
        raise ValueError(f"bias {tuple(bias.shape)} must be contiguous with block_m={block_m} rows per slot")
    _check_pack(pack, query.shape[1], key.shape[1], H_sel, H_sel)
    # the bias rows stand in for the prior (strides: a list row, -, a slot, a row; has_prior is not
    # read with FROM_ROWS) and for the flags (zero strides, never read)
    out, _, lse = _launch(
        query, key, value, bias, (nb * block_m, 0, block_m, 1), None, (0, 0, 0, 0), H_sel, block_list, count,
        causal, scale, block_size, True, block_m, num_warps, num_stages, pack, False,
        default_descriptors(query, key, value, pack) if use_descriptors is None else use_descriptors, out,
    )  # fmt: skip
    return out, lse


def default_descriptors(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, pack: int) -> bool:
    """Whether the rows launch takes TMA descriptors by default: ``KV_DESCRIPTORS``, at least
    ``DESCRIPTOR_MIN_KV_LEN`` keys, and the launch they were measured and GPU-tested on (packed
    heads, 16-bit inputs, head and value dims of 128); elsewhere pointer loads (the same bits)."""
    return (
        KV_DESCRIPTORS
        and key.shape[2] >= DESCRIPTOR_MIN_KV_LEN
        and pack > 1
        and query.dtype in (torch.bfloat16, torch.float16)
        and key.shape[3] == value.shape[3] == 128
    )


def _kv_descriptors(key: torch.Tensor, value: torch.Tensor, block_size: int):
    """K and V as ``[B·H_kv, kv_len, D]`` tensor descriptors of ``[1, block_size, D]`` boxes (TMA
    loads; a box past ``kv_len`` comes zero-filled), or None where the layout does not allow them:
    a head dim that is not a power of two ≥ 16, a last dim that is not contiguous, batch and head
    dims that do not merge, strides and bases that are not 16-byte aligned, strides that are not
    positive (expanded dims), or an empty tensor."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    out = []
    for t in (key, value):
        B, H, S, D = t.shape
        if t.numel() == 0 or min(t.stride()[:3]) <= 0:
            return None
        aligned = all(st * t.element_size() % 16 == 0 for st in t.stride()[:3]) and t.data_ptr() % 16 == 0
        if D < 16 or D & (D - 1) or t.stride(3) != 1 or (B > 1 and t.stride(0) != H * t.stride(1)) or not aligned:
            return None
        out.append(TensorDescriptor(t, [B * H, S, D], [t.stride(1), t.stride(2), 1], [1, block_size, D]))
    return tuple(out)


def _check_pack(pack: int, q_heads: int, kv_heads: int, sel_heads: int, act_heads: int) -> None:
    if pack < 1 or pack & (pack - 1):
        raise ValueError(f"pack={pack} must be a power of two (the packed tile has pack·block_m rows)")
    if q_heads % pack or (q_heads // kv_heads) % pack or (q_heads // sel_heads) % pack or (q_heads // act_heads) % pack:
        raise ValueError(f"pack={pack} heads must share their KV head, prior and flags")


def _launch(query, key, value, prior, prior_strides, active, active_strides, rows_heads, block_list, count, causal,
            scale, block_size, has_prior, block_m, num_warps, num_stages, pack, store_residual,
            use_descriptors=False, out=None):  # fmt: skip
    """Both launches: ``rows_heads`` (H_sel) given means ``prior`` is the bias by list slot
    (``FROM_ROWS``) and ``active`` is None (its strides zeros; ``prior`` is passed in its place and
    never read). ``use_descriptors``: K and V through TMA descriptors where :func:`_kv_descriptors`
    allows them. ``out``: where the output goes (any strides), else a new tensor."""
    B, Hq, Sq, D = query.shape
    Hkv, Skv, Dv = key.shape[1], key.shape[2], value.shape[-1]
    n_tiles = block_list.shape[2]
    from_rows = rows_heads is not None
    if out is not None and store_residual:  # the residual would be allocated dense but indexed with out's strides
        raise ValueError("out= is for the inference launch (no residual)")
    if out is None:
        out = torch.empty(B, Hq, Sq, Dv, device=query.device, dtype=query.dtype)
    else:
        check_out(out, query, Dv)
    out_res = torch.empty_like(out) if store_residual else out.new_empty(0)
    lse = torch.empty(B, Hq, Sq, device=query.device, dtype=torch.float32)
    list_rows = block_list.view(-1, block_list.shape[-1])
    sel_heads = rows_heads if from_rows else prior.shape[1]
    act_heads = sel_heads if from_rows else active.shape[1]
    descriptors = _kv_descriptors(key, value, block_size) if use_descriptors else None
    k_desc, v_desc = descriptors or (key, value)  # without descriptors: never read
    _sparse_attention_fwd[(n_tiles, B * Hq // pack)](
        query,
        key,
        value,
        k_desc,
        v_desc,
        prior,
        prior if from_rows else active,
        list_rows,
        count,
        out,
        out_res,
        lse,
        Sq,
        Skv,
        Skv - Sq,
        Hq,
        Hq // Hkv,
        Hq // sel_heads,
        Hq // act_heads,
        n_tiles,
        *query.stride(),
        *key.stride(),
        *value.stride(),
        *prior_strides,
        *active_strides,
        list_rows.stride(0),
        list_rows.stride(1),
        *out.stride(),
        scale,
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
        FOLD_MAX=scale > 0,
        STORE_RESIDUAL=store_residual,
        FROM_ROWS=from_rows,
        USE_DESC=descriptors is not None,
        HEAVY_FIRST=causal and HEAVY_TILES_FIRST,
        num_warps=num_warps or (4 if block_m * pack <= 128 else 8),
        **({} if num_stages is None else {"num_stages": num_stages}),
    )
    return out, out_res, lse
