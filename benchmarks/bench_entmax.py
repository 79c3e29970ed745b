"""α-entmax (Triton) against torch.softmax on the same tensor, forward and forward+backward.

CUDA only. Usage (from the repository root):

    PYTHONPATH=. python benchmarks/bench_entmax.py [--dtype bf16] [--alpha 1.5] [--out DIR] [--sweep]

Shapes are ``[N, n]`` with ``N·n ≈ 134M`` elements (the 1M × 128 and 262144 × 512 cases
included), fewer rows where memory is short. Times are medians of ``triton.testing.do_bench``.
Targets (issue "α-entmax as torch.library operators"): forward ≤ 3× softmax forward and
forward+backward ≤ 4× softmax forward+backward. ``--out DIR`` writes ``entmax_bench.md`` and
``entmax_bench.json``; ``--sweep`` also times alternative launch configurations of the kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DEFAULT_SHAPES = [(1 << 20, 128), (262144, 512), (131072, 1024), (32768, 4096)]
FWD_TARGET, FWD_BWD_TARGET = 3.0, 4.0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--shapes", type=str, default=None, help="comma-separated NxM list, e.g. 262144x512,4096x8192")
    ap.add_argument("--out", type=Path, default=None, help="write entmax_bench.md and entmax_bench.json here")
    ap.add_argument("--sweep", action="store_true", help="also time alternative kernel launch configurations")
    ap.add_argument("--warmup", type=int, default=25, help="do_bench warmup (ms)")
    ap.add_argument("--rep", type=int, default=100, help="do_bench repetitions (ms)")
    return ap.parse_args()


def fit_rows(rows: int, n: int, dtype: torch.dtype) -> int:
    """Fewer rows if x, p, grad, dx and softmax's buffers would not fit in ~60% of free memory."""
    free, _ = torch.cuda.mem_get_info()
    per_row = n * torch.tensor([], dtype=dtype).element_size() * 8
    return max(1, min(rows, int(0.6 * free) // per_row))


def validate(alpha: float, dtype: torch.dtype) -> None:
    """The CUDA kernels against the PyTorch path on one masked case, before any timing."""
    from custom_ops.entmax import torch_impl
    from dash_flex.entmax import entmax

    gen = torch.Generator(device="cuda").manual_seed(0)
    x = (3 * torch.randn(4096, 512, device="cuda", generator=gen)).to(dtype)
    x[::7, ::3] = -torch.inf
    x[0] = -torch.inf
    x.requires_grad_()
    p = entmax(x, alpha=alpha)
    g = torch.randn_like(p)
    (dx,) = torch.autograd.grad(p, x, g)
    p_ref = torch_impl.entmax_forward(x.detach().double(), alpha)
    dx_ref = torch_impl.entmax_backward(p.detach().double(), g.double(), alpha)
    eps = torch.finfo(dtype).eps
    fwd_ok = ((p.double() - p_ref).abs() <= eps * p_ref.abs() + 1e-6).all().item()
    bwd_ok = ((dx.double() - dx_ref).abs() <= eps * dx_ref.abs() + 1e-5 * dx_ref.abs().max() + 1e-6).all().item()
    if not (fwd_ok and bwd_ok and torch.isfinite(dx).all()):
        raise SystemExit(f"validation failed: forward ok={fwd_ok}, backward ok={bwd_ok}")
    print(f"validated: CUDA kernels match the PyTorch path (alpha={alpha}, {dtype}, 4096x512, masked rows)")


def time_case(rows: int, n: int, alpha: float, dtype: torch.dtype, warmup: int, rep: int) -> dict:
    from triton.testing import do_bench

    from dash_flex.entmax import entmax

    x = torch.randn(rows, n, device="cuda", dtype=dtype).mul_(3).requires_grad_()
    g = torch.randn_like(x)

    def bench(fn) -> float:
        return float(do_bench(fn, warmup=warmup, rep=rep, grad_to_none=[x], return_mode="median"))

    with torch.no_grad():
        ent_f = bench(lambda: entmax(x, alpha=alpha))
        soft_f = bench(lambda: torch.softmax(x, dim=-1))
    ent_fb = bench(lambda: entmax(x, alpha=alpha).backward(g))
    soft_fb = bench(lambda: torch.softmax(x, dim=-1).backward(g))
    nbytes = x.numel() * x.element_size()
    return {
        "rows": rows,
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "alpha": alpha,
        "entmax_fwd_ms": ent_f,
        "softmax_fwd_ms": soft_f,
        "fwd_ratio": ent_f / soft_f,
        "entmax_fwd_bwd_ms": ent_fb,
        "softmax_fwd_bwd_ms": soft_fb,
        "fwd_bwd_ratio": ent_fb / soft_fb,
        "entmax_fwd_gbps": 2 * nbytes / ent_f / 1e6,
        "fwd_within_target": ent_f / soft_f <= FWD_TARGET,
        "fwd_bwd_within_target": ent_fb / soft_fb <= FWD_BWD_TARGET,
    }


def sweep_case(rows: int, n: int, alpha: float, dtype: torch.dtype, warmup: int, rep: int) -> list[dict]:
    """Forward and backward kernel times for alternative (rows per program, warps) choices."""
    import triton
    from triton.testing import do_bench

    from custom_ops.entmax import triton_kernels as tk

    x = torch.randn(rows, n, device="cuda", dtype=dtype).mul_(3)
    p = tk.entmax_forward(x, alpha)
    g = torch.randn_like(p)
    block = max(16, triton.next_power_of_2(n))
    configs = [tk.forward_config(n)]
    if block <= tk.MAX_REGISTER_BLOCK:
        for r in (1, 2, 4, 8, 16):
            for w in (1, 2, 4, 8, 16):
                per_thread = r * block // (32 * w)
                if 2 <= per_thread <= 64 and r * block <= 16384:
                    configs.append(tk.LaunchConfig(block=block, rows=r, num_warps=w))
    else:
        configs += [tk.LaunchConfig(chunk=c, num_warps=w) for c in (1024, 2048, 4096, 8192) for w in (4, 8, 16)]
    out = []
    for i, cfg in enumerate(configs):
        try:
            f = do_bench(lambda cfg=cfg: tk.entmax_forward(x, alpha, cfg), warmup=warmup, rep=rep, return_mode="median")
            b = do_bench(
                lambda cfg=cfg: tk.entmax_backward(p, g, alpha, cfg), warmup=warmup, rep=rep, return_mode="median"
            )
        except Exception as e:  # a config that does not compile (e.g. out of registers) is reported, not fatal
            out.append({"config": repr(cfg), "default": i == 0, "error": f"{type(e).__name__}: {str(e)[:80]}"})
            continue
        out.append({"config": repr(cfg), "default": i == 0, "fwd_ms": float(f), "bwd_ms": float(b)})
    return out


def to_markdown(results: list[dict], gpu: str, sweeps: dict) -> str:
    lines = [
        f"GPU: {gpu}; torch {torch.__version__}; medians of triton.testing.do_bench (ms).",
        "",
        "| shape | dtype | α | entmax fwd | softmax fwd | ratio (≤3) | entmax fwd+bwd | softmax fwd+bwd | ratio (≤4) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']}×{r['n']} | {r['dtype']} | {r['alpha']} "
            f"| {r['entmax_fwd_ms']:.3f} | {r['softmax_fwd_ms']:.3f} "
            f"| {r['fwd_ratio']:.2f}{'' if r['fwd_within_target'] else ' ✗'} | {r['entmax_fwd_bwd_ms']:.3f} "
            f"| {r['softmax_fwd_bwd_ms']:.3f} | {r['fwd_bwd_ratio']:.2f}{'' if r['fwd_bwd_within_target'] else ' ✗'} |"
        )
    for shape, rows in sweeps.items():
        lines += ["", f"Launch-config sweep, {shape} (kernel only):", ""]
        lines += ["| config | fwd ms | bwd ms |", "|---|---|---|"]
        for row in sorted(rows, key=lambda r: r.get("fwd_ms", float("inf"))):
            mark = " (default)" if row["default"] else ""
            if "error" in row:
                lines.append(f"| {row['config']}{mark} | {row['error']} | |")
            else:
                lines.append(f"| {row['config']}{mark} | {row['fwd_ms']:.3f} | {row['bwd_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    if not torch.cuda.is_available():
        print("bench_entmax.py needs a CUDA device (it times the Triton kernels); none is visible.", file=sys.stderr)
        return 2
    import dash_flex  # noqa: F401  (registers the operators)

    dtype = DTYPES[args.dtype]
    shapes = DEFAULT_SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    gpu = torch.cuda.get_device_name()
    print(f"GPU: {gpu}")
    validate(args.alpha, dtype)

    results, sweeps = [], {}
    for rows, n in shapes:
        rows_fit = fit_rows(rows, n, dtype)
        if rows_fit < rows:
            print(f"[{rows}x{n}] reduced to {rows_fit} rows to fit in memory")
        r = time_case(rows_fit, n, args.alpha, dtype, args.warmup, args.rep)
        results.append(r)
        print(
            f"[{rows_fit}x{n}] fwd {r['entmax_fwd_ms']:.3f} ms ({r['fwd_ratio']:.2f}x softmax), "
            f"fwd+bwd {r['entmax_fwd_bwd_ms']:.3f} ms ({r['fwd_bwd_ratio']:.2f}x softmax)",
            flush=True,
        )
        if args.sweep:
            sweeps[f"{rows_fit}x{n}"] = sweep_case(rows_fit, n, args.alpha, dtype, args.warmup, args.rep)
        torch.cuda.empty_cache()

    table = to_markdown(results, gpu, sweeps)
    print()
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "entmax_bench.md").write_text(table)
        payload = {"gpu": gpu, "torch": torch.__version__, "results": results, "sweeps": sweeps}
        (args.out / "entmax_bench.json").write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.out / 'entmax_bench.md'} and {args.out / 'entmax_bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
