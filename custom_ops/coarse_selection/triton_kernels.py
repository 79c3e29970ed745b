"""Triton kernel of the fused coarse stage: scores, entmax, group mean, log-prior and active flags
in one pass, so nothing ``[B, Hq, Sq, nb]``-sized is ever written.

Persistent programs; each work item is (batch, KV head, ``ROWS`` query rows). Why this shape:

* The scores ``z = q·k̄ᵀ`` of the G query heads of a KV group share ``k̄``: stacking their rows
  gives one ``[G·ROWS, D] × [D, CHUNK]`` ``tl.dot`` per chunk of blocks (``G·ROWS ≥ 16`` rows, so
  ``k̄`` is re-read from L2 once per ``ROWS`` queries, not once per head).
* Entmax needs whole rows, and Triton cannot assemble a register tile from chunks: each chunk of
  scores is parked in the program's own slice of a small scratch buffer (``[programs, G·ROWS,
  NB]`` fp32: a few MB, L2-resident), then each head's ``[ROWS, NB]`` rows are read back whole,
  solved in registers (the entmax kernels' shared solver) and summed into ``p̄``.
* The prior and the flags only need ``p̄``'s row, already in registers: they are written
  transposed (block-major, query index contiguous), the layout the fine-stage kernels read.

Scores: an IEEE fp32 ``tl.dot`` for fp32 queries; for 16-bit queries ``k̄`` (fp32) is split into
a high and a low 16-bit part and the two products summed, which keeps ~16 mantissa bits of ``k̄``
(a single TF32 dot moved entmax probabilities by ~5% relative, measured on the H200).
Rows are held as ``[NB / SUB, ROWS, SUB]`` tiles (``SUB`` ≤ 128 blocks, one warp's width) so that
Triton can give each warp whole rows. Launch: 16 warps (the configuration whose results the
H200 GPU tests checked), 2 persistent programs per SM. The scratch buffer is
``programs × G·ROWS × NB`` fp32: 35 MB at Hq/Hkv = 4, nb = 512 on 132 SMs.

**Performance (H200, 32K, bf16, Hq=32, Hkv=8, nb=512; scripts/profile_stages.py --coarse-sweep):
8.9 ms — far from the ≤ 1.4 ms the design allows.** Phase cut-offs (16 warps): scores +
scratch 3.8 ms, + entmax 7.7 ms (3.7 ms of it the solver iterations), + prior/flags 8.9 ms.
16 warps take the whole register file (1, 2 or 4 programs/SM all 8.9 ms); 8 warps 8.2 ms,
4 warps 7.1 ms (timed only: switch after a GPU correctness run). A first 2-D version (4 warps,
``[ROWS, NB]`` tiles) took 10.3 ms. The kernel is latency-bound (serial chunks, barriers, few
resident warps); docs/benchmarks.md lists the next steps.

Offsets are int32: :func:`fits_int32` bounds the sizes this kernel takes (dash_select falls back
to the unfused path beyond).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..entmax.torch_impl import solver_schedule
from ..entmax.triton_kernels import _row_sum, entmax_rows_split

ROWS = 16  # query rows per work item and head
CHUNK = 64  # blocks per score tl.dot
MAX_BLOCKS = 2048  # longest row of blocks solved in registers (NB = next power of two ≥ nb_pad)


@triton.jit
def _coarse_selection_fwd(
    Q, KBAR, SCRATCH, PROBS, PRIOR, ACTIVE,
    q_len, num_blocks, nb_pad, sq_pad, causal_offset, num_kv_heads, n_row_tiles, n_work,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kc, stride_kd,
    stride_pb, stride_ph, stride_pt, stride_pc,
    stride_rb, stride_rh, stride_rc, stride_rt,
    stride_ab, stride_ah, stride_ac, stride_at,
    z_scale, inv_sigma, am1, d, one_minus_alpha,
    GROUP: tl.constexpr, GROUP_P2: tl.constexpr, ROWS: tl.constexpr, NB: tl.constexpr, SUB: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
    IEEE: tl.constexpr, MODE: tl.constexpr, N_BISECT: tl.constexpr, N_NEWTON: tl.constexpr,
    STOP_AFTER: tl.constexpr,
):  # fmt: skip
    # Inductor may pass Python floats as fp64 scalars: keep everything fp32.
    z_scale, inv_sigma = tl.cast(z_scale, tl.float32), tl.cast(inv_sigma, tl.float32)
    am1, d, one_minus_alpha = tl.cast(am1, tl.float32), tl.cast(d, tl.float32), tl.cast(one_minus_alpha, tl.float32)
    R: tl.constexpr = GROUP_P2 * ROWS
    pid = tl.program_id(0)
    offs_r = tl.arange(0, R)
    offs_i = tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    offs_c = tl.arange(0, CHUNK)
    # block index of the [NB / SUB, ROWS, SUB] row tiles: piece k, lane j → block k·SUB + j
    cols = tl.arange(0, NB // SUB)[:, None, None] * SUB + tl.arange(0, SUB)[None, None, :]
    head_in_group = offs_r // ROWS
    scratch = SCRATCH + pid.to(tl.int64) * R * NB
    for work in range(pid, n_work, tl.num_programs(0)):
        tile = work % n_row_tiles
        bh = work // n_row_tiles
        b = bh // num_kv_heads
        h_kv = bh % num_kv_heads
        t0 = tile * ROWS

        t = (t0 + offs_i)[None, :, None]  # [1, ROWS, 1]
        t_ok = t < q_len
        own = (t + causal_offset) // BLOCK_SIZE
        if CAUSAL:
            eligible = cols < own
        else:
            eligible = (cols < num_blocks) & (t >= 0)
        p_bar = tl.zeros([NB // SUB, ROWS, SUB], tl.float32)
        tl.debug_barrier()  # the previous work item's reads of scratch are done
        if t0 < q_len:  # tiles of padding rows only write zeros
            # 1. scores of the group's G·ROWS rows against every block summary, parked in scratch
            t_r = t0 + offs_r % ROWS
            r_ok = (t_r < q_len) & (head_in_group < GROUP)
            q = tl.load(
                Q + b * stride_qb + (h_kv * GROUP + head_in_group)[:, None] * stride_qh + t_r[:, None] * stride_qt
                + offs_d[None, :] * stride_qd,
                mask=r_ok[:, None] & (offs_d < HEAD_DIM)[None, :],
                other=0.0,
            )  # fmt: skip
            kbar_base = KBAR + b * stride_kb + h_kv * stride_kh
            for c0 in range(0, nb_pad, CHUNK):
                c = c0 + offs_c
                kb = tl.load(
                    kbar_base + c[:, None] * stride_kc + offs_d[None, :] * stride_kd,
                    mask=(c < num_blocks)[:, None] & (offs_d < HEAD_DIM)[None, :],
                    other=0.0,
                )
                if IEEE:
                    z = tl.dot(q, tl.trans(kb), input_precision="ieee")
                else:
                    # k̄ = hi + lo in the query's 16-bit type: two exact-product dots give the
                    # scores to ~16 mantissa bits (TF32's 10 moved entmax probabilities by ~5%).
                    kb_hi = kb.to(q.dtype)
                    kb_lo = (kb - kb_hi.to(tl.float32)).to(q.dtype)
                    z = tl.dot(q, tl.trans(kb_hi)) + tl.dot(q, tl.trans(kb_lo))
                tl.store(scratch + offs_r[:, None] * NB + c[None, :], z * z_scale, mask=(c < NB)[None, :])
            tl.debug_barrier()  # every thread's chunk is visible before rows are read back whole

            # 2. entmax per head over the eligible blocks, averaged over the group. Rows are held
            #    as [NB / SUB, ROWS, SUB] tiles so that each warp owns whole rows (see entmax_rows_split).
            for g in range(GROUP if STOP_AFTER >= 2 else 0):
                z = tl.load(scratch + (g * ROWS + offs_i)[None, :, None] * NB + cols)
                z = tl.where(eligible & (cols < num_blocks), z, -float("inf"))
                p_bar += entmax_rows_split(z, am1, d, one_minus_alpha, MODE, N_BISECT, N_NEWTON)
        p_bar = tl.where(t_ok, p_bar / GROUP, 0.0)
        tl.store(
            PROBS + b * stride_pb + h_kv * stride_ph + t * stride_pt + cols * stride_pc,
            p_bar,
            mask=t_ok & (cols < num_blocks),
        )

        if STOP_AFTER >= 3:  # (lower values: profiling only, time the phases above)
            # 3. log-prior (centred on the support) and kept + forced flags, block-major
            selected = p_bar > 0
            log_p = tl.log(tl.where(selected, p_bar, 1.0))
            n_sel = tl.maximum(_row_sum(selected.to(tl.float32)), 1.0)
            mean = _row_sum(tl.where(selected, log_p, 0.0)) / n_sel
            prior = tl.where(selected, (log_p - mean[None, :, None]) * inv_sigma, 0.0)
            active = selected
            if CAUSAL:
                active = active | ((cols == own) & t_ok)
            out_mask = (t < sq_pad) & (cols < nb_pad)
            tl.store(
                PRIOR + b * stride_rb + h_kv * stride_rh + cols * stride_rc + t * stride_rt,
                prior,
                mask=out_mask,
            )
            tl.store(
                ACTIVE + b * stride_ab + h_kv * stride_ah + cols * stride_ac + t * stride_at,
                active.to(tl.int8),
                mask=out_mask,
            )


def fits_int32(batch: int, q_heads: int, kv_heads: int, q_len: int, head_dim: int, sq_pad: int, nb_pad: int) -> bool:
    """Every element offset of the kernel's inputs and outputs stays below 2³¹."""
    return max(batch * q_heads * q_len * head_dim, batch * kv_heads * sq_pad * nb_pad) < 2**31


