"""`dash_attention`: the coarse stage (`dash_select`) then FlexAttention over the selection."""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable

import torch
import torch.utils.checkpoint
from torch.nn.attention.flex_attention import flex_attention

from custom_ops.block_summary import block_summaries
from custom_ops.coarse_selection import coarse_selection_rows
from custom_ops.sparse_attention import sparse_attention_forward, sparse_attention_rows, sparse_attention_rows_into
from custom_ops.sparse_attention.ops import attend_tile_lists, rows_tile_lists

from ._validation import AttentionShapes, check_attention_inputs
from .mods import apply_score_mod, evaluate_mask_mod
from .selection import TILE, DashSelection, _fused_coarse_applies, _select

__all__ = ["dash_attention", "dense_flex_attention", "flex_fine_stage"]

_compiled_flex: Callable | None = None
EAGER_RECOMPILE_LIMIT = 64


def _flex(q, k, v, score_mod, block_mask, scale, enable_gqa, kernel_options):
    """FlexAttention, compiled when it runs eagerly on a GPU (eager flex there would materialise
    the Sq×Skv scores), and as-is inside a compiled graph or on the CPU."""
    if torch.compiler.is_compiling():
        if q.device.type == "cpu":
            # Inductor's CPU flex template reads the 4-D layout off q/k/v's storage; a view of a
            # projection's 2-D output breaks it (torch 2.13: "expected 4, got 2"). Copy to 4-D buffers.
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        return flex_attention(
            q,
            k,
            v,
            score_mod=score_mod,
            block_mask=block_mask,
            scale=scale,
            enable_gqa=enable_gqa,
            kernel_options=kernel_options,
        )
    if q.device.type == "cpu":
        with warnings.catch_warnings():  # eager CPU flex is exact; its "use torch.compile" advice is noise here
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return flex_attention(
                q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=enable_gqa
            )
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    # One compile per shape: Dynamo's default limit (8 per code object, shared with every other
    # torch.compile(flex_attention) in the process) is too low for a library entry point.
    limit = max(torch._dynamo.config.recompile_limit, EAGER_RECOMPILE_LIMIT)
    with torch._dynamo.config.patch(recompile_limit=limit):
        return _compiled_flex(
            q,
            k,
            v,
            score_mod=score_mod,
            block_mask=block_mask,
            scale=scale,
            enable_gqa=enable_gqa,
            kernel_options=kernel_options,
        )


