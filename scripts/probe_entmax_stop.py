"""The coarse stage's inference launch with and without stopping converged rows (GPU).

For each length, on the attention benchmark's inputs: ``coarse_selection_rows_launch`` (score GEMM +
grouped entmax, split register rows, as ``fused_select_only`` runs it) with ``stop = 0`` (every
row takes the schedule's Newton steps), ``1`` (converged rows frozen, every step run) and the
default (:func:`stop_rule`: one-row programs skip the steps left). Prints the medians (ms), the
largest |p̄ difference| against every step, whether 1 and the default give the same bits, and the
entmax kernel alone per chunk width under 0 and the default.

    PYTHONPATH=. python scripts/probe_entmax_stop.py [--seq 32768 131072]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import split_kernels as sk  # noqa: E402
from custom_ops.entmax.torch_impl import solver_schedule  # noqa: E402


def entmax_per_width(q: torch.Tensor, k_bar: torch.Tensor, stops: tuple) -> dict:
    """The grouped entmax kernel alone on each chunk of the inference launch (the first chunk of
    each width at 128K), summed per stop setting."""
    B, Hq, Sq, _ = q.shape
    Hkv, nb = k_bar.shape[1], k_bar.shape[2]
    NB = max(16, triton.next_power_of_2(nb))
    chunk = sk.chunk_rows(B, Hq, nb, Sq)
    z = torch.empty(B, Hq, chunk, -(-nb // 16) * 16, device=q.device, dtype=torch.float32)[..., :nb]
    probs = torch.empty(B, Hkv, Sq, nb, device=q.device, dtype=torch.float32)
    mean_log = torch.empty(B, Hkv, Sq, device=q.device, dtype=torch.float32)
    parts = sk.split_summaries(k_bar, q.dtype)
    schedule = solver_schedule(1.5, nb, torch.float32)
    plan = {}
    for row0 in range(0, Sq, chunk):
        n_rows = min(chunk, Sq - row0)
        plan.setdefault(sk.chunk_width(NB, True, row0, n_rows, Sq, 0, BS), (row0, n_rows))
    totals = {stop: 0.0 for stop in stops}
    for width, (row0, n_rows) in sorted(plan.items()):
        sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS)
        main, tail = sk.inference_row_split(width, True, row0, n_rows, Sq, 0, BS)
        rows, warps = sk.entmax_config(width)
        cells = []
        for stop in stops:
            ms = triton.testing.do_bench(
                lambda: sk.launch_group_entmax(
                    z, probs, mean_log, row0, n_rows, main, NB, 1.5, True, 0, BS, schedule, rows, warps, tail, stop
                ),  # fmt: skip
                warmup=5,
                rep=40,
            )
            totals[stop] += ms
            cells.append(f"stop {stop}: {ms:.3f}")
        print(f"  width {width} ({main} + {tail}, rows {row0}+{n_rows}, {rows}x{warps}): " + ", ".join(cells))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[32768, 131072])
    args = parser.parse_args()
    print(torch.cuda.get_device_name())
    for S in args.seq:
        q, k, _ = topic_inputs(S)
        k_bar = block_summaries(k, None, BS)
        del k

        def launch(stop):
            return sk.coarse_selection_rows_launch(q, k_bar, 1.5, 1.0, True, S, BS, tails=True, stop=stop)

        outs = {stop: launch(stop)[0] for stop in (0, 1, None)}
        diff = (outs[None] - outs[0]).abs().max().item()
        same = torch.equal(outs[None], outs[1])
        support = ((outs[None] > 0) != (outs[0] > 0)).float().mean().item()
        del outs
        order = (0, None, 0, None)  # interleaved, twice each
        ms = [triton.testing.do_bench(lambda: launch(stop), warmup=3, rep=30) for stop in order]
        print(
            f"S={S}: coarse rows launch every step {ms[0]:.3f} / {ms[2]:.3f} ms, "
            f"stopping (default) {ms[1]:.3f} / {ms[3]:.3f} ms; "
            f"max |p̄ diff| {diff:.2e}, support flips {support:.2e}, stop 1 == default bitwise: {same}"
        )
        per_width = entmax_per_width(q, k_bar, (0, None))
        print(f"  entmax kernel sum: every step {per_width[0]:.3f} ms, stopping {per_width[None]:.3f} ms")

        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
