"""The fine stage's work lists in Triton (the CUDA path of :func:`.ops.tile_block_lists` and
:func:`.ops.block_tile_lists`, which stay the torch definitions).

From the block-major flags ``active [B, H, nb, Sq]`` (query index contiguous):

* ``_tile_lists``: one program per (``block_m``-row query tile, batch·head) ORs the tile's rows of
  each block's flags and writes the kept blocks in ascending order (an in-register prefix sum
  gives each its slot), then their count;
* ``_block_lists``: one program per (key block, batch·head) does the transpose, the query tiles
  that keep the block;
* ``_tile_lists_and_bias_from_rows``: ``_tile_lists`` from the row-major ``p̄`` (the inference
  path; a row keeps block ``c`` when ``p̄ > 0`` or ``c`` is its own block, causal), which also
  writes each listed block's bias rows (log-prior in log2 units, ``−inf`` where a row does not keep
  it) by list slot, so the fine kernel reads one contiguous row per step, as from the block-major
  prior, and no flags. Blocks past the tile's causal reach are neither read nor listed (the
  inference coarse launch leaves ``p̄`` unwritten past its score chunk's reach, and its chunks
  start at multiples of 128 rows, so ``block_m`` must divide 128).

Slots past a list's count stay zero, as in the torch definitions. The torch versions make ~10
passes over flag-sized tensors (an OR of 8-byte words, a pad, a transpose, a cumsum, a where, a
scatter, a sum); these read the flags once per list.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..coarse_selection.split_kernels import LOG2_OFFSET, _log2_scaled
from .triton_kernels import LOG2E

BLOCKS_PER_STEP = 128  # key blocks per step of _tile_lists
# (blocks × rows) per step of _tile_lists_and_bias_from_rows: its p̄, keep and bias tiles stay at
# 32 fp32 values a thread (4 warps) for any tile height (128 blocks × 32 rows, 32 × 128)
BIAS_STEP_ENTRIES = 4096
TILES_PER_STEP = 128  # query tiles per step of _block_lists


@triton.jit
def _kept_slots(n, keep):
    """``(slots, new count)``: the kept entries' list slots ``n, n + 1, ...`` in order (an in-register
    prefix sum; other entries' slots are not meaningful)."""
    kept = keep.to(tl.int32)
    return n + tl.cumsum(kept, axis=0) - 1, n + tl.sum(kept, axis=0)


@triton.jit
def _append_kept(OUT, n, index, keep):
    """Store ``index[keep]`` at ``OUT[n], OUT[n + 1], ...`` in order; return the new count."""
    slot, n = _kept_slots(n, keep)
    tl.store(OUT + slot, index, mask=keep)
    return n


@triton.jit
def _tile_lists(
    ACTIVE, LIST, COUNT, q_len, num_blocks, num_heads, num_tiles,
    stride_ab, stride_ah, stride_ac, stride_at,
    BLOCK_M: tl.constexpr, STEP: tl.constexpr,
):  # fmt: skip
    """``LIST [B·H, num_tiles, num_blocks]`` (zeroed), ``COUNT [B·H, num_tiles]``."""
    tile = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // num_heads
    h = bh % num_heads
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    base = ACTIVE + b * stride_ab + h * stride_ah
    row = bh * num_tiles + tile
    out = LIST + row * num_blocks
    n = tl.full([], 0, tl.int32)
    for c0 in range(0, num_blocks, STEP):
        c = c0 + tl.arange(0, STEP)
        flags = tl.load(base + c[:, None].to(tl.int64) * stride_ac + rows[None, :] * stride_at,
                        mask=(c < num_blocks)[:, None] & (rows < q_len)[None, :], other=0)  # fmt: skip
        n = _append_kept(out, n, c, tl.max((flags != 0).to(tl.int32), axis=1) > 0)
    tl.store(COUNT + row, n)


