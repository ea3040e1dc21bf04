"""Rendering of ``benchmarks/tinyworld_findings.py``'s results: the paper's headline metric, one row per policy and
seed, the mean ± sample std over seeds, and ``findings.md`` (also ``tinyworld_findings.py --report-only``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def headline(metrics: dict, reference: str) -> dict:
    """The paper's metric: harmless rate, helpfulness win rate vs the reference, and their mean."""
    win = metrics.get("win_rate_vs_" + reference)
    rate = metrics["rate"].get("harmless>=0")
    h = win["helpful"] if win else None
    return {"harmless_rate": rate, "helpful_win": h, "headline": (rate + h) / 2 if h is not None else None}


def rows_of(world: str, res: dict, reference: str, default_setting: str) -> list:
    out = []
    for policy, m in res["metrics"].items():
        method, _, loss = policy.partition("/")
        p = res["pairs"].get(method, {})
        win = m.get("win_rate_vs_" + reference) or {}
        row = {"world": world, "policy": policy, "method": method, "label": method,
               "loss": loss or "—", **{f"mean_{k}": v for k, v in m["mean"].items()},
               **{f"win_{k}": v for k, v in win.items()}, **headline(m, reference),
               **{k: v for k, v in p.items() if isinstance(v, (int, float))},
               "setting": res.get("settings", {}).get(method, default_setting) if loss else "—"}
        out.append(row)
    return out


def aggregate(per_seed: list) -> list:
    """One row per (world, policy): the mean over seeds, with ``<key>_std`` (sample std) and ``seeds``."""
    groups: dict = {}
    for r in per_seed:
        groups.setdefault((r["world"], r["policy"]), []).append(r)
    out = []
    for rs in groups.values():
        row = dict(rs[0], seeds=len(rs))
        for key, v in rs[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                vals = [r[key] for r in rs if isinstance(r.get(key), (int, float))]
                row[key] = float(np.mean(vals))
                row[f"{key}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        out.append(row)
    return out


def pm(r: dict, key: str, pct: bool = False, digits: int = 2) -> str:
    v = r.get(key)
    if v is None:
        return "—"
    s = r.get(f"{key}_std")
    if pct:
        return f"{100 * v:.1f}%" + (f" ± {100 * s:.1f}" if s is not None else "")
    return f"{v:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


def _all_wins(r: dict, objectives: list) -> str:
    """K > 2: the headline over every objective (harmless rate, then the win rate on each later objective)."""
    parts = [r.get("harmless_rate"), r.get("helpful_win"), *[r.get(f"win_{o}") for o in objectives[2:]]]
    return "—" if any(p is None for p in parts) else f"{100 * float(np.mean(parts)):.1f}%"


def table(rows: list, objectives: list, reference: str, extra_rc: list) -> str:
    head = ["method", "loss", "setting", "harmless rate", f"helpful win vs {reference}", "headline (mean)",
            *[f"mean {o}" for o in objectives], *[f"{o} win" for o in objectives[2:]],
            *(["mean of harmless rate and every win"] if len(objectives) > 2 else []), "pairs", "failed prompts",
            *[f"pairs RC on {o} (ties / strict)" for o in extra_rc]]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        cells = [r["label"], r["loss"], r.get("setting", "—"), pm(r, "harmless_rate", True), pm(r, "helpful_win", True),
                 pm(r, "headline", True), *[pm(r, f"mean_{o}") for o in objectives],
                 *[pm(r, f"win_{o}", True) for o in objectives[2:]], *([_all_wins(r, objectives)]
                                                                        if len(objectives) > 2 else []),
                 pm(r, "pairs", digits=0),
                 pm(r, "failed_prompts", digits=0),
                 *[(f"{100 * r[f'{o}_rc_ties']:.0f}% / {100 * r[f'{o}_rc_strict']:.0f}%"
                    if r.get(f"{o}_rc_ties") is not None else "—") for o in extra_rc]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(data: dict, k2_labels: dict, k3_labels: dict, losses: Sequence[str], settings: Sequence[str]) -> str:
    """``findings.md`` from ``findings.json``'s data; the labels name the methods (K = 2 and K = 3 tables), ``losses``
    and ``settings`` give the row and sweep-column order."""
    md = ["# Tiny-world findings (arXiv 2504.11337) through the Ray pipeline", "",
          "Commands: " + " then ".join(f"`python benchmarks/tinyworld_findings.py {' '.join(v)}`"
                                        for v in data.get("earlier_argv", []) + [data["argv"]]) + "; wall time "
          f"{data['wall_seconds']:.0f} s on {data['cpus']} CPUs; seeds {data['seeds']} (mean ± sample std). "
          f"Stage-2 prompts {data['limit']}, {data['eval_prompts']} held-out prompts x {data['eval_n']} samples. "
          "Harmless rate: share of responses with no harmful word; helpful win: per-prompt win rate of samples against "
          "the reference policy's (ties one half); headline: their mean (the paper's metric). Setting: the (lr, β) "
          "the validation sweep chose for the method (applied to all its losses).", ""]
    for world, title, ref, objectives, rc in (("c0.9", "K = 2 (conflict 0.9)", "stage1", ["harmless", "helpful"],
                                               ["harmless"]),
                                              ("c0", "K = 2, no-conflict control (c = 0)", "stage1",
                                               ["harmless", "helpful"], ["harmless"]),
                                              ("k3", "K = 3, stage 3 (concise) from an RCS stage-2 policy", "stage2",
                                               ["harmless", "helpful", "concise"], ["harmless", "helpful"])):
        rows = [r for r in data["rows"] if r["world"] == world]
        if not rows:
            continue
        labels = k3_labels if world == "k3" else k2_labels
        for r in rows:
            r["label"] = labels.get(r["method"], r["method"])
        order = {p: i for i, p in enumerate(["base", "stage1", "stage2"])}
        rows.sort(key=lambda r: (order.get(r["policy"], 9), list(losses).index(r["loss"]) if r["loss"] in losses else -1,
                                 list(labels).index(r["method"]) if r["method"] in labels else -1))
        md += [f"## {title}", "", table(rows, objectives, ref, rc), ""]
    if data.get("sweep"):
        md += ["## Validation sweep (seed 0, DPO): headline per (lr, β)", "",
               "| method | " + " | ".join(settings) + " | chosen |", "|---" * (len(settings) + 2) + "|"]
        for m, scores in data["sweep"]["validation_headline"].items():
            md.append(f"| {k2_labels.get(m, m)} | " + " | ".join(f"{100 * scores[s]:.1f}%" for s in settings)
                      + f" | {data['sweep']['best'][m]} |")
        md.append("")
    return "\n".join(md)
