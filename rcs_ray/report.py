"""Reports: markdown tables, JSON and PNG plots of RC analyses (matplotlib, headless)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

from rcs_ray.analysis import RCAnalysis
from rcs_ray.storage import atomic_path, write_text


@dataclass
class ReportPaths:
    json: str
    markdown: str
    plot: str


def pct(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def rc_markdown(a: RCAnalysis, title: str = "RC analysis", source: Optional[str] = None) -> str:
    """The analysis as a markdown report (headline, per-objective table, conditional RC and conflict matrices)."""
    lines = [f"# {title}", ""]
    if source:
        lines += [f"Data: `{source}`", ""]
    target = f", target objective **{a.target}**" if a.target else ""
    lines += [
        f"{a.num_pairs} pairs, objectives {', '.join(a.objectives)}{target}.",
        "",
        f"- **RC rate** (chosen beats rejected on every one of {', '.join(a.enforce)}): **{pct(a.rc_rate)}**",
        f"- RC rate with ties allowed on the non-target objectives: {pct(a.rc_rate_ties)}",
    ]
    for name, rates in a.not_rc_on.items():
        lines.append(
            f"- pairs **not RC on {name}**: {pct(rates['strict'])} "
            f"(chosen strictly worse on {name}: {pct(rates['ties_allowed'])})"
        )
    lines += [
        "",
        "## Chosen vs rejected, per objective",
        "",
        "| objective | chosen wins | tie | chosen loses |",
        "|---|---|---|---|",
    ]
    for name, r in a.per_objective.items():
        lines.append(f"| {name} | {pct(r['win'])} | {pct(r['tie'])} | {pct(r['loss'])} |")
    header = "| | " + " | ".join(a.objectives) + " |"
    rule = "|---" * (len(a.objectives) + 1) + "|"
    lines += ["", "## P(chosen wins on column | chosen wins on row)", "", header, rule]
    for name, row in zip(a.objectives, a.rc_given):
        lines.append(f"| {name} | " + " | ".join(pct(x) for x in row) + " |")
    lines += [
        "",
        "## Objective-conflict matrix (pairs whose preferences on the two objectives disagree)",
        "",
        header,
        rule,
    ]
    for name, row in zip(a.objectives, a.conflict):
        lines.append(f"| {name} | " + " | ".join(pct(x) for x in row) + " |")
    return "\n".join(lines) + "\n"


def rc_plot(a: RCAnalysis, path: str, title: str = "RC analysis") -> str:
    """A PNG with the conflict matrix (left) and per-objective win/tie/loss bars (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = len(a.objectives)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 2.2 * k, 3.2 + 0.3 * k))
    mat = np.asarray(a.conflict) * 100
    im = ax1.imshow(mat, cmap="Reds", vmin=0, vmax=max(50.0, float(mat.max())))
    ax1.set_xticks(range(k), a.objectives, rotation=30, ha="right")
    ax1.set_yticks(range(k), a.objectives)
    for i in range(k):
        for j in range(k):
            ax1.text(
                j,
                i,
                f"{mat[i, j]:.0f}%",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if mat[i, j] > 0.6 * im.norm.vmax else "black",
            )
    ax1.set_title("pairs in conflict")
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04)
    x = np.arange(k)
    win = np.array([a.per_objective[n]["win"] for n in a.objectives]) * 100
    tie = np.array([a.per_objective[n]["tie"] for n in a.objectives]) * 100
    loss = np.array([a.per_objective[n]["loss"] for n in a.objectives]) * 100
    ax2.bar(x, win, color="#4c9a2a", label="chosen wins")
    ax2.bar(x, tie, bottom=win, color="#bbbbbb", label="tie")
    ax2.bar(x, loss, bottom=win + tie, color="#c0392b", label="chosen loses")
    ax2.set_xticks(x, a.objectives, rotation=30, ha="right")
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("% of pairs")
    ax2.set_title(f"RC rate {100 * a.rc_rate:.1f}% (ties ok: {100 * a.rc_rate_ties:.1f}%)")
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_rc_report(
    a: RCAnalysis, out_dir: str, title: str = "RC analysis", source: Optional[str] = None
) -> ReportPaths:
    """Write ``rc_analysis.json``, ``rc_report.md`` and ``rc_analysis.png`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = ReportPaths(
        json=os.path.join(out_dir, "rc_analysis.json"),
        markdown=os.path.join(out_dir, "rc_report.md"),
        plot=os.path.join(out_dir, "rc_analysis.png"),
    )
    write_text(paths.json, json.dumps({"source": source, **a.to_dict()}, indent=2) + "\n")
    write_text(paths.markdown, rc_markdown(a, title, source))
    rc_plot(a, paths.plot, title)
    return paths