def dense_flex_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    score_mod: Callable | None,
    mask_mod: Callable,
    scale: float,
) -> torch.Tensor:
    """FlexAttention's semantics computed densely with autograd (fp32 scores).

    The CPU path for backward: FlexAttention refuses backward on CPU when q/k/v require grad
    (torch 2.13). Same mods, same masked-row rule (a row with no allowed key outputs zeros).
    Memory is O(B·Hq·Sq·Skv): meant for the CPU sizes we test, not for long contexts.
    """
    B, Hq, Sq, _ = query.shape
    G, Skv = Hq // key.shape[1], key.shape[2]
    k = key.float().repeat_interleave(G, dim=1)
    v = value.float().repeat_interleave(G, dim=1)
    scores = scale * (query.float() @ k.transpose(-1, -2))
    if score_mod is not None:
        scores = apply_score_mod(score_mod, scores)
    allowed = evaluate_mask_mod(mask_mod, B, Hq, Sq, Skv, query.device)
    scores = scores.masked_fill(~allowed, -math.inf)
    row_max = scores.amax(-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = torch.exp(scores - row_max)
    denom = weights.sum(-1, keepdim=True)
    out = (weights @ v) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return out.to(query.dtype)


def dash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    alpha: float = 1.5,
    block_size: int = 64,
    causal: bool = True,
    scale: float | None = None,
    selection_scale: float = 1.0,
    sigma: float = 1.0,
    pool_query: torch.Tensor | None = None,
    score_mod: Callable | None = None,
    mask_mod: Callable | None = None,
    share_kv_groups: bool = True,
    return_selection: bool = False,
    fine_stage: str = "flex",
) -> torch.Tensor | tuple[torch.Tensor, DashSelection]:
    """DashAttention (SPEC §2): α-entmax block selection, then softmax attention over the kept
    blocks with the entmax probabilities as a log-prior.

    Args:
        query ``[B, Hq, Sq, D]``, key ``[B, Hkv, Skv, D]``, value ``[B, Hkv, Skv, Dv]``; ``Hq % Hkv == 0``.
        alpha: entmax α ∈ (1, 2] (1.5 default; 2 is sparsemax).
        block_size: tokens per key block, a positive multiple of 16.
        causal: bottom-right aligned causal mask (query t sits at ``t + Skv − Sq``).
        scale: fine-stage score scale (default ``1/√D``).
        selection_scale: multiplies the coarse scores ``q·k̄/√D`` before entmax.
        sigma: temperature of the log-prior (``inf``: no prior, pure block selection).
        pool_query: ``[Hkv, D]`` learnable pooling vectors for the block summaries (None: mean).
        score_mod, mask_mod: FlexAttention-style mods composed with the selection.
        share_kv_groups: one selection per KV head group (GQA), else one per query head.
        return_selection: also return the :class:`DashSelection`.
        fine_stage: ``"flex"`` (FlexAttention; composes with user mods) or ``"fused"``
            (``dash_flex::sparse_attention_forward``: our block-sparse kernel over the kept-block
            lists, prior as a row vector, backward with an exact Δ; no user ``score_mod`` /
            ``mask_mod``). Without gradients (with GQA sharing, without ``return_selection``,
            and rows of blocks that fit the coarse kernels' register tile), the selection stays
            as p̄ rows (``dash_flex::coarse_selection_rows``) from which the fine stage's lists
            carry the bias (``dash_flex::sparse_attention_rows``): no block-major prior or flags,
            the same result up to fp32 rounding. It runs the queries in chunks when the selection state would exceed
            ``INFERENCE_CHUNK_BYTES`` (1.25 GiB) without gradients, or ``TRAINING_CHUNK_BYTES``
            (4 GiB, the prior's gradient counted) with them, each chunk then recomputed in the
            backward (activation checkpointing): same result, peak memory of one chunk
            (docs/design.md). Causal chunks that see fewer keys are taller
            (:func:`fused_chunk_bounds`).

    Returns the output ``[B, Hq, Sq, Dv]`` in the input dtype. Gradients reach query, key, value,
    pool_query and tensors captured by ``score_mod``. On the CPU, when gradients are needed, the
    fine stage runs :func:`dense_flex_attention` (FlexAttention has no CPU backward).
    """
    if fine_stage not in ("flex", "fused"):
        raise ValueError(f"fine_stage must be 'flex' or 'fused', got fine_stage={fine_stage!r}")
    if fine_stage == "fused" and (score_mod is not None or mask_mod is not None):
        raise ValueError("fine_stage='fused' does not take a score_mod or mask_mod yet: use fine_stage='flex'")
    shapes = check_attention_inputs(
        query,
        key,
        value,
        alpha=alpha,
        block_size=block_size,
        causal=causal,
        scale=scale,
        selection_scale=selection_scale,
        sigma=sigma,
        pool_query=pool_query,
        score_mod=score_mod,
        mask_mod=mask_mod,
    )
    scale = 1.0 / math.sqrt(shapes.head_dim) if scale is None else scale
    select_args = (alpha, causal, selection_scale, sigma, pool_query, score_mod, mask_mod, share_kv_groups)
    if fine_stage == "fused" and not return_selection:
        training = _needs_grad(query, key, value, pool_query)
        from_rows = not training and _fused_coarse_applies(shapes, None, share_kv_groups)
        rows = fused_chunk_rows(shapes, share_kv_groups, training, from_rows)
        if rows < shapes.q_len:
            return _fused_in_query_chunks(query, key, value, shapes, rows, scale, select_args, training, from_rows)
        if from_rows:
            return _attend_from_rows(query, key, value, None, shapes, scale, select_args)
    sel = _select(query, key, shapes, *select_args)
    if fine_stage == "fused":
        out = _fused_fine_stage(query, key, value, sel, scale, causal, math.isfinite(sigma))
    else:
        out = flex_fine_stage(query, key, value, sel, scale, grad_inputs=(pool_query,))
    return (out, sel) if return_selection else out


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd will want gradients of any of these (grad mode on, one requires grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _fused_fine_stage(query, key, value, sel: DashSelection, scale: float, causal: bool, has_prior: bool):
    prior, active = sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3)
    bs = sel.shapes.block_size
    residual = _needs_grad(query, key, value, prior)  # only the backward reads it
    return sparse_attention_forward(query, key, value, prior, active, causal, scale, bs, has_prior, residual)[0]


