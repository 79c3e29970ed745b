"""Which launches of the grouped entmax kernel hang with the early-exit Newton loop (GPU).

    PYTHONPATH=. python scripts/probe_entmax_exit.py CASE [--out DIR]

One case per process (a hung kernel is killed with its process; run under ``timeout``). Each
case runs the score GEMM of one query chunk, then ``_group_entmax`` on it, and prints ``done``
after a synchronise; the compiled kernel's TTGIR and PTX go to ``--out``. ``time`` instead times
every chunk of the 32K and 128K benchmark inputs with the early exit on and off (on only where
it does not hang: the case list below says which).

Context (docs/benchmarks.md, session 10): at 128K the first chunk (rows 0–1023, a 16-block
register row, (2 rows, 1 warp)) never finished with the early exit and finished in 0.11 ms
without it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import split_kernels as sk  # noqa: E402
from custom_ops.entmax.torch_impl import solver_schedule  # noqa: E402

# case: (seq, chunk index, width override or None, (rows, warps) or None, early exit, data)
CASES = {
    "table": (131072, 0, None, None, True, "topic"),
    "fixed": (131072, 0, None, None, False, "topic"),
    "rows1": (131072, 0, None, (1, 1), True, "topic"),
    "warps2": (131072, 0, None, (2, 2), True, "topic"),
    "width64": (131072, 0, 64, None, True, "topic"),
    "chunk1": (131072, 1, None, None, True, "topic"),
    "randn": (131072, 0, None, None, True, "randn"),
    "seq1024": (1024, 0, None, None, True, "topic"),
}


def setup(S: int):
    q, k, _ = topic_inputs(S)
    k_bar = block_summaries(k, None, BS)
    B, Hq, Sq, _ = q.shape
    Hkv, nb = k_bar.shape[1], k_bar.shape[2]
    NB = max(16, triton.next_power_of_2(nb))
    chunk = sk.chunk_rows(B, Hq, nb, Sq)
    z = torch.empty(B, Hq, chunk, -(-nb // 16) * 16, device=q.device, dtype=torch.float32)[..., :nb]
    probs = torch.empty(B, Hkv, Sq, nb, device=q.device, dtype=torch.float32)
    mean_log = torch.empty(B, Hkv, Sq, device=q.device, dtype=torch.float32)
    parts = sk.split_summaries(k_bar, q.dtype)
    return q, parts, z, probs, mean_log, NB, chunk, solver_schedule(1.5, nb, torch.float32)


def run_case(name: str, out: Path) -> None:
    S, index, width_override, config, early, data = CASES[name]
    q, parts, z, probs, mean_log, NB, chunk, schedule = setup(S)
    Sq = q.shape[2]
    row0 = index * chunk
    n_rows = min(chunk, Sq - row0)
    sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS)
    if data == "randn":
        z.copy_(3 * torch.randn_like(z))
    width = width_override or sk.chunk_width(NB, True, row0, n_rows, Sq, 0, BS)
    rows, warps = config or sk.entmax_config(width)
    torch.cuda.synchronize()
    print(f"{name}: S={S} rows {row0}+{n_rows} width {width} ({rows}, {warps}) early={early} data={data}", flush=True)
    handle = sk._group_entmax[(triton.cdiv(n_rows, rows), q.shape[0] * probs.shape[1])](
        z, probs, mean_log, Sq, row0, probs.shape[3], probs.shape[1], 0,
        *z.stride(), *probs.stride(), *mean_log.stride()[:2], 0.5, 2.0, -0.5,
        GROUP=q.shape[1] // probs.shape[1], ROWS=rows, NB=width, NB_OUT=NB, SUB=min(width, 128), BLOCK_SIZE=BS,
        CAUSAL=True, MODE=schedule[0], N_BISECT=schedule[1], N_NEWTON=schedule[2], EARLY_EXIT=early,
        num_warps=warps,
    )  # fmt: skip
    for kind in ("ttgir", "ptx"):
        (out / f"{name}.{kind}").write_text(handle.asm[kind])
    t0 = time.perf_counter()
    torch.cuda.synchronize()
    print(f"{name}: done in {1e3 * (time.perf_counter() - t0):.2f} ms", flush=True)


def time_chunks() -> None:
    for S in (32768, 131072):
        q, parts, z, probs, mean_log, NB, chunk, schedule = setup(S)
        Sq = q.shape[2]
        totals = {True: 0.0, False: 0.0}
        for row0 in range(0, Sq, chunk):
            n_rows = min(chunk, Sq - row0)
            width = sk.chunk_width(NB, True, row0, n_rows, Sq, 0, BS)
            rows, warps = sk.entmax_config(width)
            sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS)
            for early in (False, True) if width >= 64 else (False,):
                fn = lambda: sk.launch_group_entmax(z, probs, mean_log, row0, n_rows, width, NB, 1.5, True, 0, BS,  # noqa: E731
                                                    schedule, rows, warps, early_exit=early)  # fmt: skip
                ms = triton.testing.do_bench(fn, warmup=5, rep=20)
                totals[early] += ms
                print(f"S={S} rows {row0} width {width} ({rows}, {warps}) early={early}: {ms:.3f} ms", flush=True)
        print(f"S={S} entmax over the chunks: fixed {totals[False]:.3f} ms, early (widths >= 64) {totals[True]:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=[*CASES, "time"])
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    time_chunks() if args.case == "time" else run_case(args.case, args.out)


if __name__ == "__main__":
    main()
