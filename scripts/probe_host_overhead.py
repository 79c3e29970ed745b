"""Is a short coarse stage host-bound? (GPU) At one length (8K by default), for the inference
coarse launch with and without the zero fill: the median time of the call as the benchmark's
``fused_select_only`` runs it (``triton.testing.do_bench``), the host's time per call when 200
calls are queued without a sync, and the GPU's kernel time per call (torch.profiler, summed).

    PYTHONPATH=. python scripts/probe_host_overhead.py [--seq 8192]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import triton
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import coarse_selection_rows  # noqa: E402
from custom_ops.coarse_selection import split_kernels as sk  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=8192)
    args = parser.parse_args()
    S = args.seq
    print(torch.cuda.get_device_name())
    q, k, _ = topic_inputs(S)
    calls = {
        "op (zero_fill=False)": lambda: coarse_selection_rows(q, block_summaries(k, None, BS), 1.5, 1.0, True, S, BS),
        "launch, zero_fill=True": lambda: sk.coarse_selection_rows_launch(
            q, block_summaries(k, None, BS), 1.5, 1.0, True, S, BS, z_budget=sk.ROWS_Z_BUDGET_BYTES, tails=True
        ),
    }
    for repeat in range(2):
        for name, fn in calls.items():
            ms = triton.testing.do_bench(fn, warmup=20, rep=300)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(200):
                fn()
            host_ms = (time.perf_counter() - t0) / 200 * 1e3
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(20):
                    fn()
                torch.cuda.synchronize()
            gpu_ms = sum(e.self_device_time_total for e in prof.key_averages()) / 20 / 1e3
            print(f"S={S} pass {repeat}: {name}: do_bench {ms:.3f} ms, host {host_ms:.3f} ms a call, "
                  f"GPU kernels {gpu_ms:.3f} ms a call", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
