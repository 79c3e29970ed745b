"""``dash_attention(fine_stage="fused")`` at inference with K / V through TMA descriptors and with
pointer loads, in one process (GPU): the device time (median ms, ``triton.testing.do_bench``) and
the host time to enqueue a call (median over 50 calls, CUDA synchronised before each), where short
sequences are bound by the host. Steps, in order: each length at the shipped rule
(``DESCRIPTOR_MIN_KV_LEN``), then descriptors forced at every length, then the shipped rule again
(does a descriptor launch slow the later pointer launches?).

    PYTHONPATH=. python scripts/probe_descriptor_overhead.py [--seq 8192 32768]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.sparse_attention import triton_kernels  # noqa: E402
from dash_flex import dash_attention  # noqa: E402


def host_ms(fn) -> float:
    times = []
    for _ in range(50):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="*", default=[8192, 32768])
    args = parser.parse_args()
    inputs = {S: topic_inputs(S) for S in args.seq}
    shipped = triton_kernels.DESCRIPTOR_MIN_KV_LEN
    with torch.no_grad():
        for label, min_len in (("shipped rule", shipped), ("descriptors forced", 0), ("shipped rule", shipped)):
            triton_kernels.DESCRIPTOR_MIN_KV_LEN = min_len
            for S, (q, k, v) in inputs.items():

                def call():
                    return dash_attention(q, k, v, alpha=1.5, block_size=BS, sigma=1.0, fine_stage="fused")

                call()
                device = triton.testing.do_bench(call, warmup=20, rep=200, return_mode="median")
                print(f"S={S}: {label}: {device:.3f} ms a call, host {host_ms(call):.3f} ms to enqueue", flush=True)
    triton_kernels.DESCRIPTOR_MIN_KV_LEN = shipped


if __name__ == "__main__":
    main()
