"""The `rcs-ray analyze` work: a preference dataset read, RC-analysed (:mod:`rcs_ray.analysis`) and reported
(:mod:`rcs_ray.report`), locally or at a URI."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from rcs_ray.analysis import RCAnalysis
from rcs_ray.report import ReportPaths, pct, write_rc_report


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
            f"  RC rate (strict on {', '.join(a.enforce)}): {pct(a.rc_rate)}   with ties allowed: {pct(a.rc_rate_ties)}"
        )
        for name, rates in a.not_rc_on.items():
            lines.append(
                f"  not RC on {name}: {pct(rates['strict'])} (chosen strictly worse: {pct(rates['ties_allowed'])})"
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
        from rcs_ray.tinyworld.rewards import OBJECTIVES
        from rcs_ray.user_paths import resolve_data

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