def num_blocks_padded(nb_pad: int) -> int:
    """``NB``: the register row length, a power of two ≥ ``nb_pad`` and ≥ ``CHUNK``."""
    return max(CHUNK, triton.next_power_of_2(nb_pad))


def coarse_selection_launch(
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
    programs: int | None = None,
    num_warps: int = 16,
    solver: tuple[int, int] | None = None,
    stop_after: int = 3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(probs, prior, active)`` as :func:`..torch_impl.coarse_selection_torch`. Launches directly
    (CUDA, or the Triton interpreter on CPU tensors in tests); ``programs`` overrides the number
    of persistent programs (default: 2 per SM on CUDA, 3 on CPU). For profiling only:
    ``solver = (n_bisect, n_newton)`` overrides the entmax schedule and ``stop_after`` = 1 / 2
    stops after the scores / the entmax phase (outputs are then not valid)."""
    B, Hq, Sq, D = query.shape
    Hkv, nb = k_bar.shape[1], k_bar.shape[2]
    G = Hq // Hkv
    NB = num_blocks_padded(nb_pad)
    if NB > MAX_BLOCKS:
        raise ValueError(f"coarse_selection: {nb_pad} blocks exceed the register row limit {MAX_BLOCKS}")
    dev = query.device
    probs = torch.empty(B, Hkv, Sq, nb, device=dev, dtype=torch.float32)
    prior = torch.empty(B, Hkv, nb_pad, sq_pad, device=dev, dtype=torch.float32)
    active = torch.empty(B, Hkv, nb_pad, sq_pad, device=dev, dtype=torch.bool)
    n_row_tiles = sq_pad // ROWS
    n_work = B * Hkv * n_row_tiles
    if programs is None:
        programs = 2 * torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 3
    programs = max(1, min(programs, n_work))
    group_p2 = triton.next_power_of_2(G)
    scratch = torch.empty(programs, group_p2 * ROWS, NB, device=dev, dtype=torch.float32)
    mode, n_bisect, n_newton = solver_schedule(alpha, nb, torch.float32)
    if solver is not None:
        n_bisect, n_newton = solver
    kb = k_bar.float()
    active_i8 = active.view(torch.int8)
    _coarse_selection_fwd[(programs,)](
        query, kb, scratch, probs, prior, active_i8,
        Sq, nb, nb_pad, sq_pad, kv_len - Sq, Hkv, n_row_tiles, n_work,
        *query.stride(), *kb.stride(), *probs.stride(), *prior.stride(), *active_i8.stride(),
        selection_scale / D**0.5, inv_sigma, alpha - 1.0, 1.0 / (alpha - 1.0), 1.0 - alpha,
        GROUP=G, GROUP_P2=group_p2, ROWS=ROWS, NB=NB, SUB=min(NB, 128), CHUNK=CHUNK, BLOCK_SIZE=block_size, HEAD_DIM=D,
        BLOCK_D=max(16, triton.next_power_of_2(D)), CAUSAL=causal, IEEE=query.dtype == torch.float32,
        MODE=mode, N_BISECT=n_bisect, N_NEWTON=n_newton, STOP_AFTER=stop_after, num_warps=num_warps,
    )  # fmt: skip
    return probs, prior, active
