"""Decode-step benchmark on one GPU: DashKVCache vs dense SDPA and dense flex decoding on the
same cache, one process, one card.

    PYTHONPATH=. python benchmarks/bench_decode.py --lengths 8192 32768 131072 --out DIR
    PYTHONPATH=. python benchmarks/bench_decode.py --smoke --out DIR        # CPU, tiny sizes

Sizes: batch 8, Hq=32, Hkv=8, D=128, bf16, block 64, α=1.5, σ=1; every sequence holds L tokens
and one query (position L − 1) is decoded. Each timed piece is one whole step as a model would
run it. ``--timing graph`` (default): the step is captured in a CUDA graph and timed over
replays (median of 5 rounds; device time, what a serving engine that captures its decode step
pays, with the same treatment for every method). ``--timing call``: CUDA-event medians of
single synchronised calls under ``--compile-mode``, which adds the host's per-call overhead
(~0.1 ms for a ``reduce-overhead`` compiled call on the H200) while the GPU waits:

* ``sdpa_<backend>``: ``scaled_dot_product_attention(q, K[:, :, :L], V[:, :, :L], enable_gqa=True)``
  for cuDNN, flash, efficient and the default dispatch (a backend that refuses is reported),
  and the default dispatch under ``--compile-mode`` (``sdpa_default[compiled]``);
* ``flex_dense[<opts>]``: compiled ``flex_attention`` with a ``kv_idx < len_b`` BlockMask;
* ``dash[<variant>]``: ``cache.attend(q)``: selection and fine stage end to end;
* ``dash_select[<variant>]``: the selection alone;
* ``dash_step[<variant>]``: append one token (summary update included) then attend (the
  lengths are rewound by one inside the timed call, one extra tiny kernel).

Keys carry one of four "topics" per 64-token block (the idea of ``bench_attention.py``) and
every query of a KV group asks for one topic, so entmax keeps about a quarter of the blocks;
the kept-block share and the tokens read per (sequence, KV head) are measured from the
selection and printed beside the times.

Variants (``--dash-variants``): ``fold`` = KV heads folded into the batch, flex decoding
template (``kernel_options=None``); ``fold-main`` = folded, main template (``num_stages=2``,
``FORCE_USE_FLEX_ATTENTION``); ``plain`` = per-query-head tables, the selection's own options;
``fold-decode-opts`` = folded with ``--decode-kernel-options`` (JSON); ``kernel`` = the
``dash_flex::decode_selection`` + ``dash_flex::sparse_decode`` kernels (no FlexAttention; the CUDA
default). Under ``--timing call``, ``--compile-mode`` wraps each dash / flex step in
``torch.compile`` (default ``reduce-overhead``: CUDA graphs, the cache buffers are static
addresses); ``none`` runs eagerly. Under ``--timing graph``, FlexAttention steps are compiled
(``default`` mode) and then captured; the kernel path is captured eagerly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import textwrap
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from custom_ops.sparse_decode import sparse_decode
from dash_flex.cache import DashKVCache

BS, ALPHA, SIGMA = 64, 1.5, 1.0

DASH_VARIANTS = {
    "fold": dict(fold_heads=True, kernel_options=None),
    "fold-main": dict(fold_heads=True, kernel_options={"num_stages": 2, "FORCE_USE_FLEX_ATTENTION": True}),
    "plain": dict(fold_heads=False, kernel_options=None, decode_kernel=False),
    "kernel": dict(decode_kernel=True),  # dash_flex::sparse_decode: split-KV over the kept-block list
}
FLEX_OPTIONS = {"decode": None, "main": {"num_stages": 2, "FORCE_USE_FLEX_ATTENTION": True}}


# ----------------------------------------------------------------------------- inputs
def fill_topic_cache(cache: DashKVCache, L: int, n_topics: int, seed: int, chunk: int) -> torch.Tensor:
    """Fill every sequence with ``L`` tokens whose keys carry one topic per block (plus noise),
    appending ``chunk`` tokens at a time; return the query ``[B, Hq, 1, D]`` of position L − 1,
    which asks every head of a KV group for one topic."""
    B, Hkv, D, dev = cache.batch, cache.kv_heads, cache.head_dim, cache.device
    g = torch.Generator(device=dev).manual_seed(seed)
    topics = torch.randn(B, Hkv, n_topics, D, device=dev, generator=g)
    topics = topics / topics.norm(dim=-1, keepdim=True) * math.sqrt(D)
    block_topic = torch.randint(0, n_topics, (B, Hkv, L // cache.block_size), device=dev, generator=g)
    token_topic = block_topic.repeat_interleave(cache.block_size, dim=2)  # [B, Hkv, L]
    for start in range(0, L, chunk):
        n = min(chunk, L - start)
        idx = token_topic[:, :, start : start + n, None].expand(B, Hkv, n, D)
        k = 0.5 * torch.randn(B, Hkv, n, D, device=dev, generator=g) + topics.gather(2, idx)
        v = torch.randn(B, Hkv, n, D, device=dev, generator=g)
        cache.append(k.to(cache.dtype), v.to(cache.dtype))
    want = torch.randint(0, n_topics, (B, Hkv, 1, 1), device=dev, generator=g).expand(B, Hkv, 1, D)
    G = HQ // Hkv
    q = 0.5 * torch.randn(B, Hkv, G, D, device=dev, generator=g) + 1.5 * topics.gather(2, want)
    return q.view(B, Hkv * G, 1, D).to(cache.dtype)


def calibrate_query(cache: DashKVCache, q: torch.Tensor, target: float, steps: int = 10) -> tuple[torch.Tensor, float]:
    """Scale ``q`` (a selection temperature: smaller scores → flatter entmax → more blocks kept) so
    that the decode selection keeps about ``target`` of the blocks (at most that share): bisection
    on the scale (the kept share falls as the scale grows). Returns the query and the scale."""

    def kept(scale: float) -> float:
        sel = cache.decode_selection((q.float() * scale).to(q.dtype), alpha=ALPHA, sigma=SIGMA)
        return float(sel.count.float().mean() / cache.num_blocks)

    lo, hi = 0.0, 1.0
    while kept(hi) > target and hi < 64:  # short caches keep more than the target: sharpen
        lo, hi = hi, 2 * hi
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kept(mid) > target else (lo, mid)
    return (q.float() * hi).to(q.dtype), hi


# ----------------------------------------------------------------------------- timing
def graph_ms(fn, replays: int = 50, rounds: int = 5) -> float:
    """Median per-replay time of ``fn`` captured into a CUDA graph (device time: what a serving
    engine that captures its whole decode step pays; no Python or launch overhead)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / replays)
    return statistics.median(times)


