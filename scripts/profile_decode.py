"""Where a decode step's time goes on the GPU, and the split-KV kernel's launch configs.

    PYTHONPATH=. python scripts/profile_decode.py [--lengths 32768 131072] [--sweep]

Same cache and query as benchmarks/bench_decode.py (B=8, Hq=32, Hkv=8, D=128, bf16, block 64,
four key topics: about 25% of the blocks kept). Every piece is captured into a CUDA graph and
timed over graph replays (CUDA events, median of 5 × 50 replays), so the numbers are device
time without Python launch overhead, like a ``reduce-overhead`` compiled step:

* ``sdpa_cudnn`` / ``sdpa_flash``: dense decode on the same cache (the baseline);
* ``decode_selection``: the coarse stage (scores + select kernels);
* ``sparse_decode``: the fine stage (split-KV + merge kernels) at the default launch;
* ``attend``: both, as ``DashKVCache.attend`` runs them;
* ``--sweep``: the fine stage per (num_warps, num_stages, target programs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_decode import ALPHA, BS, SIGMA, fill_topic_cache, graph_ms  # noqa: E402

from custom_ops.sparse_decode import sparse_decode  # noqa: E402
from custom_ops.sparse_decode import triton_kernels as decode_kernels  # noqa: E402
from dash_flex.cache import DashKVCache  # noqa: E402

B, HQ, HKV, D = 8, 32, 8, 128


def profile_length(L: int, sweep: bool) -> list[str]:
    cache = DashKVCache(B, HKV, L, D, block_size=BS, dtype=torch.bfloat16, device="cuda")
    q = fill_topic_cache(cache, L, 4, seed=L, chunk=min(L, 8192))
    K, V = cache.key[:, :, :L], cache.value[:, :, :L]
    rows = []

    def record(name: str, fn) -> float:
        ms = graph_ms(fn)
        rows.append(f"| {L} | {name} | {ms:.4f} |")
        print(rows[-1], flush=True)
        return ms

    for name, backend in (("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa_flash", SDPBackend.FLASH_ATTENTION)):
        with sdpa_kernel(backend):
            record(name, lambda: F.scaled_dot_product_attention(q, K, V, enable_gqa=True))
    with torch.no_grad():
        sel = cache.decode_selection(q, alpha=ALPHA, sigma=SIGMA)
        kept = float(sel.count.float().mean() / cache.num_blocks)
        rows.append(f"| {L} | kept blocks | {100 * kept:.1f}% |")
        print(rows[-1], flush=True)
        record("decode_selection", lambda: cache.decode_selection(q, alpha=ALPHA, sigma=SIGMA))
        q0, scale = q[:, :, 0], D**-0.5

        def fine():
            return sparse_decode(q0, cache.key, cache.value, sel.block_list, sel.count, sel.prior, sel.pos, scale, BS)

        record("sparse_decode (default launch)", fine)
        record("attend (selection + fine stage)", lambda: cache.attend(q, alpha=ALPHA, sigma=SIGMA, decode_kernel=True))
        if sweep:
            nb = cache.num_blocks
            for warps in (4, 8):
                for stages in (1, 2, 3, 4):
                    for target in (264, 528, 1056, 2112):
                        n_splits = decode_kernels.num_splits(B * HKV, nb, target)

                        def fn(warps=warps, stages=stages, n_splits=n_splits):
                            return decode_kernels.sparse_decode_launch(
                                q0, cache.key, cache.value, sel.block_list, sel.count, sel.prior, sel.pos,
                                scale, BS, n_splits, num_warps=warps, num_stages=stages,
                            )  # fmt: skip

                        try:
                            record(f"sparse_decode warps={warps} stages={stages} programs≈{target}", fn)
                        except Exception as exc:  # an out-of-resources config: report and go on
                            print(f"| {L} | warps={warps} stages={stages} programs≈{target} | failed {exc!r:.80} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--sweep", action="store_true", help="time the fine stage per launch config")
    args = parser.parse_args()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}; CUDA-graph replay times")
    print("| L | piece | ms |\n|---|---|---|")
    for L in args.lengths:
        profile_length(L, args.sweep)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
