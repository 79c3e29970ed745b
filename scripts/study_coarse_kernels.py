"""Where the coarse forward's time goes, kernel by kernel (GPU): the score GEMM, the grouped entmax
solver and the block-major prior writer, each timed alone on every query chunk of the attention
benchmark's inputs, and the entmax kernel and its VJP under launch configs (rows, warps).

    PYTHONPATH=. python scripts/study_coarse_kernels.py [--seq 32768] [--ncu]

``--ncu``: run the whole coarse launch once, after a warm-up, for Nsight Compute to profile
(``ncu --kernel-name regex:_group_entmax ...``); no timing.
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
from custom_ops.entmax.triton_kernels import piece_width  # noqa: E402

# (BM, BN, warps, stages); shared memory on sm_90 (local compile): (128, 64, 8, 3) 160 KB (one program
# per SM), (128, 64, 8, 2) 128 KB, (128, 64, 4, 2) 112 KB, (64, 64, 4, 2) 96 KB, (128, 32, 4, 3) 96 KB,
# (64, 32, 4, 3) 72 KB. On the H200 (run 70) (128, 64, 8, 3) took 160 KB and 74 registers. The
# shipped tile since session 14 is (128, 32, 8, 4) (split_kernels.SCORE_LOOP_TILE).
GEMM_LOOP_TILES = [
    (128, 64, 8, 3),
    (128, 64, 8, 2),
    (128, 64, 4, 2),
    (64, 64, 4, 2),
    (128, 32, 4, 3),
    (64, 32, 4, 3),
    (256, 64, 8, 2),
    (128, 64, 8, 4),
    (128, 64, 4, 3),
    (128, 32, 4, 4),
    (128, 32, 8, 4),
    (256, 32, 8, 4),
    (256, 64, 8, 3),
]


def chunks(q: torch.Tensor, k_bar: torch.Tensor):
    """Per query chunk of the coarse launch: ``(row0, n_rows, width)`` and the shared buffers."""
    B, Hq, Sq, _ = q.shape
    nb = k_bar.shape[2]
    NB = max(16, triton.next_power_of_2(nb))
    chunk = sk.chunk_rows(B, Hq, nb, Sq)
    out = []
    for row0 in range(0, Sq, chunk):
        n_rows = min(chunk, Sq - row0)
        out.append((row0, n_rows, sk.chunk_width(NB, True, row0, n_rows, Sq, 0, BS)))
    return out, chunk, NB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=32768)
    parser.add_argument("--ncu", action="store_true")
    parser.add_argument("--widths", type=int, nargs="*", help="time only the chunks of these widths")
    parser.add_argument("--gemm-only", action="store_true", help="time only the score GEMMs")
    parser.add_argument("--configs", nargs="*", help="(rows, warps) candidates as ROWSxWARPS, e.g. 1x1 2x4")
    parser.add_argument(
        "--tail-widths",
        type=int,
        nargs="*",
        default=[],
        help="also time the inference launch's split rows (main + tail) for chunks of these widths",
    )
    parser.add_argument(
        "--newton", type=int, default=None, help="Newton steps of the timed forward (default: the schedule's)"
    )
    args = parser.parse_args()
    S = args.seq
    q, k, _ = topic_inputs(S)
    k_bar = block_summaries(k, None, BS)
    launch = (q, k_bar, 1.5, 1.0, 1.0, True, S, BS, -(-S // 128) * 128, -(-S // BS))
    if args.ncu:
        for _ in range(2):
            sk.coarse_selection_split_launch(*launch)
        torch.cuda.synchronize()
        return
    B, Hq, Sq, _ = q.shape
    Hkv, nb = k_bar.shape[1], k_bar.shape[2]
    plan, chunk, NB = chunks(q, k_bar)
    z = torch.empty(B, Hq, chunk, -(-nb // 16) * 16, device=q.device, dtype=torch.float32)[..., :nb]
    probs = torch.empty(B, Hkv, Sq, nb, device=q.device, dtype=torch.float32)
    mean_log = torch.empty(B, Hkv, Sq, device=q.device, dtype=torch.float32)
    parts = sk.split_summaries(k_bar, q.dtype)
    mode, n_bisect, n_newton = solver_schedule(1.5, nb, torch.float32)
    fwd_newton = n_newton if args.newton is None else args.newton

    def entmax(row0, n_rows, width, rows, warps, newton, tail=0):
        sk.launch_group_entmax(
            z, probs, mean_log, row0, n_rows, width, NB, 1.5, True, 0, BS, (mode, n_bisect, newton), rows, warps, tail
        )

    # (rows, warps) candidates; a thread holds width·rows / (32·warps) scores per tile (≤ 32: no spills)
    candidates = [(16, 1), (8, 1), (4, 1), (2, 1), (1, 1), (8, 2), (4, 2), (2, 2), (1, 2), (2, 4), (1, 4)]
    if args.configs:
        candidates = [tuple(int(n) for n in c.split("x")) for c in args.configs]
    if args.widths:
        plan = [c for c in plan if c[2] in args.widths]
    grad_prior = torch.randn(B, Hkv, -(-nb // 64) * 64, -(-Sq // 128) * 128, device=q.device)
    split = q.dtype != torch.float32
    z_split = z.view(torch.bfloat16) if split else z

    def vjp(row0, n_rows, width, rows, warps):
        sk._group_entmax_vjp[(triton.cdiv(n_rows, rows), B * Hkv)](
            z, z_split, probs, grad_prior, probs, Sq, row0, nb, Hkv, 0, z.shape[-1],
            *z.stride(), *probs.stride(), *grad_prior.stride(), *probs.stride(), 0.5, 2.0, -0.5, 1.0,
            GROUP=Hq // Hkv, ROWS=rows, NB=width, NB_OUT=NB, SUB=piece_width(width, rows, warps), BLOCK_SIZE=BS,
            CAUSAL=True, MODE=mode, N_BISECT=n_bisect, N_NEWTON=n_newton, HAS_GRAD_PROBS=False, HAS_GRAD_PRIOR=True,
            SPLIT=split, num_warps=warps,
        )  # fmt: skip

    print(f"S={S}: {len(plan)} chunks of {chunk} rows, widths {[w for *_, w in plan]}")
    print("| chunk width | kernel | " + " | ".join(f"{r}×{w}" for r, w in candidates) + " |")
    print("|---|---|" + "---|" * len(candidates))
    totals = {
        "scores": 0.0,
        "scores tiled": 0.0,
        "entmax (current)": 0.0,
        "entmax (best)": 0.0,
        "vjp (current)": 0.0,
        "vjp (best)": 0.0,
    }
    if len(plan) > 16:  # 128K: 128 chunks; time the first chunk of each width and the last one
        firsts = {width: (row0, n_rows, width) for row0, n_rows, width in reversed(plan)}
        plan = sorted(set(firsts.values()) | {plan[-1]})
        print(f"timed chunks only: {plan} (sums below cover these)")
    for row0, n_rows, width in plan:
        score = lambda: sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS)  # noqa: E731
        score()
        score_ms = triton.testing.do_bench(score, warmup=5, rep=40)
        totals["scores"] += score_ms
        chunk_times = []
        tiled_ms = triton.testing.do_bench(
            lambda: sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS, looped=0), warmup=5, rep=40
        )
        totals["scores tiled"] += tiled_ms
        chunk_times.append(f"tiled {tiled_ms:.3f}")
        for tile in GEMM_LOOP_TILES:  # the same output as the tiled GEMM
            key = f"scores looped {tile}"
            try:
                ms = triton.testing.do_bench(
                    lambda: sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS, tile=tile, looped=1),
                    warmup=5,
                    rep=40,
                )
            except Exception as exc:  # a tile the card refuses (shared memory): say so, go on
                chunk_times.append(f"{key} failed ({type(exc).__name__})")
                continue
            totals[key] = totals.get(key, 0.0) + ms
            chunk_times.append(f"{key} {ms:.3f}")
        if args.gemm_only:  # one line a chunk as it comes (a stall elsewhere must not lose them)
            print(f"| {width} (rows {row0}+{n_rows}) | scores {score_ms:.3f} | " + " | ".join(chunk_times) + " |")
            continue
        fwd, bwd = {}, {}
        fits = [(r, w) for r, w in candidates if width * r <= 64 * 32 * w]
        for rows, warps in fits:  # every forward first: the VJP below overwrites z with dz
            fwd[rows, warps] = triton.testing.do_bench(
                lambda: entmax(row0, n_rows, width, rows, warps, fwd_newton), warmup=5, rep=40
            )
        main, tail = sk.inference_row_split(width, True, row0, n_rows, Sq, 0, BS, tuple(args.tail_widths))
        split_times = {}
        if tail:  # the inference launch's split rows, timed under the same configs
            for rows, warps in fits:
                split_times[rows, warps] = triton.testing.do_bench(
                    lambda: entmax(row0, n_rows, main, rows, warps, fwd_newton, tail), warmup=5, rep=40
                )
        for rows, warps in fits:  # the VJP with a fresh score GEMM before each call, less its time
            both = triton.testing.do_bench(lambda: (score(), vjp(row0, n_rows, width, rows, warps)), warmup=5, rep=40)
            bwd[rows, warps] = both - score_ms
        score()
        current = sk.entmax_config(width)
        for name, times in (("entmax", fwd), (f"entmax {main} + {tail}", split_times), ("vjp", bwd)):
            if not times:
                continue
            cells = " | ".join(f"{times[c]:.3f}" if c in times else "—" for c in candidates)
            print(f"| {width} | {name} | {cells} |")
            if name.startswith("entmax ") and tail:  # the split row replaces the whole one
                totals["entmax split (current)"] = totals.get("entmax split (current)", 0.0) + times.get(
                    current, float("nan")) - fwd.get(current, float("nan"))  # fmt: skip
                totals["entmax split (best)"] = totals.get("entmax split (best)", 0.0) + min(times.values()) - min(
                    fwd.values())  # fmt: skip
                continue
            totals[f"{name} (current)"] += times.get(current, float("nan"))
            totals[f"{name} (best)"] += min(times.values())
    print("\n| kernel | ms (sum over chunks) |\n|---|---|")
    for name, ms in totals.items():
        if args.gemm_only and not name.startswith("scores"):
            continue
        print(f"| {name} | {ms:.3f} |")
    if not args.gemm_only:  # the whole launch is what stalled at 128K (docs/benchmarks.md, session 9)
        whole = triton.testing.do_bench(lambda: sk.coarse_selection_split_launch(*launch), warmup=5, rep=40)
        print(f"| whole coarse forward launch | {whole:.3f} |")


if __name__ == "__main__":
    main()