def _attend_from_rows(query, key, value, k_bar, shapes: AttentionShapes, scale: float, select_args, out=None):
    """The fused path for inference: the selection as p̄ rows and their mean log p̄, read directly by
    the fine kernel (no block-major prior or flags, no DashSelection). ``k_bar``: the block
    summaries when the caller has them (``[B, Hkv, ≥ nb, D]``), else computed from ``key``.
    ``out``: the output is written there (a query chunk's rows of the call's output) and returned."""
    rows_selection = _select_rows(query, key, k_bar, shapes, select_args)
    return _attend_rows(query, key, value, rows_selection, shapes, scale, select_args, out)


def _select_rows(query, key, k_bar, shapes: AttentionShapes, select_args) -> tuple[torch.Tensor, torch.Tensor]:
    """The inference selection of :func:`_attend_from_rows`: ``(p̄ rows, their mean log p̄)``."""
    alpha, causal, selection_scale, _, pool_query = select_args[:5]
    bs = shapes.block_size
    k_bar = block_summaries(key, pool_query, bs) if k_bar is None else k_bar[:, :, : shapes.num_blocks]
    return coarse_selection_rows(query, k_bar, alpha, selection_scale, causal, shapes.kv_len, bs)


def _attend_rows(query, key, value, rows_selection, shapes: AttentionShapes, scale: float, select_args, out=None):
    """The fine stage of :func:`_attend_from_rows` from :func:`_select_rows`' output."""
    causal, sigma = select_args[1], select_args[3]
    probs, mean_log = rows_selection
    inv_sigma = 1.0 / sigma if math.isfinite(sigma) else 0.0
    bs = shapes.block_size
    if out is not None:
        sparse_attention_rows_into(query, key, value, probs, mean_log, out, causal, scale, bs, inv_sigma)
        return out
    return sparse_attention_rows(query, key, value, probs, mean_log, causal, scale, bs, inv_sigma)[0]


# Bytes of selection state per (batch, selection head, key block, query row) on the fused path:
# p̄ and the prior (fp32), the flags (bool) and the fine stage's tile lists (int32 per 16–32 rows).
SELECTION_BYTES_PER_ENTRY = 4 + 4 + 1 + 0.25
# Inference from the rows (``_attend_from_rows``): p̄, the tile lists and their bias rows by list
# slot (fp32, allocated for every block of every query tile: 4 bytes per entry).
ROWS_BYTES_PER_ENTRY = 4 + 4 + 0.25
# With gradients the backward also holds the prior's gradient (fp32) per entry.
TRAINING_BYTES_PER_ENTRY = SELECTION_BYTES_PER_ENTRY + 4
# Inference on the fused path runs the queries in chunks whose selection state fits this budget:
# at 128K tokens the whole selection would take ~19 GiB (docs/benchmarks.md). 1.25 GiB lets 32K
# (1.16 GiB, B=1, Hkv=8) run whole: in two chunks (the second's launches, a strided copy of each
# output chunk) its forward took 9.98 ms, whole 9.36 (H200, two processes), for 0.16 GiB more
# extra peak (1.25 -> 1.41 GiB). Since session 18 inference chunks write their output in place
# (no copy): 128K at 1.75 / 2.25 GiB saved <= 1 ms for 1.65 / 2.17 GiB of extra peak (H100, run 96).
INFERENCE_CHUNK_BYTES = 5 * 2**28
# Training chunks recompute their forward in the backward (a second coarse + fine forward, ~20%
# of a step at 32K), so they start at a larger state: 32K (1.7 GiB) runs whole, 128K in chunks.
TRAINING_CHUNK_BYTES = 4 * 2**30


