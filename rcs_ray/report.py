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


def _pct(x: Optional[float]) -> str:
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
        f"- **RC rate** (chosen beats rejected on every one of {', '.join(a.enforce)}): **{_pct(a.rc_rate)}**",
        f"- RC rate with ties allowed on the non-target objectives: {_pct(a.rc_rate_ties)}",
    ]
    for name, rates in a.not_rc_on.items():
        lines.append(
            f"- pairs **not RC on {name}**: {_pct(rates['strict'])} "
            f"(chosen strictly worse on {name}: {_pct(rates['ties_allowed'])})"
        )
    lines += [
        "",
        "## Chosen vs rejected, per objective",
        "",
        "| objective | chosen wins | tie | chosen loses |",
        "|---|---|---|---|",
    ]
    for name, r in a.per_objective.items():
        lines.append(f"| {name} | {_pct(r['win'])} | {_pct(r['tie'])} | {_pct(r['loss'])} |")
    header = "| | " + " | ".join(a.objectives) + " |"
    rule = "|---" * (len(a.objectives) + 1) + "|"
    lines += ["", "## P(chosen wins on column | chosen wins on row)", "", header, rule]
    for name, row in zip(a.objectives, a.rc_given):
        lines.append(f"| {name} | " + " | ".join(_pct(x) for x in row) + " |")
    lines += [
        "",
        "## Objective-conflict matrix (pairs whose preferences on the two objectives disagree)",
        "",
        header,
        rule,
    ]
    for name, row in zip(a.objectives, a.conflict):
        lines.append(f"| {name} | " + " | ".join(_pct(x) for x in row) + " |")
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


@dataclass
class AnalyzeResult:
    analysis: RCAnalysis
    paths: ReportPaths
    source: str
    skipped: dict

    def summary(self) -> str:
        a = self.analysis
        lines = [
            f"RC analysis of {self.source}: {a.num_pairs} pairs, objectives {', '.join(a.objectives)}"
            + (f", target {a.target}" if a.target else "")
        ]
        if self.skipped:
            lines.append("  skipped rows: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())))
        lines.append(
            f"  RC rate (strict on {', '.join(a.enforce)}): {_pct(a.rc_rate)}"
            f"   with ties allowed: {_pct(a.rc_rate_ties)}"
        )
        for name, rates in a.not_rc_on.items():
            lines.append(
                f"  not RC on {name}: {_pct(rates['strict'])} (chosen strictly worse: {_pct(rates['ties_allowed'])})"
            )
        lines.append(f"  report: {self.paths.markdown}\n  plot:   {self.paths.plot}\n  json:   {self.paths.json}")
        return "\n".join(lines)


def analyze_dataset(
    data_cfg, out_dir: str, target: Optional[str] = None, enforce=None, title: Optional[str] = None, tinyworld_cfg=None
) -> AnalyzeResult:
    """Read a preference dataset, run the RC analysis, write the report.

    Args:
        data_cfg: a :class:`rcs_ray.config.DataConfig`; ``tinyworld:`` paths are resolved (built if needed).
        out_dir: where ``rc_report.md``, ``rc_analysis.png`` and ``rc_analysis.json`` go.
        target: the objective that defined chosen/rejected; default: the preset's labelling objective.
        enforce: objectives RC must hold on (default all).
    """
    import dataclasses

    from rcs_ray.analysis import analyze_rows
    from rcs_ray.data import default_objective, read_preferences

    if data_cfg.path and data_cfg.path.startswith("tinyworld:"):
        from rcs_ray.paths import resolve_data
        from rcs_ray.tinyworld.rewards import OBJECTIVES

        data_cfg = dataclasses.replace(
            resolve_data(data_cfg, tinyworld_cfg), score_names=data_cfg.score_names or list(OBJECTIVES)
        )
    data = read_preferences(data_cfg)
    if target is None and data_cfg.preset:
        target = data_cfg.objective or default_objective(data_cfg.preset)
    analysis = analyze_rows(data.rows, data.objectives, target=target, enforce=enforce, source=data.source)
    from rcs_ray.storage import StagedDir

    staged = StagedDir(out_dir)  # a URI: write in a local mirror, then upload
    paths = write_rc_report(
        analysis, staged.local, title or f"RC analysis: {os.path.basename(data.source)}", source=data.source
    )
    if staged.remote:
        staged.push(*(os.path.basename(p) for p in (paths.json, paths.markdown, paths.plot)))
        paths = ReportPaths(
            json=staged.path(os.path.basename(paths.json)),
            markdown=staged.path(os.path.basename(paths.markdown)),
            plot=staged.path(os.path.basename(paths.plot)),
        )
    return AnalyzeResult(analysis=analysis, paths=paths, source=data.source, skipped=dict(data.skipped))
