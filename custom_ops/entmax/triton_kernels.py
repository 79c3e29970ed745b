"""Triton kernels for α-entmax over the last dimension, and their launchers.

Same solver as ``torch_impl`` (bracket → bisection → monotone Newton on ``‖[s − τ]_+‖_d − 1``
→ at α = 1.5 the exact step on the support
→ renormalise), float32 inside whatever the storage dtype. Two variants per direction:

* **register** (``n ≤ MAX_REGISTER_BLOCK``): a program holds ``ROWS`` whole rows in registers as a
  ``[ROWS, BLOCK]`` tile (``BLOCK`` = next power of two ≥ n) and reads / writes global memory
  once; every solver iteration is one reduction over the row.
* **chunked** (longer rows): one program per row loops over ``CHUNK``-wide slices; each solver
  iteration re-reads the row (from L2 for all but huge rows). Slower per element, but no size
  limit and no fallback to PyTorch.

The launchers take CUDA tensors (the kernel goes through ``torch.library.wrap_triton`` so that
Inductor sees it), or CPU tensors in a process that set ``TRITON_INTERPRET=1`` before importing
triton: the very same kernels then run in Triton's interpreter (the CPU test suite does this in
a subprocess).
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.jit import JITFunction

from .torch_impl import MODE_ENTMAX15, MODE_GENERIC, MODE_SPARSEMAX, solver_schedule

__all__ = ["LaunchConfig", "forward_config", "backward_config", "entmax_forward", "entmax_backward", "piece_width"]

MAX_REGISTER_BLOCK = 8192  # longest row (rounded up to a power of two) kept in registers


def piece_width(width: int, rows: int, warps: int) -> int:
    """``S`` of the ``[K, R, S]`` register tile that :func:`entmax_rows_split` solves, for ``R = rows``
    rows of ``width`` entries over ``warps`` warps. The row reductions sum a thread's pieces (``K``)
    first, so a program's warps must split ``S``, not ``K``: Triton spreads a tile's lanes and warps
    over ``S`` first, then ``R``, then ``K``, and warps on ``K`` turned each reduction into
    shared-memory round trips of whole ``[R, S]`` vectors (H200, run 63: 256-block rows over 2 warps
    1.55 ms against 0.12 over 1). Where warps outnumber rows, ``S`` spans 256 entries per spare
    warp: 16-bit stores (the VJP's ``dz`` parts) vectorise 8 entries a lane, and with 128 per warp
    their layout put the second warp on ``K`` again (run 64: VJP 1.47 against 0.19 ms)."""
    if warps <= rows:
        return min(width, 128)
    return min(width, 256 * (warps // rows))


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _row_sum(x):
    # the pieces first: they lie in one thread's registers, so the shuffles reduce one value per
    # row, not one per piece (the Newton loop at 512 blocks: 10 shuffles a step against 40)
    return tl.sum(tl.sum(x, axis=0), axis=1)


@triton.jit
def _row_max(x):
    return tl.max(tl.max(x, axis=0), axis=1)


@triton.jit
def _entmax_power(x, d, MODE: tl.constexpr):
    """``x^d`` of ``x ≥ 0`` (``d = 1/(α − 1)``, 0 at 0): ``x`` for sparsemax (``MODE`` 0), ``x²`` for
    α = 1.5 (1), ``exp2(d·log2 x)`` otherwise."""
    if MODE == 0:
        p = x
    elif MODE == 1:
        p = x * x
    else:
        p = tl.where(x > 0, tl.exp2(d * tl.log2(tl.where(x > 0, x, 1.0))), 0.0)
    return p


@triton.jit
def _power_and_slope(x, d, MODE: tl.constexpr):
    """``(x^d, x^(d−1))`` of ``x ≥ 0`` (both 0 at 0): a Newton step's mass and slope terms (the slope
    of ``x^d`` up to its factor ``d``), the first as :func:`_entmax_power` computes it."""
    if MODE == 0:
        p = x
        dp = (x > 0).to(tl.float32)
    elif MODE == 1:
        p = x * x
        dp = x
    else:
        xs = tl.where(x > 0, x, 1.0)
        p = tl.where(x > 0, tl.exp2(d * tl.log2(xs)), 0.0)
        dp = p / xs
    return p, dp


@triton.jit
def _newton_increment(mass, slope, one_minus_alpha, MODE: tl.constexpr):
    """The monotone Newton increment of τ on ``h(τ) = ‖[s − τ]_+‖_d − 1 = mass^(α−1) − 1`` from a
    row's ``mass = Σ x^d`` and ``slope = Σ x^(d−1)`` (0 for an empty row).

    α = 1.5 (``MODE`` 1) takes both the root and the division from ``rsqrt`` (one MUFU op each, no
    ``div.full`` range fix-ups): 117 → 104 instructions a Newton step at 512 blocks (sm_90 SASS),
    the 32K coarse launch 1.612 → 1.527 ms and 128K 22.23 → 21.59 (H200, run 85), p̄ within 1.8e-7.
    Safe there because ``slope = Σ x ≥ ‖x‖₂ = √mass``, and ``mass ≥ 1`` while τ ≤ τ* (every
    iterate from the left; an iterate past τ* by rounding has ``mass`` just under 1): the slope of
    a row with an entry is never subnormal (an empty row has ``slope = 0`` and takes no step).
    Other α keep the division: their ``Σ x^(d−1)`` can be subnormal (α near 1), where an ``rsqrt``
    flushed to zero would give ``inf``."""
    safe = tl.where(mass > 0, mass, 1.0)
    safe_slope = tl.where(slope > 0, slope, 1.0)
    if MODE == 0:
        step = mass * (1.0 - 1.0 / safe) / safe_slope
    elif MODE == 1:
        inv = tl.math.rsqrt(safe_slope)
        step = mass * (1.0 - tl.math.rsqrt(safe)) * inv * inv
    else:
        step = mass * (1.0 - tl.exp2(one_minus_alpha * tl.log2(safe))) / safe_slope
    return tl.where(slope > 0, step, 0.0)


@triton.jit
def _exact_increment(mass, slope, size):
    """α = 1.5: the root ``δ`` of ``Σ_A (x_i − δ)² = 1`` on a row's support ``A`` from ``mass = Σ x²``,
    ``slope = Σ x`` and ``size = |A|`` (0 for an empty row), as ``torch_impl.exact_step``: after the
    schedule's Newton steps it lands on the threshold within the float32 floor, where two more
    Newton steps were needed (two-level rows, docs/entmax.md)."""
    root = tl.sqrt(tl.maximum(slope * slope - size * (mass - 1.0), 0.0))
    return tl.where(slope > 0, (mass - 1.0) / tl.where(slope > 0, slope + root, 1.0), 0.0)


@triton.jit
def _rows_sum(x, y, HAS_TAIL: tl.constexpr):
    """Per-row sum over a ``[K, R, S]`` tile and, with ``HAS_TAIL``, a ``[K2, R, S]`` tail tile (the
    pieces first, so the two tiles share one reduction over ``S``)."""
    if HAS_TAIL:
        return tl.sum(tl.sum(x, axis=0) + tl.sum(y, axis=0), axis=1)
    return _row_sum(x)


@triton.jit
def _rows_sum_half(x, y, HAS_TAIL: tl.constexpr):
    """:func:`_rows_sum` of float16 tiles: the pieces summed in float16 (packed pairs), the rest in
    float32."""
    if HAS_TAIL:
        return tl.sum((tl.sum(x, axis=0) + tl.sum(y, axis=0)).to(tl.float32), axis=1)
    return tl.sum(tl.sum(x, axis=0).to(tl.float32), axis=1)


@triton.jit
def _rows_max(x, y, HAS_TAIL: tl.constexpr):
    """:func:`_rows_sum` with a max."""
    if HAS_TAIL:
        return tl.max(tl.maximum(tl.max(x, axis=0), tl.max(y, axis=0)), axis=1)
    return _row_max(x)


@triton.jit
def entmax_rows_split(
    z, am1, d, one_minus_alpha, MODE: tl.constexpr, N_BISECT: tl.constexpr, N_NEWTON: tl.constexpr
):  # fmt: skip
    """α-entmax of each row of the fp32 tile ``z [K, R, S]``, row ``r`` being ``z[:, r, :]`` (``-inf``
    = excluded; an all ``-inf`` row gives zeros): the solver every register-resident kernel shares
    (``am1 = α − 1``, ``d = 1/(α − 1)``, ``one_minus_alpha = 1 − α``). Splitting a row into ``K``
    pieces of ``S`` lets a caller keep a row inside one warp (Triton spreads warps over ``R`` when
    one warp covers ``S``), so the solver's row reductions (2 per Newton step, 1 per bisection step,
    and a few more) are warp shuffles, not barriers."""
    p, _ = entmax_rows_split_tail(z, z, am1, d, one_minus_alpha, MODE, N_BISECT, N_NEWTON, False, 0)
    return p


@triton.jit
def entmax_rows_split_tail(
    z, z_tail, am1, d, one_minus_alpha, MODE: tl.constexpr, N_BISECT: tl.constexpr, N_NEWTON: tl.constexpr,
    HAS_TAIL: tl.constexpr, N_HALF: tl.constexpr,
):  # fmt: skip
    """:func:`entmax_rows_split` of rows whose blocks are split over two tiles, ``z [K, R, S]`` and,
    with ``HAS_TAIL``, ``z_tail [K2, R, S]`` (the same ``R`` and ``S``): a row of ``K·S + K2·S``
    entries without rounding its length up to a power of two. Returns both tiles' ``p``
    (``z_tail`` is not read without ``HAS_TAIL``, and the second result is then the first).

    ``N_HALF`` (α = 1.5 only, ``N_HALF < N_NEWTON``): the first ``N_HALF`` Newton steps run on
    float16 copies of ``s`` and ``τ``, ``x = [s − τ]_+`` and its squares summed over a thread's
    pieces in float16 (``HADD2`` / ``HMNMX2`` / ``HFMA2`` on pairs: sm_90 SASS at 512 blocks, a step
    119 → 78 instructions), the rest of each sum and τ in float32. Such steps bring τ within
    float16's spacing of ``s`` (up to ~1e-3 near ``s = −1``) of the root; at least one float32 step
    follows, then the exact step on the support it finds, which reach the float32 floor (a
    float32 emulation over docs/entmax.md's schedule families, rows with entries within 1e-4 to
    1e-2 of the threshold, and crowds of thousands of entries within 5e-4 of it, which float16
    steps alone leave at ~2e-6). The inference launch uses it; entries with ``s < −65504`` become
    ``−inf`` in float16, which no threshold ``τ ≥ −1`` keeps."""
    top = _rows_max(z, z_tail, HAS_TAIL)
    top = tl.where(top > -float("inf"), top, 0.0)  # all -inf row: s stays -inf, p = 0
    if MODE == 2:  # other α: z − top first, exact at the top entry whatever the scale of z
        s = (z - top[None, :, None]) * am1
        s_t = s
        if HAS_TAIL:
            s_t = (z_tail - top[None, :, None]) * am1
    else:
        # α = 1.5 and 2: α − 1 is a power of two, which commutes with rounding, so one FMA an
        # entry, z·(α − 1) − top·(α − 1) rounded once, gives the same bits as (z − top)·(α − 1)
        top_scaled = (top * am1)[None, :, None]
        s = tl.fma(z, am1, -top_scaled)
        s_t = s
        if HAS_TAIL:
            s_t = tl.fma(z_tail, am1, -top_scaled)
    lo = tl.full([z.shape[1]], -1.0, tl.float32)
    if N_BISECT > 0:  # the bracket's upper end -n^(1-α) costs a row reduction: only when bisecting
        finite = _rows_sum((s > -float("inf")).to(tl.float32), (s_t > -float("inf")).to(tl.float32), HAS_TAIL)
        hi = -tl.exp2(one_minus_alpha * tl.log2(tl.maximum(finite, 1.0)))
        for _ in range(N_BISECT):
            mid = 0.5 * (lo + hi)
            p = _entmax_power(tl.maximum(s - mid[None, :, None], 0.0), d, MODE)
            p_t = p
            if HAS_TAIL:
                p_t = _entmax_power(tl.maximum(s_t - mid[None, :, None], 0.0), d, MODE)
            too_much = _rows_sum(p, p_t, HAS_TAIL) >= 1.0
            lo = tl.where(too_much, mid, lo)
            hi = tl.where(too_much, hi, mid)

    tau = lo
    tl.static_assert(N_HALF == 0 or MODE == 1, "float16 Newton steps are for α = 1.5 only")
    tl.static_assert(N_HALF == 0 or N_HALF < N_NEWTON, "the last Newton step before the exact step is float32")
    if N_HALF > 0:  # the first N_HALF steps on float16 pairs (see the docstring)
        s16 = s.to(tl.float16)
        s16_t = s16
        if HAS_TAIL:
            s16_t = s_t.to(tl.float16)
        zero16 = tl.zeros([1, 1, 1], tl.float16)  # a float 0.0 would promote the max to float32
        for _ in range(N_HALF):
            tau16 = tau.to(tl.float16)[None, :, None]
            x = tl.maximum(s16 - tau16, zero16)
            x_t = x
            if HAS_TAIL:
                x_t = tl.maximum(s16_t - tau16, zero16)
            mass = _rows_sum_half(x * x, x_t * x_t, HAS_TAIL)
            tau += _newton_increment(mass, _rows_sum_half(x, x_t, HAS_TAIL), one_minus_alpha, MODE)
    # Every row takes all N_NEWTON steps, the worst rows' count (docs/entmax.md). A data-dependent
    # stop (a program leaving its Newton loop once all its rows were done) hung on the H200 under
    # Triton 3.6 at one specialisation, for a cause not found, and saved 0.17 ms at 32K: removed
    # (docs/entmax.md, "Early exit"). No loop here depends on the data.
    for _ in range(N_NEWTON - N_HALF):
        p, dp = _power_and_slope(tl.maximum(s - tau[None, :, None], 0.0), d, MODE)
        p_t, dp_t = p, dp
        if HAS_TAIL:
            p_t, dp_t = _power_and_slope(tl.maximum(s_t - tau[None, :, None], 0.0), d, MODE)
        mass = _rows_sum(p, p_t, HAS_TAIL)
        tau += _newton_increment(mass, _rows_sum(dp, dp_t, HAS_TAIL), one_minus_alpha, MODE)
    if MODE == 1:  # α = 1.5: the exact step on the current support (torch_impl.exact_step)
        x = tl.maximum(s - tau[None, :, None], 0.0)
        x_t = x
        if HAS_TAIL:
            x_t = tl.maximum(s_t - tau[None, :, None], 0.0)
        size = _rows_sum((x > 0).to(tl.float32), (x_t > 0).to(tl.float32), HAS_TAIL)
        tau += _exact_increment(_rows_sum(x * x, x_t * x_t, HAS_TAIL), _rows_sum(x, x_t, HAS_TAIL), size)

    p = _entmax_power(tl.maximum(s - tau[None, :, None], 0.0), d, MODE)
    p_t = p
    if HAS_TAIL:
        p_t = _entmax_power(tl.maximum(s_t - tau[None, :, None], 0.0), d, MODE)
    total = _rows_sum(p, p_t, HAS_TAIL)
    scale = tl.where(total > 0, 1.0 / tl.where(total > 0, total, 1.0), 0.0)[None, :, None]
    p = p * scale
    if HAS_TAIL:
        p_t = p_t * scale
    else:
        p_t = p
    return p, p_t


@triton.jit
def entmax_rows(z, am1, d, one_minus_alpha, MODE: tl.constexpr, N_BISECT: tl.constexpr, N_NEWTON: tl.constexpr):
    """:func:`entmax_rows_split` of a plain ``[R, N]`` tile."""
    p = entmax_rows_split(tl.expand_dims(z, 0), am1, d, one_minus_alpha, MODE, N_BISECT, N_NEWTON)
    return tl.sum(p, axis=0)


@triton.jit
def _entmax_fwd_kernel(
    X,
    Y,
    n_rows,
    n_cols,
    am1,
    d,
    one_minus_alpha,
    MODE: tl.constexpr,
    N_BISECT: tl.constexpr,
    N_NEWTON: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Inductor may hand Python floats to a wrap_triton kernel as fp64 scalars: keep the solver fp32.
    am1, d, one_minus_alpha = tl.cast(am1, tl.float32), tl.cast(d, tl.float32), tl.cast(one_minus_alpha, tl.float32)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    z = tl.load(X + offs, mask=mask, other=-float("inf")).to(tl.float32)

    p = entmax_rows(z, am1, d, one_minus_alpha, MODE, N_BISECT, N_NEWTON)
    tl.store(Y + offs, p.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _entmax_fwd_chunked_kernel(
    X,
    Y,
    n_cols,
    am1,
    d,
    one_minus_alpha,
    MODE: tl.constexpr,
    N_BISECT: tl.constexpr,
    N_NEWTON: tl.constexpr,
    CHUNK: tl.constexpr,
):
    # Inductor may hand Python floats to a wrap_triton kernel as fp64 scalars: keep the solver fp32.
    am1, d, one_minus_alpha = tl.cast(am1, tl.float32), tl.cast(d, tl.float32), tl.cast(one_minus_alpha, tl.float32)
    base = tl.program_id(0).to(tl.int64) * n_cols
    cols = tl.arange(0, CHUNK)

    # pass 1: row max and number of finite entries
    top_acc = tl.full([CHUNK], -float("inf"), tl.float32)
    cnt_acc = tl.zeros([CHUNK], tl.float32)
    for start in range(0, n_cols, CHUNK):
        m = start + cols < n_cols
        z = tl.load(X + base + start + cols, mask=m, other=-float("inf")).to(tl.float32)
        top_acc = tl.maximum(top_acc, z)
        cnt_acc += (z > -float("inf")).to(tl.float32)
    top = tl.max(top_acc, axis=0)
    top = tl.where(top > -float("inf"), top, 0.0)
    n_finite = tl.maximum(tl.sum(cnt_acc, axis=0), 1.0)
    hi = -tl.exp2(one_minus_alpha * tl.log2(n_finite))
    lo = hi * 0.0 - 1.0  # a tensor, not a Python float: it is loop-carried

    for _ in range(N_BISECT):
        mid = 0.5 * (lo + hi)
        acc = tl.zeros([CHUNK], tl.float32)
        for start in range(0, n_cols, CHUNK):
            m = start + cols < n_cols
            z = tl.load(X + base + start + cols, mask=m, other=-float("inf")).to(tl.float32)
            x = tl.maximum((z - top) * am1 - mid, 0.0)
            acc += _entmax_power(x, d, MODE)
        too_much = tl.sum(acc, axis=0) >= 1.0
        lo = tl.where(too_much, mid, lo)
        hi = tl.where(too_much, hi, mid)

    tau = lo
    for _ in range(N_NEWTON):
        acc = tl.zeros([CHUNK], tl.float32)
        dacc = tl.zeros([CHUNK], tl.float32)
        for start in range(0, n_cols, CHUNK):
            m = start + cols < n_cols
            z = tl.load(X + base + start + cols, mask=m, other=-float("inf")).to(tl.float32)
            p, dp = _power_and_slope(tl.maximum((z - top) * am1 - tau, 0.0), d, MODE)
            acc += p
            dacc += dp
        tau = tau + _newton_increment(tl.sum(acc, axis=0), tl.sum(dacc, axis=0), one_minus_alpha, MODE)
    if MODE == 1:  # α = 1.5: the exact step on the current support (torch_impl.exact_step)
        acc = tl.zeros([CHUNK], tl.float32)
        dacc = tl.zeros([CHUNK], tl.float32)
        size = tl.zeros([CHUNK], tl.float32)
        for start in range(0, n_cols, CHUNK):
            m = start + cols < n_cols
            z = tl.load(X + base + start + cols, mask=m, other=-float("inf")).to(tl.float32)
            x = tl.maximum((z - top) * am1 - tau, 0.0)
            acc += x * x
            dacc += x
            size += (x > 0).to(tl.float32)
        tau = tau + _exact_increment(tl.sum(acc, axis=0), tl.sum(dacc, axis=0), tl.sum(size, axis=0))

    acc = tl.zeros([CHUNK], tl.float32)
    for start in range(0, n_cols, CHUNK):
        m = start + cols < n_cols
        z = tl.load(X + base + start + cols, mask=m, other=-float("inf")).to(tl.float32)
        x = tl.maximum((z - top) * am1 - tau, 0.0)
        acc += _entmax_power(x, d, MODE)
    total = tl.sum(acc, axis=0)
    inv = tl.where(total > 0, 1.0 / tl.where(total > 0, total, 1.0), 0.0)
    for start in range(0, n_cols, CHUNK):
        m = start + cols < n_cols
        z = tl.load(X + base + start + cols, mask=m, other=-float("inf")).to(tl.float32)
        x = tl.maximum((z - top) * am1 - tau, 0.0)
        p = _entmax_power(x, d, MODE)
        tl.store(Y + base + start + cols, (p * inv).to(Y.dtype.element_ty), mask=m)


@triton.jit
def _entmax_bwd_kernel(
    P,
    G,
    DX,
    n_rows,
    n_cols,
    two_minus_alpha,
    MODE: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    two_minus_alpha = tl.cast(two_minus_alpha, tl.float32)  # see _entmax_fwd_kernel
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
    p = tl.load(P + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    on = p > 0
    if MODE == 0:
        s = on.to(tl.float32)
    elif MODE == 1:
        s = tl.sqrt(tl.maximum(p, 0.0))
    else:
        s = tl.where(on, tl.exp2(two_minus_alpha * tl.log2(tl.where(on, p, 1.0))), 0.0)
    sg = tl.where(on, s * g, 0.0)  # off the support g may be anything (even inf): it must not leak
    s_sum = tl.sum(s, axis=1)
    c = tl.sum(sg, axis=1) / tl.where(s_sum > 0, s_sum, 1.0)
    dx = tl.where(on, s * (g - c[:, None]), 0.0)
    tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _entmax_bwd_chunked_kernel(P, G, DX, n_cols, two_minus_alpha, MODE: tl.constexpr, CHUNK: tl.constexpr):
    two_minus_alpha = tl.cast(two_minus_alpha, tl.float32)  # see _entmax_fwd_kernel
    base = tl.program_id(0).to(tl.int64) * n_cols
    cols = tl.arange(0, CHUNK)
    s_acc = tl.zeros([CHUNK], tl.float32)
    sg_acc = tl.zeros([CHUNK], tl.float32)
    for start in range(0, n_cols, CHUNK):
        m = start + cols < n_cols
        p = tl.load(P + base + start + cols, mask=m, other=0.0).to(tl.float32)
        g = tl.load(G + base + start + cols, mask=m, other=0.0).to(tl.float32)
        on = p > 0
        if MODE == 0:
            s = on.to(tl.float32)
        elif MODE == 1:
            s = tl.sqrt(tl.maximum(p, 0.0))
        else:
            s = tl.where(on, tl.exp2(two_minus_alpha * tl.log2(tl.where(on, p, 1.0))), 0.0)
        s_acc += s
        sg_acc += tl.where(on, s * g, 0.0)
    s_sum = tl.sum(s_acc, axis=0)
    c = tl.sum(sg_acc, axis=0) / tl.where(s_sum > 0, s_sum, 1.0)
    for start in range(0, n_cols, CHUNK):
        m = start + cols < n_cols
        p = tl.load(P + base + start + cols, mask=m, other=0.0).to(tl.float32)
        g = tl.load(G + base + start + cols, mask=m, other=0.0).to(tl.float32)
        on = p > 0
        if MODE == 0:
            s = on.to(tl.float32)
        elif MODE == 1:
            s = tl.sqrt(tl.maximum(p, 0.0))
        else:
            s = tl.where(on, tl.exp2(two_minus_alpha * tl.log2(tl.where(on, p, 1.0))), 0.0)
        dx = tl.where(on, s * (g - c), 0.0)
        tl.store(DX + base + start + cols, dx.to(DX.dtype.element_ty), mask=m)


# ----------------------------------------------------------------------------- launch
@dataclass(frozen=True)
class LaunchConfig:
    """How a row length maps onto programs. ``chunk > 0`` selects the chunked variant."""

    block: int = 0  # register variant: tile width (power of two ≥ n)
    rows: int = 1  # register variant: rows per program
    chunk: int = 0  # chunked variant: slice width (power of two)
    num_warps: int = 4


def forward_config(n: int) -> LaunchConfig:
    """Heuristic (not yet tuned on hardware: ``benchmarks/bench_entmax.py --sweep`` compares
    alternatives). The solver is ~15 dependent row reductions, so reductions should stay inside
    a warp where possible: ~16 fp32 values per thread, one warp up to 512 columns, more warps only
    for longer rows; short rows are packed several to a program (≥ 512 elements each)."""
    block = max(16, triton.next_power_of_2(n))
    if block > MAX_REGISTER_BLOCK:
        return LaunchConfig(chunk=4096, num_warps=8)
    return LaunchConfig(block=block, rows=max(1, 512 // block), num_warps=max(1, min(16, block // 512)))


def backward_config(n: int) -> LaunchConfig:
    """The backward kernel is a single streaming pass: same tiling as the forward."""
    return forward_config(n)


def _launch(name: str, grid: tuple, device: torch.device, *args, **meta) -> None:
    kernel = globals()[name]
    if device.type == "cuda":
        torch.library.wrap_triton(kernel)[grid](*args, **meta)
        return
    if not isinstance(kernel, JITFunction):  # an InterpretedFunction: TRITON_INTERPRET=1 at import
        kernel[grid](*args, **meta)
        return
    # triton.jit decides at decoration time, for triton.language's own reductions too, whether
    # a function is compiled or interpreted: the variable cannot be switched on afterwards.
    raise RuntimeError(
        f"the Triton entmax kernels got {device.type} tensors; they run on CPU only under Triton's "
        "interpreter, which needs TRITON_INTERPRET=1 in the environment before triton is imported"
    )


def _as_rows(t: Tensor) -> Tensor:
    return t.contiguous().view(-1, t.shape[-1])


def entmax_forward(x: Tensor, alpha: float, config: LaunchConfig | None = None) -> Tensor:
    """α-entmax over the last dim of ``x`` (fp16/bf16/fp32) with the Triton kernels.

    The output is contiguous with ``x``'s shape and dtype. ``config`` overrides the launch
    heuristic (tests and tuning).
    """
    n = x.shape[-1]
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    x2 = _as_rows(x)
    y2 = torch.empty_like(x2)
    n_rows = x2.shape[0]
    mode, n_bisect, n_newton = solver_schedule(alpha, int(n), x.dtype)  # int(): a SymInt under compile
    cfg = config or forward_config(int(n))
    scalars = (alpha - 1.0, 1.0 / (alpha - 1.0), 1.0 - alpha)
    if cfg.chunk:
        _launch(
            "_entmax_fwd_chunked_kernel",
            (n_rows,),
            x.device,
            x2,
            y2,
            n,
            *scalars,
            MODE=mode,
            N_BISECT=n_bisect,
            N_NEWTON=n_newton,
            CHUNK=cfg.chunk,
            num_warps=cfg.num_warps,
        )
    else:
        if cfg.block < n:
            raise ValueError(f"LaunchConfig.block={cfg.block} is shorter than the row ({n})")
        _launch(
            "_entmax_fwd_kernel",
            (triton.cdiv(n_rows, cfg.rows),),
            x.device,
            x2,
            y2,
            n_rows,
            n,
            *scalars,
            MODE=mode,
            N_BISECT=n_bisect,
            N_NEWTON=n_newton,
            ROWS=cfg.rows,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )
    return y2.view(x.shape)


def entmax_backward(p: Tensor, grad_p: Tensor, alpha: float, config: LaunchConfig | None = None) -> Tensor:
    """``s ⊙ (g − Σ s g / Σ s)``, ``s = p^(2−α)`` on the support, over the last dim; contiguous,
    in ``grad_p``'s dtype."""
    n = p.shape[-1]
    if p.numel() == 0:
        return torch.empty(p.shape, dtype=grad_p.dtype, device=p.device)
    p2 = _as_rows(p)
    g2 = _as_rows(grad_p)
    dx2 = torch.empty_like(g2)
    n_rows = p2.shape[0]
    mode = MODE_SPARSEMAX if alpha == 2.0 else MODE_ENTMAX15 if alpha == 1.5 else MODE_GENERIC
    cfg = config or backward_config(int(n))
    if cfg.chunk:
        _launch(
            "_entmax_bwd_chunked_kernel",
            (n_rows,),
            p.device,
            p2,
            g2,
            dx2,
            n,
            2.0 - alpha,
            MODE=mode,
            CHUNK=cfg.chunk,
            num_warps=cfg.num_warps,
        )
    else:
        if cfg.block < n:
            raise ValueError(f"LaunchConfig.block={cfg.block} is shorter than the row ({n})")
        _launch(
            "_entmax_bwd_kernel",
            (triton.cdiv(n_rows, cfg.rows),),
            p.device,
            p2,
            g2,
            dx2,
            n_rows,
            n,
            2.0 - alpha,
            MODE=mode,
            ROWS=cfg.rows,
            BLOCK=cfg.block,
            num_warps=cfg.num_warps,
        )
    return dx2.view(p.shape)
