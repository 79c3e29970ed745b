"""Could an exact finishing step replace Newton steps in the α = 1.5 entmax solver? (CPU study)

    python scripts/study_entmax_exact_step.py [--seq 4096]

The solver (custom_ops/entmax/triton_kernels.py) runs 7 Newton steps on ``h(τ) = ‖[s − τ]_+‖₂ − 1``
from ``τ = −1`` on ``s = (z − max z)/2``. Newton approaches the root from the left. At ``τ``, with
``x = [s − τ]_+``, support size ``k``, ``Y1 = Σ x`` and ``Y2 = Σ x²`` (the Newton step's own sums
plus a count), the root *on that support* solves ``Σ (x_i − δ)² = 1``:
``δ = (Y2 − 1) / (Y1 + √(Y1² − k(Y2 − 1)))``. It is the true root when the support is already
right, i.e. when ``δ ≤ min x_i`` over the support; otherwise, or when the square root's argument is
negative, the candidate takes a Newton step instead. The schedule ``n`` Newton steps + 1 checked
exact step costs ``2n + 4`` row reductions (the check takes a row min) against 14 for 7 steps.

Float32 emulation of the kernel's arithmetic against a float64 bisection oracle, on the attention
benchmark's coarse rows (as ``study_newton_exit.py``) and on synthetic row families. Prints the
largest ``|p − p*|`` per schedule and family; the float32 floor is ~2e-7.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_newton_exit import probs, scores  # noqa: E402


def newton_step(s: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    x = (s - tau[..., None]).clamp_min(0)
    mass, slope = (x * x).sum(-1), x.sum(-1)
    step = mass * (1 - mass.rsqrt()) / torch.where(slope > 0, slope, 1)
    return tau + torch.where(slope > 0, step, 0)


def exact_step(s: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """The root on the current support where it is the true root, else a Newton step."""
    x = (s - tau[..., None]).clamp_min(0)
    on = x > 0
    k, y1, y2 = on.sum(-1).to(s.dtype), x.sum(-1), (x * x).sum(-1)
    disc = y1 * y1 - k * (y2 - 1)
    delta = (y2 - 1) / (y1 + disc.clamp_min(0).sqrt())
    smallest = torch.where(on, x, float("inf")).amin(-1)
    valid = (disc >= 0) & (delta <= smallest) & (k > 0)
    return torch.where(valid, tau + delta, newton_step(s, tau))


def oracle(s: torch.Tensor) -> torch.Tensor:
    """float64 bisection on Σ [s − τ]_+² = 1 over [−1, 0] (s ≤ 0 with its max at 0), 200 halvings."""
    s = s.double()
    lo, hi = torch.full(s.shape[:-1], -1.0, dtype=s.dtype), torch.zeros(s.shape[:-1], dtype=s.dtype)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        too_much = ((s - mid[..., None]).clamp_min(0) ** 2).sum(-1) >= 1
        lo, hi = torch.where(too_much, mid, lo), torch.where(too_much, hi, mid)
    return probs(s, lo)


def families(n: int, rows: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Synthetic z rows; s = (z − max z)/2 as the solver forms it."""
    z = {
        "gaussian": torch.randn(rows, n, generator=g),
        "gaussian ×10": 10 * torch.randn(rows, n, generator=g),
        "gaussian ×0.01": 0.01 * torch.randn(rows, n, generator=g),
        "gaussian ×1e4": 1e4 * torch.randn(rows, n, generator=g),
        "uniform": torch.rand(rows, n, generator=g),
        "heavy-tailed": torch.randn(rows, n, generator=g) / torch.rand(rows, n, generator=g).clamp_min(1e-3),
        "one dominant": torch.cat([torch.full((rows, 1), 3.0), 0.1 * torch.randn(rows, n - 1, generator=g)], -1),
        "near ties": 1e-3 * torch.randn(rows, n, generator=g),
        "graded": torch.linspace(0, 2, n).expand(rows, n) + 1e-4 * torch.randn(rows, n, generator=g),
        "graded ×4": torch.linspace(0, 8, n).expand(rows, n) + 1e-4 * torch.randn(rows, n, generator=g),
        "graded ×0.25": torch.linspace(0, 0.5, n).expand(rows, n) + 1e-4 * torch.randn(rows, n, generator=g),
        "two levels": _two_levels(n, rows, g),
        "geometric": torch.cumsum(torch.rand(rows, n, generator=g) ** 3, -1) / n**0.5,
    }
    return {name: (v - v.amax(-1, keepdim=True)) * 0.5 for name, v in z.items()}


