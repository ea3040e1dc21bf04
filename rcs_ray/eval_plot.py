"""The evaluation's picture: the trade-off between objectives, each policy a point.

One panel per consecutive pair of objectives (K = 2: harmless on x, helpful on y; K = 3 adds helpful / concise), each
policy at its mean rewards, with arrows for what a stage did (from the policy it started from to the policy it
produced; the demo draws stage 1 -> stage 2 once for vanilla and once for RCS). A policy up and to the right of
another is better on both. A single objective, and the judge (``eval.judge``, an independent score), get bars.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["tradeoff_panels", "plot_eval"]


def tradeoff_panels(objectives: Sequence[str]) -> list[tuple[str, str]]:
    """The (x, y) objective pairs drawn as trade-off panels: each objective against the next."""
    return [(objectives[j], objectives[j + 1]) for j in range(len(objectives) - 1)]


def _points(metrics: dict, x: str, y: str) -> dict:
    return {p: (m["mean"][x], m["mean"][y]) for p, m in metrics.items()}


def _tradeoff(ax, metrics: dict, x: str, y: str, arrows: Sequence[tuple[str, str]], colors: dict) -> None:
    points = _points(metrics, x, y)
    for start, end in arrows:
        ax.annotate(
            "",
            xy=points[end],
            xytext=points[start],
            arrowprops={"arrowstyle": "->", "color": colors[end], "lw": 1.4, "alpha": 0.8},
        )
    for p, (px, py) in points.items():
        ax.scatter([px], [py], s=46, color=colors[p], zorder=3)
        ax.annotate(p, (px, py), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(f"mean {x}  (higher is better)")
    ax.set_ylabel(f"mean {y}  (higher is better)")
    ax.set_title(f"{y} vs {x}")
    ax.grid(alpha=0.3)
    ax.margins(0.18)


def _bars(ax, metrics: dict, name: str, colors: dict) -> None:
    policies = list(metrics)
    ax.bar(range(len(policies)), [metrics[p]["mean"][name] for p in policies], color=[colors[p] for p in policies])
    ax.set_xticks(range(len(policies)), policies, rotation=30, ha="right")
    ax.set_title(f"mean {name}")
    ax.grid(axis="y", alpha=0.3)


def plot_eval(
    metrics: dict, objectives: Sequence[str], path: str, arrows: Sequence[tuple[str, str]] = (), judge: str = None
) -> None:
    """Draw the trade-off panels (and bars for a lone objective or the judge) into the PNG at ``path``.

    Args:
        metrics: :func:`rcs_ray.evaluate.summarize`'s output (policy -> {"mean": {name: value}, ...}).
        objectives: the K objective names, in stage order.
        arrows: (from, to) policy names; each must be a key of ``metrics``.
        judge: the judge's name, drawn as bars beside the trade-off.
    """
    import matplotlib

    from rcs_ray.storage import atomic_path

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unknown = sorted({p for a in arrows for p in a} - set(metrics))
    if unknown:
        raise ValueError(f"arrows name policies that were not evaluated: {unknown}; evaluated: {list(metrics)}")
    panels = tradeoff_panels(objectives)
    bars = ([] if panels else list(objectives)) + ([judge] if judge else [])
    palette = plt.get_cmap("tab10").colors
    colors = {p: palette[i % len(palette)] for i, p in enumerate(metrics)}
    fig, axes = plt.subplots(1, len(panels) + len(bars), figsize=(4.2 * (len(panels) + len(bars)), 3.8), squeeze=False)
    for ax, (x, y) in zip(axes[0], panels):
        _tradeoff(ax, metrics, x, y, arrows, colors)
    for ax, name in zip(axes[0][len(panels) :], bars):
        _bars(ax, metrics, name, colors)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
