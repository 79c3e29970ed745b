"""A bar chart of a fine-kernel probe log (``probe_gluon_fine.py``'s ``S=…: NAME: t1, t2 ms`` lines).

    python scripts/plot_fine_probe.py LOG OUT.png [--title TEXT]

One panel per sequence length: each kernel's two medians (interleaved passes) as bars, the
shipped kernel's mean as a dashed line, and each kernel's time relative to it.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LINE = re.compile(r"^S=(\d+): (\w+): ([0-9.]+), ([0-9.]+) ms")


def parse(path: str) -> dict[int, dict[str, tuple[float, float]]]:
    times: dict[int, dict[str, tuple[float, float]]] = defaultdict(dict)
    with open(path) as log:
        for line in log:
            if m := LINE.match(line):
                times[int(m[1])][m[2]] = (float(m[3]), float(m[4]))
    if not times:
        raise ValueError(f"{path}: no 'S=…: NAME: t1, t2 ms' lines")
    return times


def plot(times: dict[int, dict[str, tuple[float, float]]], out: str, title: str) -> None:
    fig, axes = plt.subplots(1, len(times), figsize=(6.5 * len(times), 4.8), squeeze=False)
    for ax, (S, kernels) in zip(axes[0], sorted(times.items(), reverse=True)):
        names = list(kernels)
        base = sum(kernels["shipped"]) / 2 if "shipped" in kernels else None
        for i, name in enumerate(names):
            t1, t2 = kernels[name]
            color = "tab:green" if name == "shipped" else "tab:blue"
            ax.bar([i - 0.18, i + 0.18], [t1, t2], width=0.34, color=color)
            if base:
                ax.text(i, max(t1, t2), f"{(t1 + t2) / 2 / base:.2f}×", ha="center", va="bottom", fontsize=8)
        if base:
            ax.axhline(base, color="tab:green", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("ms (two interleaved medians)")
        ax.set_title(f"S = {S // 1024}K (× = time / shipped)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("out")
    parser.add_argument("--title", default="fine forward kernels on the benchmark's lists")
    args = parser.parse_args()
    plot(parse(args.log), args.out, args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
