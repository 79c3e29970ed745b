"""Whether the coarse stage and the fused path gain from running kernels side by side (GPU).

    PYTHONPATH=. python scripts/probe_overlap.py [--seq 32768 131072]

On the attention benchmark's inputs, each timed twice in one process (median ms,
``triton.testing.do_bench``):

1. the score GEMM alone, summed over the 32K coarse launch's chunks, with ptxas's register count
   capped (``maxnreg``) so that two 8-warp programs fit an SM, at 2 and 3 stages;
2. the inference coarse launch with the score GEMM of chunk i + 1 on a second stream beside the
   entmax kernel of chunk i (two score buffers), against one stream;
3. ``dash_attention(fine_stage="fused")`` at inference with its query chunks on two streams in
   turn (chunk i + 1's selection beside chunk i's fine stage), against one stream, where the call
   runs in chunks (128K); the outputs compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import BS, topic_inputs  # noqa: E402
from profile_stages import print_kernel_resources  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import split_kernels as sk  # noqa: E402
from custom_ops.entmax.torch_impl import solver_schedule  # noqa: E402
from dash_flex import attention, dash_attention  # noqa: E402
from dash_flex._validation import AttentionShapes  # noqa: E402


def median_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median")


def gemm_caps(q, k_bar) -> None:
    B, Hq, Sq, _ = q.shape
    nb = k_bar.shape[2]
    chunk = sk.chunk_rows(B, Hq, nb, Sq)
    z = torch.empty(B, Hq, chunk, -(-nb // 16) * 16, device=q.device)[..., :nb]
    parts = sk.split_summaries(k_bar, q.dtype)
    for stages in (3, 2):
        for cap in (None, 128, 168):
            total = 0.0
            for row0 in range(0, Sq, chunk):
                n_rows = min(chunk, Sq - row0)
                tile = (128, 64, 8, stages)
                total += median_ms(
                    lambda: sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS, tile, 1, maxnreg=cap)
                )
            print(f"score GEMM (128, 64, 8 warps, {stages} stages), maxnreg {cap}: {total:.3f} ms", flush=True)
    print_kernel_resources(sk._coarse_scores)


def coarse_two_streams(q, k_bar, S):
    """The inference coarse launch (split rows) with chunk i + 1's score GEMM on a second stream."""
    B, Hq, Sq, _ = q.shape
    Hkv, nb = k_bar.shape[1], k_bar.shape[2]
    NB = max(16, triton.next_power_of_2(nb))
    chunk = sk.chunk_rows(B, Hq, nb, Sq)
    zs = [torch.empty(B, Hq, chunk, -(-nb // 16) * 16, device=q.device)[..., :nb] for _ in range(2)]
    parts = sk.split_summaries(k_bar, q.dtype)
    schedule = solver_schedule(1.5, nb, torch.float32)
    main = torch.cuda.current_stream()
    gemm_stream = torch.cuda.Stream()

    def run():
        probs = torch.empty(B, Hkv, Sq, nb, device=q.device)
        mean_log = torch.empty(B, Hkv, Sq, device=q.device)
        gemm_stream.wait_stream(main)
        done = [torch.cuda.Event(), torch.cuda.Event()]  # the entmax kernel has read buffer i
        for i, row0 in enumerate(range(0, Sq, chunk)):
            n_rows = min(chunk, Sq - row0)
            z = zs[i % 2]
            ready = torch.cuda.Event()
            with torch.cuda.stream(gemm_stream):
                if i >= 2:
                    gemm_stream.wait_event(done[i % 2])
                sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS)
                ready.record()
            main.wait_event(ready)
            width = sk.chunk_width(NB, True, row0, n_rows, Sq, 0, BS)
            rows, warps = sk.entmax_config(width)
            width_main, tail = sk.inference_row_split(width, True, row0, n_rows, Sq, 0, BS)
            sk.launch_group_entmax(z, probs, mean_log, row0, n_rows, width_main, NB, 1.5, True, 0, BS, schedule,
                                   rows, warps, tail)  # fmt: skip
            done[i % 2].record()
        return probs, mean_log

    launch = (q, k_bar, 1.5, 1.0, True, S, BS)
    want = sk.coarse_selection_rows_launch(*launch, tails=True)
    got = run()
    torch.cuda.synchronize()
    same = torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    print(f"S={S}: two-stream coarse equals one stream: {same}")
    for _ in range(2):
        one = median_ms(lambda: sk.coarse_selection_rows_launch(*launch, tails=True))
        two = median_ms(run)
        print(f"S={S}: coarse rows launch one stream {one:.3f} ms, GEMM on a second stream {two:.3f} ms", flush=True)


def fused_two_streams(q, k, v, S) -> None:
    """dash_attention(fine_stage="fused") at inference with its chunks on two streams in turn."""
    B, Hq, Sq, D = q.shape
    scale = 1 / math.sqrt(D)
    select_args = (1.5, True, 1.0, 1.0, None, None, None, True)
    base = AttentionShapes(B, Hq, k.shape[1], Sq, S, D, v.shape[-1], BS)
    rows = attention.fused_chunk_rows(base, True, False, True)
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    main = torch.cuda.current_stream()

    def run():
        k_bar = block_summaries(k, None, BS)
        out = q.new_empty(B, Hq, Sq, v.shape[-1])
        for s in streams:
            s.wait_stream(main)
        for i, r0 in enumerate(range(0, Sq, rows)):
            r1 = min(r0 + rows, Sq)
            with torch.cuda.stream(streams[i % 2]):
                shapes = dataclasses.replace(base, q_len=r1 - r0, kv_len=r1)
                out[:, :, r0:r1] = attention._attend_from_rows(
                    q[:, :, r0:r1], k[:, :, :r1], v[:, :, :r1], k_bar, shapes, scale, select_args
                )
        for s in streams:
            main.wait_stream(s)
        return out

    def serial():
        return dash_attention(q, k, v, alpha=1.5, block_size=BS, sigma=1.0, fine_stage="fused")

    with torch.no_grad():
        want, got = serial(), run()
        torch.cuda.synchronize()
        print(f"S={S}: {-(-Sq // rows)} chunks of {rows} rows; two-stream output equals: {torch.equal(want, got)}")
        for _ in range(2):
            one = median_ms(serial)
            two = median_ms(run)
            print(f"S={S}: dash_fused one stream {one:.2f} ms, chunks on two streams {two:.2f} ms", flush=True)
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        print(f"S={S}: two-stream extra peak {(torch.cuda.max_memory_allocated() - base_mem) / 2**30:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="*", default=[32768, 131072])
    args = parser.parse_args()
    for S in args.seq:
        q, k, v = topic_inputs(S)
        k_bar = block_summaries(k, None, BS)
        if S == 32768:
            gemm_caps(q, k_bar)
        coarse_two_streams(q, k_bar, S)
        if S > 32768:
            fused_two_streams(q, k, v, S)
        del q, k, v, k_bar
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