def time_ms(fn, warmup: int, reps: int, cuda: bool, timing: str = "call") -> float:
    """Median time of one call, in ms: ``graph`` = CUDA-graph replays (:func:`graph_ms`); ``call``
    = one synchronised call at a time (CUDA events; includes the host's launch overhead while the
    GPU waits), or wall time on the CPU."""
    for _ in range(warmup):
        fn()
    if cuda and timing == "graph":
        return graph_ms(fn, replays=max(1, reps // 5))
    times = []
    if cuda:
        torch.cuda.synchronize()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def maybe_compile(fn, mode: str):
    if mode == "none":
        return fn
    return torch.compile(fn, fullgraph=True, dynamic=False, **({} if mode == "default" else {"mode": mode}))


# ----------------------------------------------------------------------------- one length
def run_length(L: int, args, device: torch.device) -> list[dict]:
    cuda = device.type == "cuda"
    cache = DashKVCache(B, HKV, L, D, block_size=BS, dtype=DTYPE, device=device)
    q = fill_topic_cache(cache, L, args.topics, seed=L, chunk=min(L, 8192))
    if args.target_kept is not None:
        q, q_scale = calibrate_query(cache, q, args.target_kept)
        print(f"  L={L:>7} query scaled by {q_scale:.3f} (target: {100 * args.target_kept:.0f}% of blocks kept)")
    k_last, v_last = cache.key[:, :, L - 1 : L].clone(), cache.value[:, :, L - 1 : L].clone()
    K, V = cache.key[:, :, :L], cache.value[:, :, :L]
    rows: list[dict] = []

    def record(name, fn, tokens=None, kept=None):
        row = dict(L=L, method=name, tokens_read=tokens, kept_share=kept)
        try:
            row["ms"] = time_ms(fn, args.warmup, args.reps, cuda, args.timing)
        except Exception as e:  # a backend that refuses these inputs is reported, not fatal
            row["ms"], row["error"] = None, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        rows.append(row)
        print(f"  L={L:>7} {name:<32} {_fmt(row['ms'])} ms {row.get('error', '')}", flush=True)
        if cuda:
            torch.cuda.empty_cache()

    # Dense baselines read every token of the cache.
    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}
    backends["efficient"] = SDPBackend.EFFICIENT_ATTENTION
    if not cuda:
        backends = {"math": SDPBackend.MATH}
    for name, backend in backends.items():
        with sdpa_kernel(backend):  # entered outside the timed call: only the kernel is timed
            record(f"sdpa_{name}", lambda: F.scaled_dot_product_attention(q, K, V, enable_gqa=True), L, 1.0)
    record("sdpa_default", lambda: F.scaled_dot_product_attention(q, K, V, enable_gqa=True), L, 1.0)
    if args.compile_mode != "none" and args.timing == "call":  # the dash step's launch-overhead treatment
        sdpa_c = maybe_compile(lambda: F.scaled_dot_product_attention(q, K, V, enable_gqa=True), args.compile_mode)
        record("sdpa_default[compiled]", sdpa_c, L, 1.0)

    lengths = cache.lengths
    dense_mask = create_block_mask(
        lambda b, h, q_idx, kv_idx: kv_idx < lengths[b], B, None, 1, L, device=device, BLOCK_SIZE=128
    )
    # Graph timing captures every step in a CUDA graph: nothing is compiled but what would run
    # unfused (FlexAttention), and that without Inductor's own CUDA graphs.
    graphed = args.timing == "graph"
    flex_mode = "default" if (graphed or args.compile_mode == "none") and cuda else args.compile_mode
    kernel_mode = "none" if graphed else args.compile_mode
    for opt_name in args.flex_options:
        options = FLEX_OPTIONS[opt_name]
        flex_fn = maybe_compile(
            lambda options=options: flex_attention(
                q, K, V, block_mask=dense_mask, enable_gqa=True, kernel_options=options
            ),
            flex_mode,
        )
        record(f"flex_dense[{opt_name}]", flex_fn, tokens=L, kept=1.0)

    # Measured selection: tokens read per (sequence, KV head) and the kept-block share.
    with torch.no_grad():
        sel = cache.select(q, alpha=ALPHA, sigma=SIGMA)
        stats = cache.read_stats(sel)
    tokens, kept = float(stats.tokens_read.float().mean()), stats.kept_block_share()
    print(f"  L={L:>7} selection keeps {100 * kept:.1f}% of blocks, {tokens:.0f} of {L} tokens", flush=True)

    variants = dict(DASH_VARIANTS)
    if args.decode_kernel_options:
        variants["fold-decode-opts"] = dict(fold_heads=True, kernel_options=json.loads(args.decode_kernel_options))
    for vname in args.dash_variants + (["fold-decode-opts"] if args.decode_kernel_options else []):
        kw = variants[vname]

        def attend(kw=kw):
            return cache.attend(q, alpha=ALPHA, sigma=SIGMA, **kw)

        def select_only():
            s = cache.select(q, alpha=ALPHA, sigma=SIGMA)
            return s.block_mask.kv_num_blocks, s.block_mask.kv_indices, s.log_prior

        def step(kw=kw):
            cache.lengths.sub_(1)  # rewind, so every timed call appends the same last token
            return cache.append_and_attend(q, k_last, v_last, alpha=ALPHA, sigma=SIGMA, **kw)

        with torch.no_grad():
            if vname == "kernel":  # the kernel path's two stages alone
                decode_sel = cache.decode_selection(q, alpha=ALPHA, sigma=SIGMA)
                q0 = q[:, :, 0]
                record(
                    "kernel_coarse_only",
                    maybe_compile(lambda: cache.decode_selection(q, alpha=ALPHA, sigma=SIGMA), kernel_mode),
                    tokens,
                    kept,
                )
                record(
                    "kernel_fine_only",
                    maybe_compile(
                        lambda: sparse_decode(
                            q0,
                            cache.key,
                            cache.value,
                            decode_sel.block_list,
                            decode_sel.count,
                            decode_sel.prior,
                            decode_sel.pos,
                            D**-0.5,
                            BS,
                        ),
                        kernel_mode,
                    ),
                    tokens,
                    kept,
                )
            mode = kernel_mode if vname == "kernel" else flex_mode
            record(f"dash[{vname}]", maybe_compile(attend, mode), tokens, kept)
            if vname == args.dash_variants[0]:
                record("dash_select", maybe_compile(select_only, flex_mode), tokens, kept)
            record(f"dash_step[{vname}]", maybe_compile(step, mode), tokens, kept)
        torch.testing.assert_close(cache.lengths, torch.full_like(cache.lengths, L))  # the step rewinds exactly
    return rows


# ----------------------------------------------------------------------------- report
def _fmt(x, suffix=""):
    return "—" if x is None else f"{x:.3f}{suffix}"


def report(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| L | method | ms/step | × vs best SDPA | × vs default SDPA | tokens read / (seq, KV head) | kept blocks |",
        "|---|---|---|---|---|---|---|",
    ]
    for L in sorted({r["L"] for r in rows}):
        at = [r for r in rows if r["L"] == L]
        sdpa = [r["ms"] for r in at if r["method"].startswith("sdpa") and r["ms"] is not None]
        best = min(sdpa) if sdpa else None
        default = next((r["ms"] for r in at if r["method"] == "sdpa_default"), None)
        for r in at:
            ms = r["ms"]
            tokens = "—" if r["tokens_read"] is None else f"{r['tokens_read']:.0f}"
            kept = "—" if r["kept_share"] is None else f"{100 * r['kept_share']:.1f}%"
            lines.append(
                f"| {L} | {r['method']} | {_fmt(ms)} | {_fmt(best / ms if ms and best else None, '×')} | "
                f"{_fmt(default / ms if ms and default else None, '×')} | {tokens} | {kept} {r.get('error', '')}|"
            )
    return "\n".join(lines)


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["L"], r["ms"]) for r in rows if r["method"] == method and r["ms"] is not None)
        if pts:
            style = "--" if method.startswith(("sdpa", "flex")) else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("cache length L (tokens per sequence)")
    ax.set_ylabel("ms per decode step (median)")
    ax.set_title(textwrap.fill(title, 100), fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    global B, HQ, HKV, D, DTYPE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--out", default=None, help="folder for bench_decode.{md,json,png}")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks that the script runs")
    parser.add_argument("--topics", type=int, default=4, help="key topics; about 1/topics of the blocks are kept")
    parser.add_argument(
        "--target-kept",
        type=float,
        default=0.25,
        help="scale each length's query so that the selection keeps about this share of the blocks "
        "(the unscaled query keeps 25%% at 8K but 19%% at 128K); 0 = no scaling",
    )
    parser.add_argument("--dash-variants", nargs="+", default=["kernel", "fold"], choices=sorted(DASH_VARIANTS))
    parser.add_argument("--flex-options", nargs="+", default=["decode"], choices=sorted(FLEX_OPTIONS))
    parser.add_argument("--decode-kernel-options", default=None, help="JSON, e.g. '{\"BLOCK_N\": 64}'")
    parser.add_argument(
        "--compile-mode",
        default="reduce-overhead",
        choices=["reduce-overhead", "default", "max-autotune-no-cudagraphs", "none"],
    )
    parser.add_argument(
        "--timing",
        default="graph",
        choices=["graph", "call"],
        help="graph: every step captured in a CUDA graph, median replay time (device time; what a serving "
        "engine capturing its decode step pays); call: one synchronised call at a time under --compile-mode "
        "(includes host overhead)",
    )
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--reps", type=int, default=100)
    args = parser.parse_args()
    args.target_kept = args.target_kept or None

    if args.smoke:
        device = torch.device("cpu")
        B, HQ, HKV, D, DTYPE = 2, 8, 2, 32, torch.float32
        if args.lengths == parser.get_default("lengths"):
            args.lengths = [512, 1024]
        args.warmup, args.reps = min(args.warmup, 1), min(args.reps, 3)
        if args.compile_mode == "reduce-overhead":
            args.compile_mode = "none"
        args.timing = "call"
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench_decode.py needs a CUDA GPU (or --smoke for a CPU check)")
        device = torch.device("cuda")
        B, HQ, HKV, D, DTYPE = 8, 32, 8, 128, torch.bfloat16
    torch._dynamo.config.recompile_limit = 64  # one compile per (function, length)
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # never time an eager fallback

    card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    title = (
        f"decode step on {card} (torch {torch.__version__}), {str(DTYPE).removeprefix('torch.')} B={B} Hq={HQ} "
        f"Hkv={HKV} D={D} block={BS} α={ALPHA} σ={SIGMA}, "
        + ("CUDA-graph replay times" if args.timing == "graph" else f"per-call times, compile={args.compile_mode}")
    )
    print("#", title, flush=True)
    rows: list[dict] = []
    with torch.no_grad():
        for L in args.lengths:
            rows += run_length(L, args, device)
    table = report(rows, f"# {title}")
    print("\n" + table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_decode.md"), "w") as f:
            f.write(table + "\n")
        with open(os.path.join(args.out, "bench_decode.json"), "w") as f:
            json.dump({"title": title, "args": vars(args), "rows": rows}, f, indent=1)
        plot(rows, os.path.join(args.out, "bench_decode.png"), title)
        print(f"wrote {args.out}/bench_decode.{{md,json,png}}")


B, HQ, HKV, D, DTYPE = 8, 32, 8, 128, torch.bfloat16

if __name__ == "__main__":
    main()