def _two_levels(n: int, rows: int, g: torch.Generator) -> torch.Tensor:
    """A random number of top entries tied at 0, the rest one random gap below (per row)."""
    top = torch.randint(1, n + 1, (rows, 1), generator=g)
    gap = 2 * torch.rand(rows, 1, generator=g) ** 2
    return torch.where(torch.arange(n)[None, :] < top, 0.0, -gap) + 1e-5 * torch.randn(rows, n, generator=g)


def by_length(lengths: list[int], rows: int) -> None:
    """The largest ``|p − p*|`` over every family per row length and plain Newton count: how many
    steps each register row width needs (the chunk widths the coarse kernels solve at)."""
    g = torch.Generator().manual_seed(1)
    counts = (3, 4, 5, 6, 7)
    print("| n | " + " | ".join(f"Newton × {c}" for c in counts) + " | worst family at the fewest steps |")
    print("|---|" + "---|" * (len(counts) + 1))
    for n in lengths:
        worst = dict.fromkeys(counts, 0.0)
        blame = dict.fromkeys(counts, "")
        for name, s in families(n, rows, g).items():
            want = oracle(s)
            tau = torch.full(s.shape[:-1], -1.0)
            for step in range(1, max(counts) + 1):
                tau = newton_step(s, tau)
                if step in counts:
                    err = (probs(s, tau).double() - want).abs().max().item()
                    if err > worst[step]:
                        worst[step], blame[step] = err, name
        print(f"| {n} | " + " | ".join(f"{worst[c]:.1e}" for c in counts) + f" | {blame[counts[0]]} |", flush=True)


def schedules() -> dict[str, list]:
    out = {f"Newton × {n}": [newton_step] * n for n in (3, 4, 5, 6, 7)}
    out.update({f"Newton × {n} + exact": [newton_step] * n + [exact_step] for n in (1, 2, 3, 4)})
    out["exact × 3"] = [exact_step] * 3
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=4096, help="benchmark rows: sequence length")
    parser.add_argument("--by-length", type=int, nargs="*", help="only the worst error per row length and step count")
    parser.add_argument("--rows", type=int, default=256, help="rows per family")
    args = parser.parse_args()
    if args.by_length:
        by_length(args.by_length, args.rows)
        return
    g = torch.Generator().manual_seed(0)
    rows = {f"{name}, n={n}": s for n in (16, 128, 512, 2048, 8192) for name, s in families(n, args.rows, g).items()}
    bench = scores(args.seq).float()
    rows["benchmark coarse rows"] = bench.reshape(-1, bench.shape[-1])[::7]
    names = list(schedules())
    print("| rows | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    worst = dict.fromkeys(names, 0.0)
    for label, s in rows.items():
        want = oracle(s)
        errs = []
        for name, steps in schedules().items():
            tau = torch.full(s.shape[:-1], -1.0)
            for step in steps:
                tau = step(s, tau)
            err = (probs(s, tau).double() - want).abs().max().item()
            worst[name] = max(worst[name], err)
            errs.append(f"{err:.1e}")
        print(f"| {label} | " + " | ".join(errs) + " |", flush=True)
    print("| **worst** | " + " | ".join(f"**{worst[n]:.1e}**" for n in names) + " |")


if __name__ == "__main__":
    main()