def fused_chunk_rows(shapes: AttentionShapes, share_kv_groups: bool, training: bool, from_rows: bool = False) -> int:
    """Query rows per chunk for a fused-path call: ``q_len`` (no chunking) when the state fits its
    budget (``INFERENCE_CHUNK_BYTES`` at ``SELECTION_BYTES_PER_ENTRY``, or at
    ``ROWS_BYTES_PER_ENTRY`` when ``from_rows``; ``TRAINING_CHUNK_BYTES`` at
    ``TRAINING_BYTES_PER_ENTRY`` when a gradient is wanted); else the most rows that fit, in whole
    1024-row units (128 when fewer fit; at least 128).

    Exact: every query row's selection and attention depend only on that row and the keys it can
    see (SPEC §2), so a chunk of rows with the keys up to its last row's position gives the same
    rows (up to the order of fp32 sums) as the whole call; its gradients add up to the whole
    call's."""
    heads = shapes.kv_heads if share_kv_groups else shapes.q_heads
    if training:
        per_entry, budget = TRAINING_BYTES_PER_ENTRY, TRAINING_CHUNK_BYTES
    else:
        per_entry = ROWS_BYTES_PER_ENTRY if from_rows else SELECTION_BYTES_PER_ENTRY
        budget = INFERENCE_CHUNK_BYTES
    fit = int(budget // (shapes.batch * heads * shapes.num_blocks * per_entry))
    if fit >= shapes.q_len:
        return shapes.q_len
    # 1024-row units: with q_len = kv_len every chunk's key count is then a multiple of 16 blocks
    # of 64, which keeps the coarse kernels' row strides aligned (their loads vectorise)
    unit = 8 * TILE if fit >= 8 * TILE else TILE
    return max(TILE, fit // unit * unit)


def fused_chunk_bounds(shapes: AttentionShapes, rows: int, causal: bool) -> list[int]:
    """Row boundaries ``[0, r1, ..., q_len]`` of a fused call chunked at ``rows`` rows
    (:func:`fused_chunk_rows`). Causal chunks see only the keys up to their last row, so an early
    chunk's selection state is narrower: each chunk is the tallest whole number of ``rows``' units
    (1024 or 128 rows) whose selection state, rows × key blocks, is at most ``rows`` rows over
    every key block (the budget's). 128K inference: 9 chunks instead of 15, fewer launches and
    partial last waves; the selection state per chunk stays within the budget (the taller
    chunks' outputs added to the peak, 1.21 → 1.35 GiB, until inference chunks wrote their
    output in place: 1.15 GiB; docs/benchmarks.md, sessions 15 and 18).
    Non-causal: ``rows`` each."""
    q_len = shapes.q_len
    if not causal or rows >= q_len:
        return [*range(0, q_len, rows), q_len]
    unit = 8 * TILE if rows % (8 * TILE) == 0 else TILE
    offset, bs = shapes.kv_len - q_len, shapes.block_size
    cap = rows * shapes.num_blocks
    bounds = [0]
    while bounds[-1] < q_len:
        r0 = bounds[-1]
        r1 = min(r0 + rows, q_len)  # fits: its key blocks are at most num_blocks
        while r1 < q_len:
            taller = min(r1 + unit, q_len)
            if (taller - r0) * -(-(taller + offset) // bs) > cap:
                break
            r1 = taller
        bounds.append(r1)
    return bounds


def _select_and_attend(query, key, value, k_bar, shapes: AttentionShapes, scale: float, select_args):
    """One chunk of the fused path: its selection (with the caller's block summaries) and fine stage."""
    causal, sigma = select_args[1], select_args[3]
    sel = _select(query, key, shapes, *select_args, k_bar=k_bar)
    return _fused_fine_stage(query, key, value, sel, scale, causal, math.isfinite(sigma))


def _fused_in_query_chunks(
    query, key, value, shapes: AttentionShapes, rows: int, scale: float, select_args, checkpointed: bool,
    from_rows: bool = False,
):  # fmt: skip
    """The fused path over chunks of query rows (:func:`fused_chunk_bounds` from ``rows``): each
    chunk selects and attends with the keys up to its last row's position (causal) or all keys; the
    block summaries are computed once.
    Peak memory holds one chunk's selection (two with ``OVERLAP_SELECTION``), not the whole
    ``[Sq, nb]`` state. ``checkpointed``
    (gradients wanted): each chunk keeps only its inputs and is recomputed in the backward
    (``torch.utils.checkpoint``), so the backward too holds one chunk's selection at a time.
    ``from_rows``: each chunk runs :func:`_attend_from_rows` (inference)."""
    causal, pool_query = select_args[1], select_args[4]
    k_bar = block_summaries(key, pool_query, shapes.block_size)
    out = query.new_empty(*query.shape[:3], shapes.value_dim)
    offset = shapes.kv_len - shapes.q_len
    bounds = fused_chunk_bounds(shapes, rows, causal)
    if from_rows and not checkpointed and overlap_applies(query, len(bounds) - 1):
        _overlapped_rows_chunks(query, key, value, k_bar, out, shapes, bounds, scale, select_args)
        return out
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        kv_end = r1 + offset if causal else shapes.kv_len  # causal needs q_len ≤ kv_len: kv_end ≥ 1
        chunk = functools.partial(
            _attend_from_rows if from_rows else _select_and_attend,
            shapes=dataclasses.replace(shapes, q_len=r1 - r0, kv_len=kv_end),
            scale=scale,
            select_args=select_args,
        )
        inputs = (query[:, :, r0:r1], key[:, :, :kv_end], value[:, :, :kv_end], k_bar)
        if checkpointed:
            out[:, :, r0:r1] = torch.utils.checkpoint.checkpoint(chunk, *inputs, use_reentrant=False)
        elif from_rows:  # the fine kernel writes the chunk's rows in place: no strided copy
            chunk(*inputs, out=out[:, :, r0:r1])
        else:
            out[:, :, r0:r1] = chunk(*inputs)
    return out


# Inference in query chunks on CUDA can run chunk i + 1's selection on a side stream while chunk
# i's fine stage runs on the caller's stream (docs/design.md, "Overlapping the stages across query
# chunks"): the coarse stage is bound by memory and launches, the fine stage by tensor cores.
# Opt-in (``OVERLAP_SELECTION = True``) until a device run has measured it and run its GPU tests
# (tests/test_gpu_overlap.py; session 24 had no device). ``SELECTION_STREAM_PRIORITY``: the side
# stream's priority (CUDA: lower is higher; -1 lets the selection's programs take SM slots as the
# fine kernel's retire, 0 queues them behind it). Both orders give the same bits (the same kernels
# on the same inputs).
OVERLAP_SELECTION = False
SELECTION_STREAM_PRIORITY = -1
# The side stream also builds each chunk's tile lists and bias rows (the fine stage's list builder),
# leaving the caller's stream only the fine kernel.
SELECTION_BUILDS_LISTS = False


def overlap_applies(query: torch.Tensor, num_chunks: int) -> bool:
    """Whether an inference call in ``num_chunks`` query chunks overlaps selection and fine stage:
    CUDA, eager (under ``torch.compile`` the chunks run in order: Dynamo would have to trace the
    streams), more than one chunk and ``OVERLAP_SELECTION``."""
    return OVERLAP_SELECTION and query.is_cuda and num_chunks > 1 and not torch.compiler.is_compiling()


_SIDE_STREAMS: dict = {}


def _selection_streams(device: torch.device):
    """``(caller's stream, side stream, a context that makes the side stream current)`` for
    :func:`_overlapped_rows_chunks` (a CPU test replaces it with recording stand-ins). One side
    stream per (device, priority), kept: the caching allocator keeps freed blocks per stream, so a
    new pool stream each call would strand a few chunks' selections in up to 32 streams' caches."""
    key = (torch.device(device), SELECTION_STREAM_PRIORITY)
    if key not in _SIDE_STREAMS:
        _SIDE_STREAMS[key] = torch.cuda.Stream(device, priority=SELECTION_STREAM_PRIORITY)
    side = _SIDE_STREAMS[key]
    return torch.cuda.current_stream(device), side, lambda: torch.cuda.stream(side)


def _overlapped_rows_chunks(query, key, value, k_bar, out, shapes: AttentionShapes, bounds, scale, select_args):
    """:func:`_fused_in_query_chunks` for inference on CUDA, two chunks in flight: chunk ``i + 1``'s
    selection (a side stream) beside chunk ``i``'s fine stage (the caller's stream).

    Ordering, all on the GPU (the host queues everything without waiting):
    * the side stream first waits for the caller's stream (the block summaries, the inputs);
    * chunk ``i``'s fine stage waits for chunk ``i``'s selection;
    * chunk ``i + 1``'s selection waits for chunk ``i − 1``'s fine stage. Chunk ``i − 1``'s
      selection tensors were freed (host side) before that point, into the side stream's pool, so
      the side stream reuses their memory only after the fine stage that read them: at most two
      chunks' selections exist, and the peak grows by one chunk's p̄ rows, not by all of them;
    * at the end (or on an error) the two streams wait for each other, which orders the last
      selections' reuse after their fine stages."""
    causal = select_args[1]
    offset = shapes.kv_len - shapes.q_len
    main, side, on_side = _selection_streams(query.device)
    side.wait_stream(main)

    def chunk_args(i):
        r0, r1 = bounds[i], bounds[i + 1]
        kv_end = r1 + offset if causal else shapes.kv_len
        chunk_shapes = dataclasses.replace(shapes, q_len=r1 - r0, kv_len=kv_end)
        return query[:, :, r0:r1], key[:, :, :kv_end], value[:, :, :kv_end], chunk_shapes, out[:, :, r0:r1]

    builds_lists = SELECTION_BUILDS_LISTS and query.dtype != torch.float64  # float64: the torch rows path
    attend = _attend_listed if builds_lists else _attend_rows

    def select_on_side(i):
        q, k, v, chunk_shapes, chunk_out = chunk_args(i)
        with on_side():
            selection = _select_rows(q, k, k_bar, chunk_shapes, select_args)
            if builds_lists:  # p̄ is freed here, on the side stream that wrote and read it
                selection = _tile_lists(q, k, v, selection, chunk_shapes, select_args, chunk_out)
            ready = side.record_event()
        return selection, ready

    fine_done = []
    try:
        pending = select_on_side(0)
        for i in range(len(bounds) - 1):
            selection, ready = pending
            if i + 1 < len(bounds) - 1:
                if fine_done:  # chunk i - 1's fine stage has read the memory this selection may reuse
                    side.wait_event(fine_done[-1])
                pending = select_on_side(i + 1)
            main.wait_event(ready)
            q, k, v, chunk_shapes, chunk_out = chunk_args(i)
            attend(q, k, v, selection, chunk_shapes, scale, select_args, out=chunk_out)
            fine_done.append(main.record_event())
            del selection  # to the side stream's pool; reused there only after fine_done[i]
    finally:
        # join both ways: later side-stream work (another call's) reuses the last selections only
        # after the fine stages that read them, and the caller's stream frees nothing the side
        # stream still reads (also when a launch raised mid-loop)
        side.wait_stream(main)
        main.wait_stream(side)


def _tile_lists(query, key, value, rows_selection, shapes: AttentionShapes, select_args, out) -> tuple:
    """CUDA: the fine stage's tile lists and bias rows from :func:`_select_rows`' output."""
    causal, sigma = select_args[1], select_args[3]
    inv_sigma = 1.0 / sigma if math.isfinite(sigma) else 0.0
    return rows_tile_lists(query, key, value, *rows_selection, causal, shapes.block_size, inv_sigma, out)


def _attend_listed(query, key, value, tile_lists, shapes: AttentionShapes, scale: float, select_args, out):
    """CUDA: the fine kernel over :func:`_tile_lists`' lists, written into ``out``."""
    attend_tile_lists(query, key, value, tile_lists, select_args[1], scale, shapes.block_size, out)
    return out


def flex_fine_stage(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    sel: DashSelection,
    scale: float,
    *,
    grad_inputs: tuple[torch.Tensor | None, ...] = (),
) -> torch.Tensor:
    """Softmax attention restricted by a selection (any selector: entmax, top-k).

    On the CPU, when gradients are needed (q, k, v or ``grad_inputs``, e.g. the pool_query behind
    the prior), :func:`dense_flex_attention`: CPU FlexAttention has no backward. Otherwise
    FlexAttention (compiled when called eagerly on a GPU)."""
    if query.device.type == "cpu" and _needs_grad(query, key, value, *grad_inputs):
        return dense_flex_attention(
            query, key, value, score_mod=sel.score_mod, mask_mod=sel.block_mask.mask_mod, scale=scale
        )
    if query.device.type == "cpu":  # CPU flex rejects inputs that require grad, even under no_grad
        query, key, value = query.detach(), key.detach(), value.detach()
    gqa = query.shape[1] != key.shape[1]
    return _flex(query, key, value, sel.score_mod, sel.block_mask, scale, gqa, sel.kernel_options)