@triton.jit
def _block_lists(
    ACTIVE, LIST, COUNT, q_len, num_blocks, num_heads, num_tiles,
    stride_ab, stride_ah, stride_ac, stride_at,
    BLOCK_M: tl.constexpr, STEP: tl.constexpr,
):  # fmt: skip
    """``LIST [B·H, num_blocks, num_tiles]`` (zeroed), ``COUNT [B·H, num_blocks]``."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // num_heads
    h = bh % num_heads
    base = ACTIVE + b * stride_ab + h * stride_ah + c.to(tl.int64) * stride_ac
    row = bh * num_blocks + c
    out = LIST + row * num_tiles
    n = tl.full([], 0, tl.int32)
    for t0 in range(0, num_tiles, STEP):
        t = t0 + tl.arange(0, STEP)
        rows = t[:, None] * BLOCK_M + tl.arange(0, BLOCK_M)[None, :]
        flags = tl.load(base + rows * stride_at, mask=(t < num_tiles)[:, None] & (rows < q_len), other=0)
        n = _append_kept(out, n, t, tl.max((flags != 0).to(tl.int32), axis=1) > 0)
    tl.store(COUNT + row, n)


@triton.jit
def _tile_lists_and_bias_from_rows(
    PROBS, MEAN_LOG, LIST, COUNT, BIAS, q_len, num_blocks, num_heads, num_tiles, causal_offset,
    stride_pb, stride_ph, stride_pt, stride_pc, stride_mb, stride_mh, inv_sigma,
    BLOCK_M: tl.constexpr, STEP: tl.constexpr, BLOCK_SIZE: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_PRIOR: tl.constexpr, INTERPRETED: tl.constexpr,
):  # fmt: skip
    """``LIST [B·H, num_tiles, num_blocks]`` (zeroed), ``COUNT [B·H, num_tiles]`` and ``BIAS [B·H,
    num_tiles, num_blocks, BLOCK_M]`` from ``PROBS [B, H, q_len, num_blocks]`` and ``MEAN_LOG [B, H,
    q_len]``: slot ``j`` of a tile's bias holds its ``j``-th listed block's additive term per row in
    log2 units, ``(log₂ p̄ − mean · log₂e) · inv_sigma`` on ``p̄ > 0``, 0 on a forced block outside
    the support, ``−inf`` where the row does not keep the block (the fine kernel's ``_row_bias``)."""
    inv_sigma = tl.cast(inv_sigma, tl.float32)
    tile = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // num_heads
    h = bh % num_heads
    offs_r = tl.arange(0, BLOCK_M)
    rows = tile * BLOCK_M + offs_r
    row_ok = rows < q_len
    base = PROBS + b * stride_pb + h * stride_ph
    row = bh * num_tiles + tile
    out = LIST + row * num_blocks
    bias_out = BIAS + row * num_blocks * BLOCK_M
    shift = tl.zeros([BLOCK_M], tl.float32)
    if HAS_PRIOR:
        shift = tl.load(MEAN_LOG + b * stride_mb + h * stride_mh + rows, mask=row_ok, other=0.0) * LOG2E
    reach = num_blocks
    own = (rows + causal_offset) // BLOCK_SIZE
    if CAUSAL:  # the tile's last row has the largest own block; no row keeps a block past it
        last = tl.minimum(tile * BLOCK_M + BLOCK_M, q_len) - 1
        reach = tl.minimum((last + causal_offset) // BLOCK_SIZE + 1, num_blocks)
    n = tl.full([], 0, tl.int32)
    for c0 in range(0, reach, STEP):
        c = c0 + tl.arange(0, STEP)
        p = tl.load(base + c[:, None] * stride_pc + rows[None, :].to(tl.int64) * stride_pt,
                    mask=(c < reach)[:, None] & row_ok[None, :], other=0.0)  # fmt: skip
        selected = p > 0
        keep = selected
        if CAUSAL:
            keep = keep | ((c[:, None] == own[None, :]) & row_ok[None, :])
        listed = tl.max(keep.to(tl.int32), axis=1) > 0
        slot, n_next = _kept_slots(n, listed)
        tl.store(out + slot, c, mask=listed)
        bias = tl.zeros([STEP, BLOCK_M], tl.float32)
        if HAS_PRIOR:
            # log₂ p̄ in one MUFU op (_log2_scaled: Triton's tl.log2 is a ~22-instruction polynomial)
            log_p = _log2_scaled(tl.where(selected, p, 1.0), INTERPRETED) - LOG2_OFFSET
            bias = tl.where(selected, (log_p - shift[None, :]) * inv_sigma, 0.0)
        bias = tl.where(keep, bias, float("-inf"))
        tl.store(bias_out + slot[:, None].to(tl.int64) * BLOCK_M + offs_r[None, :], bias, mask=listed[:, None])
        n = n_next
    tl.store(COUNT + row, n)


def _launch(kernel, active: torch.Tensor, block_m: int, by_tile: bool) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, nb, Sq = active.shape
    n_tiles = triton.cdiv(Sq, block_m)
    outer, inner = (n_tiles, nb) if by_tile else (nb, n_tiles)
    lists = torch.zeros(B, H, outer, inner, device=active.device, dtype=torch.int32)
    count = torch.zeros(B, H, outer, device=active.device, dtype=torch.int32)
    if lists.numel() == 0:  # no blocks or no rows: nothing kept
        return lists, count
    flags = active.view(torch.int8) if active.dtype == torch.bool else active
    step = BLOCKS_PER_STEP if by_tile else TILES_PER_STEP
    kernel[(outer, B * H)](
        flags, lists, count, Sq, nb, H, n_tiles, *flags.stride(),
        BLOCK_M=block_m, STEP=min(step, triton.next_power_of_2(inner)), num_warps=4,
    )  # fmt: skip
    return lists, count


def tile_block_lists_launch(active: torch.Tensor, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`.ops.tile_block_lists`: each query tile's kept blocks ``[B, H, n_tiles, nb]`` and
    their count ``[B, H, n_tiles]`` (int32). ``block_m``: a power of two."""
    return _launch(_tile_lists, active, block_m, by_tile=True)


def block_tile_lists_launch(active: torch.Tensor, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`.ops.block_tile_lists`: each key block's query tiles ``[B, H, nb, n_tiles]`` and
    their count ``[B, H, nb]`` (int32)."""
    return _launch(_block_lists, active, block_m, by_tile=False)


def tile_lists_and_bias_from_rows_launch(
    probs: torch.Tensor,
    mean_log: torch.Tensor,
    inv_sigma: float,
    causal: bool,
    kv_len: int,
    block_size: int,
    block_m: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(list, count, bias)``: :func:`tile_block_lists_launch` of the flags ``p̄ > 0 or forced``
    (causal: a row's own block), read from ``probs [B, H, Sq, nb]`` (row-major) without forming
    them, and each listed block's bias rows ``[B, H, n_tiles, nb, block_m]`` (float32, log2 units;
    slots past a tile's count are not written). No prior when ``inv_sigma == 0``."""
    B, H, Sq, nb = probs.shape
    n_tiles = triton.cdiv(Sq, block_m)
    lists = torch.zeros(B, H, n_tiles, nb, device=probs.device, dtype=torch.int32)
    count = torch.zeros(B, H, n_tiles, device=probs.device, dtype=torch.int32)
    bias = torch.empty(B, H, n_tiles, nb, block_m, device=probs.device, dtype=torch.float32)
    if lists.numel() == 0:
        return lists, count, bias
    mean_log = mean_log.float().contiguous()
    _tile_lists_and_bias_from_rows[(n_tiles, B * H)](
        probs, mean_log, lists, count, bias, Sq, nb, H, n_tiles, kv_len - Sq, *probs.stride(),
        *mean_log.stride()[:2], inv_sigma,
        BLOCK_M=block_m, STEP=min(BLOCKS_PER_STEP, BIAS_STEP_ENTRIES // block_m, triton.next_power_of_2(nb)),
        BLOCK_SIZE=block_size, CAUSAL=causal, HAS_PRIOR=inv_sigma != 0, INTERPRETED=probs.device.type != "cuda",
        num_warps=4,
    )  # fmt: skip
    return lists, count, bias
