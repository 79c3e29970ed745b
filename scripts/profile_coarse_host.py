"""How much of the timed coarse stage is the host's (GPU): ``fused_select_only`` at 32K.

    PYTHONPATH=. python scripts/profile_coarse_host.py [--seq 32768] [--trace DIR]

``do_bench`` times each call from an event recorded before the host starts it, so host work
before the first kernel is GPU idle time inside the measurement. Printed per call (medians):
the benchmark's time; the host's time to return from the call; the GPU time of one call after a
synchronisation (event to event); the time per call of 20 calls queued back to back (the host
runs ahead where it can); and, from torch.profiler's timeline of one call started on an idle GPU
(after warm-up calls), each kernel's duration and the time from the call's start to its first
kernel (the profiler's own overhead inflates the host's part). Without gradients, as the
benchmark times it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import triton
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import coarse_selection_rows  # noqa: E402


def host_and_gpu_ms(fn, reps: int = 30) -> tuple[float, float]:
    """Medians over ``reps`` calls, each after a synchronisation: the host's time to return, and
    the GPU's from an event before the call to one after it."""
    host, gpu = [], []
    for _ in range(reps):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        host.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
        gpu.append(start.elapsed_time(end))
    return statistics.median(host), statistics.median(gpu)


def queued_ms(fn, calls: int = 20) -> float:
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls


def kernel_timeline(fn, trace_dir: str | None, name: str, calls: int = 4) -> None:
    """The kernels of the last of ``calls`` calls, each started on an idle GPU (a synchronisation
    before it), the earlier ones warming the profiler up; times from the call's start."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            torch.cuda.synchronize()
            with record_function(f"call {i}"):
                fn()
            torch.cuda.synchronize()
    marks = [e for e in prof.events() if e.name == f"call {calls - 1}"]
    if not marks:
        print(f"{name}: the profiler saw no host range for the last call")
        return
    t_call = marks[0].time_range.start
    events = [
        e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.start >= t_call
    ]
    if not events:
        print(f"{name}: the profiler saw no kernels in the last call")
        return
    events.sort(key=lambda e: e.time_range.start)
    first, last = events[0].time_range.start, max(e.time_range.end for e in events)
    busy = sum(e.time_range.elapsed_us() for e in events)
    print(f"{name} (profiled): {len(events)} GPU activities, busy {busy / 1e3:.3f} ms; call start -> first kernel "
          f"{(first - t_call) / 1e3:.3f} ms; first -> last kernel end {(last - first) / 1e3:.3f} ms")  # fmt: skip
    for e in events:
        at, took = (e.time_range.start - t_call) / 1e3, e.time_range.elapsed_us() / 1e3
        print(f"  +{at:7.3f} ms {took:7.3f} ms  {e.name[:90]}")
    if trace_dir:
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(Path(trace_dir) / f"{name}.json"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=32768)
    parser.add_argument("--trace", default=None, help="folder for chrome traces")
    args = parser.parse_args()
    S = args.seq
    q, k, _ = topic_inputs(S)
    summaries = block_summaries(k, None, BS)
    calls = {
        "fused_select_only": lambda: coarse_selection_rows(q, block_summaries(k, None, BS), 1.5, 1.0, True, S, BS),
        "coarse_rows_op": lambda: coarse_selection_rows(q, summaries, 1.5, 1.0, True, S, BS),
        "block_summaries": lambda: block_summaries(k, None, BS),
    }
    print(f"{torch.cuda.get_device_name()} S={S}")
    torch.set_grad_enabled(False)  # as the benchmark times it (torch.no_grad)
    for name, fn in calls.items():
        bench = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")
        host, gpu = host_and_gpu_ms(fn)
        print(f"{name}: do_bench {bench:.3f} ms; host {host:.3f} ms; GPU after sync {gpu:.3f} ms; "
              f"queued {queued_ms(fn):.3f} ms per call", flush=True)  # fmt: skip
    for name in ("fused_select_only", "coarse_rows_op"):
        kernel_timeline(calls[name], args.trace, name)


if __name__ == "__main__":
    main()
