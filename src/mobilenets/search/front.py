"""The accuracy-latency front of measured variants, the best one within a budget, and the V2 paper's
performance figure (its Figure 5: published top-1 against latency, one curve per family) with the
latency measured here."""

from __future__ import annotations

import os

from .latency import Measurement

FAMILY_STYLE = {  # marker, colour
    "mobilenet_v1": ("s", "tab:blue"),
    "mobilenet_v2": ("o", "tab:orange"),
    "mobilenet_v3_large": ("^", "tab:green"),
    "mobilenet_v3_small": ("v", "tab:red"),
    "mobilenet_v3_large_minimal": ("P", "tab:olive"),
    "mobilenet_v3_small_minimal": ("X", "tab:purple"),
}


def pareto_front(measurements: list[Measurement]) -> list[Measurement]:
    """The points no other point beats on both latency and top-1, fastest first."""
    front: list[Measurement] = []
    for m in sorted(measurements, key=lambda m: (m.median_ms, -m.top1)):
        if not front or m.top1 > front[-1].top1:
            front.append(m)
    return front


def within_budget(measurements: list[Measurement], budget_ms: float) -> Measurement | None:
    """The most accurate point whose latency is at most ``budget_ms`` (the faster one on a tie); None when
    even the fastest is over."""
    fitting = [m for m in measurements if m.median_ms <= budget_ms]
    return max(fitting, key=lambda m: (m.top1, -m.median_ms)) if fitting else None


def latency_table(measurements: list[Measurement]) -> str:
    """Markdown: each point's top-1, latency and whether it is on the front, fastest first."""
    front = {m.label for m in pareto_front(measurements)}
    rows = [
        "| model | input | top-1 (%) | latency (ms) | on the front | top-1 from |",
        "|---|---|---|---|---|---|",
    ]
    for m in sorted(measurements, key=lambda m: m.median_ms):
        rows.append(
            f"| {m.model} | {m.resolution} | {m.top1:.1f} | {m.median_ms:.2f} | "
            f"{'yes' if m.label in front else ''} | {m.source} |"
        )
    return "\n".join(rows)


def latency_figure(measurements: list[Measurement], path: str | os.PathLike, title: str) -> None:
    """Top-1 against measured latency: a curve per family and width (its input sizes), the front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..nn.registry import VARIANTS

    fig, ax = plt.subplots(figsize=(8.5, 6))
    families = sorted({VARIANTS[m.model].family for m in measurements})
    for family in families:
        marker, colour = FAMILY_STYLE.get(family, ("o", None))
        members = [m for m in measurements if VARIANTS[m.model].family == family]
        for width in sorted({VARIANTS[m.model].width for m in members}):
            curve = sorted(
                (m for m in members if VARIANTS[m.model].width == width), key=lambda m: m.median_ms
            )
            label = family if width == min(VARIANTS[m.model].width for m in members) else None
            ax.plot(
                [m.median_ms for m in curve],
                [m.top1 for m in curve],
                marker=marker,
                color=colour,
                alpha=0.75,
                label=label,
                markersize=5,
                linewidth=1,
            )
    front = pareto_front(measurements)
    ax.step(
        [m.median_ms for m in front],
        [m.top1 for m in front],
        where="post",
        color="black",
        linewidth=1.5,
        linestyle="--",
        label="front (measured here)",
    )
    for m in front:
        ax.annotate(
            f"{m.model.replace('mobilenet_', '')} {m.resolution}",
            (m.median_ms, m.top1),
            fontsize=6,
            xytext=(3, -9),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set(xlabel="latency (ms), measured here", ylabel="ImageNet top-1 (%), published", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
