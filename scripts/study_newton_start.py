"""Newton steps the α = 1.5 entmax solver needs from τ = −1 and from a start on the row's per-lane
maxima, in a float32 emulation of the kernels' loop against the float64 bisection oracle (CPU).

For each row family and length: the fewest full Newton steps whose result is within 1.5× of the
family's float32 floor (the error after 12 steps from τ = −1; at least 3e-7). The lane-maxima start
runs ``m`` Newton steps on the 32 per-lane maxima first: their entmax threshold is at most the
row's, so the start stays a valid lower bound (docs/benchmarks.md, session 15).

    PYTHONPATH=. python scripts/study_newton_start.py
"""

from __future__ import annotations

import torch

from dash_flex.reference import entmax_bisect


def families(n: int, rows: int = 64) -> dict[str, torch.Tensor]:
    """Score rows: Gaussian at scales 0.01 to 1e4, Student-t (1 dof), uniform, near-ties, one
    dominant entry, and rows crowded just below the top entry (the hard case from τ = −1)."""
    g = torch.Generator().manual_seed(n)
    out = {f"gauss {sc:g}": sc * torch.randn(rows, n, generator=g) for sc in (0.01, 1.0, 30.0, 1e3, 1e4)}
    torch.manual_seed(n)
    out["student-t"] = torch.distributions.StudentT(1.0).sample((rows, n)).clamp(-1e4, 1e4)
    out["uniform"] = 4 * torch.rand(rows, n, generator=g)
    out["near-tie"] = 2.0 + 1e-6 * torch.randn(rows, n, generator=g)
    for level in (0.5, 1.5, 1.9, 1.99):
        x = -level + 0.01 * torch.randn(rows, n, generator=g)
        x[:, 0] = 0.0
        out[f"crowd {level}"] = x
    x = torch.randn(rows, n, generator=g)
    x[:, 0] = 5.0
    out["dominant"] = x
    return out


def newton(s: torch.Tensor, tau: torch.Tensor, steps: int) -> torch.Tensor:
    """The kernels' monotone Newton step on h(τ) = ‖[s − τ]_+‖₂ − 1, float32."""
    for _ in range(steps):
        x = (s - tau[:, None]).clamp_min(0)
        mass, slope = (x * x).sum(-1), x.sum(-1)
        step = mass * (1 - torch.where(mass > 0, mass, 1.0).rsqrt()) / torch.where(slope > 0, slope, 1.0)
        tau = tau + torch.where(slope > 0, step, 0.0)
    return tau


def probs(s: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    p = (s - tau[:, None]).clamp_min(0) ** 2
    return p / p.sum(-1, keepdim=True)


def lane_max_start(s: torch.Tensor, steps: int, lanes: int = 32) -> torch.Tensor:
    pad = (-s.shape[-1]) % lanes
    maxima = torch.nn.functional.pad(s, (0, pad), value=-float("inf")).view(s.shape[0], -1, lanes).amax(1)
    return newton(maxima, torch.full((s.shape[0],), -1.0), steps)


def main() -> None:
    starts = {"tau = -1": None, "lane maxima, 2 steps": 2, "lane maxima, 4 steps": 4}
    needed = {name: [] for name in starts}
    for n in (64, 256, 512, 1024, 2048):
        for family, z in families(n).items():
            s = 0.5 * (z - z.amax(-1, keepdim=True))
            want = entmax_bisect(z.double(), 1.5)
            minus_one = torch.full((s.shape[0],), -1.0)
            floor = (probs(s, newton(s, minus_one, 12)).double() - want).abs().max().item()
            tol = max(1.5 * floor, 3e-7)
            for name, sub_steps in starts.items():
                start = minus_one if sub_steps is None else lane_max_start(s, sub_steps)
                k = next(k for k in range(13) if (probs(s, newton(s, start, k)).double() - want).abs().max() <= tol)
                needed[name].append((k, n, family))
    print("| start | mean steps | worst (steps, n, family) |\n|---|---|---|")
    for name, runs in needed.items():
        worst = sorted(runs, reverse=True)[:3]
        print(f"| {name} | {sum(r[0] for r in runs) / len(runs):.2f} | {worst} |")


if __name__ == "__main__":
    main()
