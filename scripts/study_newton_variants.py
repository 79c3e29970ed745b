"""Newton steps the α = 1.5 entmax solver needs from τ = −1, against two cheaper-looking iterations,
in a float32 emulation of the kernels' loop against the float64 bisection oracle (CPU).

* ``newton``: the kernels' monotone step on ``h(τ) = ‖[s − τ]_+‖₂ − 1`` (2 row sums a step).
* ``exact-on-support``: the larger of the Newton step and the root of the quadratic
  ``Σ_A (s_i − τ)² = 1`` on the current support ``A`` (exact once ``A`` is right), capped at the
  smallest kept ``x`` so that it stays a lower bound (4 row sums a step: also the support's size
  and its smallest entry); ``uncapped``: the same without the cap (may overshoot).
* ``secant``: one Newton step, then secant steps on ``h`` through the last two iterates (one row
  sum a step; from the left on a convex decreasing ``h`` the secant's root stays a lower bound).

For each row family and length: the fewest steps whose result is within 1.5× of the row's float32
floor (the error after 14 Newton steps; at least 3e-7); 99 = not within 16 steps. Families: those
of ``study_newton_start.py`` and adversarial crowds (one top entry, a crowd of ``m`` entries at
``−level`` with a spread, the rest far below), staircases and mixed scales.

    PYTHONPATH=. python scripts/study_newton_variants.py [--n 64 256 512]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_newton_start import families, newton, probs  # noqa: E402

from dash_flex.reference import entmax_bisect  # noqa: E402


def crowd_families(n: int, rows: int = 256) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + n)
    out = {}
    for level in (0.1, 0.3, 0.5, 0.8, 1.0, 1.2, 1.5, 1.8, 1.9, 1.95, 1.99, 1.999):
        for spread in (0.0, 1e-4, 1e-3, 1e-2, 0.1, 0.5):
            for frac in (1 / n, 0.1, 0.5, 1.0):
                m = max(1, int(frac * (n - 1)))
                x = -4.0 - torch.rand(rows, n, generator=g)
                x[:, 1 : m + 1] = -level + spread * torch.randn(rows, m, generator=g)
                x[:, 0] = 0.0
                out[f"crowd L{level} sp{spread} m{m}"] = x
    for top in (0.05, 0.5, 1.0, 2.0, 4.0):
        jitter = 1 + 0.01 * torch.rand(rows, 1, generator=g)
        out[f"linear {top}"] = -torch.linspace(0, top, n)[None] * jitter
        out[f"geometric {top}"] = -(top * torch.logspace(-6, 0, n))[None] * jitter
    out["mixed scales"] = torch.randn(rows, n, generator=g) * torch.exp(3 * torch.randn(rows, 1, generator=g))
    out["log-uniform"] = torch.log(torch.rand(rows, n, generator=g)) * torch.exp(2 * torch.randn(rows, 1, generator=g))
    return out


def exact_on_support(s: torch.Tensor, tau: torch.Tensor, steps: int, capped: bool = True) -> torch.Tensor:
    for _ in range(steps):
        x = (s - tau[:, None]).clamp_min(0)
        kept = x > 0
        mass, slope, size = (x * x).sum(-1), x.sum(-1), kept.sum(-1).float()
        newton_step = mass * (1 - torch.where(mass > 0, mass, 1.0).rsqrt()) / torch.where(slope > 0, slope, 1.0)
        # the smaller root of Σ_A (x_i − δ)² = 1, in the cancellation-free form
        exact = (mass - 1) / (slope + (slope * slope - size * (mass - 1)).clamp_min(0).sqrt())
        if capped:
            exact = torch.minimum(exact, torch.where(kept, x, float("inf")).amin(-1))
        tau = tau + torch.where(slope > 0, torch.maximum(newton_step, exact), 0.0)
    return tau


def secant(s: torch.Tensor, tau: torch.Tensor, steps: int) -> torch.Tensor:
    prev_tau = prev_h = None
    for _ in range(steps):
        x = (s - tau[:, None]).clamp_min(0)
        mass = (x * x).sum(-1)
        h = mass.sqrt() - 1
        if prev_tau is None:
            slope = x.sum(-1)
            step = mass * (1 - torch.where(mass > 0, mass, 1.0).rsqrt()) / torch.where(slope > 0, slope, 1.0)
            step = torch.where(slope > 0, step, 0.0)
        else:
            drop = prev_h - h
            step = torch.where(drop > 0, h * (tau - prev_tau) / torch.where(drop > 0, drop, 1.0), 0.0)
        prev_tau, prev_h = tau, h
        tau = tau + step
    return tau


SOLVERS = {
    "newton": newton,
    "exact-on-support": exact_on_support,
    "uncapped": lambda s, t, k: exact_on_support(s, t, k, capped=False),
    "secant": secant,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, nargs="+", default=[64, 256, 512])
    args = parser.parse_args()
    worst = collections.defaultdict(list)
    for n in args.n:
        for family, z in {**families(n), **crowd_families(n)}.items():
            s = 0.5 * (z - z.amax(-1, keepdim=True))
            want = entmax_bisect(z.double(), 1.5)
            start = torch.full((s.shape[0],), -1.0)
            floor = (probs(s, newton(s, start, 14)).double() - want).abs().amax(-1)
            tol = (1.5 * floor).clamp_min(3e-7)
            for name, solve in SOLVERS.items():
                need = torch.full((s.shape[0],), 99)
                for k in range(16, -1, -1):
                    err = (probs(s, solve(s, start, k)).double() - want).abs().amax(-1)
                    need = torch.where(err <= tol, k, need)
                worst[name].append((int(need.max()), float(need.float().mean()), n, family))
    print("| solver | mean steps | worst (steps, n, family) |\n|---|---|---|")
    for name, runs in worst.items():
        top = sorted(runs, key=lambda r: -r[0])[:2]
        mean = sum(r[1] for r in runs) / len(runs)
        print(f"| {name} | {mean:.2f} | " + "; ".join(f"{r[0]} ({r[2]}, {r[3]})" for r in top) + " |")


if __name__ == "__main__":
    main()
