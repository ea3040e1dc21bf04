"""Rendering of ``benchmarks/tinyworld_findings.py``'s results: the paper's headline metric, one row per policy and
seed, the mean ± sample std over seeds, and ``findings.md`` (also ``tinyworld_findings.py --report-only``)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def relative_paths(obj, root: str):
    """``obj`` (JSON data) with every string path under ``root`` made relative to it: reports name paths in the
    repository or the run, never one machine's absolute ones."""
    root = os.path.abspath(root).rstrip(os.sep) + os.sep
    if isinstance(obj, dict):
        return {k: relative_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_paths(v, root) for v in obj]
    if isinstance(obj, str) and obj.startswith(root):
        return obj[len(root) :]
    return obj


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
        row = {
            "world": world,
            "policy": policy,
            "method": method,
            "label": method,
            "loss": loss or "—",
            **{f"mean_{k}": v for k, v in m["mean"].items()},
            **{f"win_{k}": v for k, v in win.items()},
            **headline(m, reference),
            **{k: v for k, v in p.items() if isinstance(v, (int, float))},
            "setting": res.get("settings", {}).get(method, default_setting) if loss else "—",
        }
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
    head = [
        "method",
        "loss",
        "setting",
        "harmless rate",
        f"helpful win vs {reference}",
        "headline (mean)",
        *[f"mean {o}" for o in objectives],
        *[f"{o} win" for o in objectives[2:]],
        *(["mean of harmless rate and every win"] if len(objectives) > 2 else []),
        "pairs",
        "failed prompts",
        *[f"pairs RC on {o} (ties / strict)" for o in extra_rc],
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        cells = [
            r["label"],
            r["loss"],
            r.get("setting", "—"),
            pm(r, "harmless_rate", True),
            pm(r, "helpful_win", True),
            pm(r, "headline", True),
            *[pm(r, f"mean_{o}") for o in objectives],
            *[pm(r, f"win_{o}", True) for o in objectives[2:]],
            *([_all_wins(r, objectives)] if len(objectives) > 2 else []),
            pm(r, "pairs", digits=0),
            pm(r, "failed_prompts", digits=0),
            *[
                (
                    f"{100 * r[f'{o}_rc_ties']:.0f}% / {100 * r[f'{o}_rc_strict']:.0f}%"
                    if r.get(f"{o}_rc_ties") is not None
                    else "—"
                )
                for o in extra_rc
            ],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(data: dict, k2_labels: dict, k3_labels: dict, losses: Sequence[str], settings: Sequence[str]) -> str:
    """``findings.md`` from ``findings.json``'s data; the labels name the methods (K = 2 and K = 3 tables), ``losses``
    and ``settings`` give the row and sweep-column order."""
    md = [
        "# Tiny-world findings (arXiv 2504.11337) through the Ray pipeline",
        "",
        "Commands: "
        + " then ".join(
            f"`python benchmarks/tinyworld_findings.py {' '.join(v)}`"
            for v in data.get("earlier_argv", []) + [data["argv"]]
        )
        + "; wall time "
        f"{data['wall_seconds']:.0f} s on {data['cpus']} CPUs; seeds {data['seeds']} (mean ± sample std). "
        f"Stage-2 prompts {data['limit']}, {data['eval_prompts']} held-out prompts x {data['eval_n']} samples. "
        "Harmless rate: share of responses with no harmful word; helpful win: per-prompt win rate of samples against "
        "the reference policy's (ties one half); headline: their mean (the paper's metric). Setting: the (lr, β) "
        "each row was trained at (with `--sweep`, the one the validation sweep chose for its method, for all its "
        "losses; a sweep run after the rows, `--sweep-only`, changes no row).",
        "",
    ]
    for world, title, ref, objectives, rc in (
        ("c0.9", "K = 2 (conflict 0.9)", "stage1", ["harmless", "helpful"], ["harmless"]),
        ("c0", "K = 2, no-conflict control (c = 0)", "stage1", ["harmless", "helpful"], ["harmless"]),
        (
            "k3",
            "K = 3, stage 3 (concise) from an RCS stage-2 policy",
            "stage2",
            ["harmless", "helpful", "concise"],
            ["harmless", "helpful"],
        ),
    ):
        rows = [r for r in data["rows"] if r["world"] == world]
        if not rows:
            continue
        labels = k3_labels if world == "k3" else k2_labels
        for r in rows:
            r["label"] = labels.get(r["method"], r["method"])
        order = {p: i for i, p in enumerate(["base", "stage1", "stage2"])}
        rows.sort(
            key=lambda r: (
                order.get(r["policy"], 9),
                list(losses).index(r["loss"]) if r["loss"] in losses else -1,
                list(labels).index(r["method"]) if r["method"] in labels else -1,
            )
        )
        md += [f"## {title}", "", table(rows, objectives, ref, rc), ""]
    if data.get("sweep"):
        md += [
            "## Validation sweep (seed 0, DPO): headline per (lr, β)",
            "",
            "| method | " + " | ".join(settings) + " | chosen |",
            "|---" * (len(settings) + 2) + "|",
        ]
        for m, scores in data["sweep"]["validation_headline"].items():
            md.append(
                f"| {k2_labels.get(m, m)} | "
                + " | ".join(f"{100 * scores[s]:.1f}%" for s in settings)
                + f" | {data['sweep']['best'][m]} |"
            )
        md.append("")
    return "\n".join(md)


# The findings page's K = 2 tables (docs/findings.md): their row labels, in its order
# (tests/unit/test_findings_readme.py checks the page's tables are exactly what these render from findings.json).
README_LABELS = {
    "rc": "only the RC part of D2 (Table 1; filter-only)",
    "nonrc": "only the non-RC part of D2 (Table 1)",
    "vanilla": "vanilla (all of D2)",
    "rsdpo": "RSDPO (max helpful gap, `target_only`)",
    "rsdpo_w": "RSDPO-W (max gap of the equal-weight sum, `weighted`)",
    "nrcs": "NRCS (random RC pair)",
    "rcs": "RCS (ties tolerated, margin −0.5)",
    "rcs_strict": "RCS, strict RC (margin 0)",
    "rcs_implicit": "RCS, implicit harmless reward (no RM)",
}
README_SWEEP_LABELS = {
    "rc": "RC part of D2 (filter-only)",
    "nonrc": "non-RC part of D2",
    "vanilla": "vanilla",
    "rsdpo": "RSDPO",
    "rsdpo_w": "RSDPO-W",
    "nrcs": "NRCS",
    "rcs": "RCS",
    "rcs_strict": "RCS, strict RC",
    "rcs_implicit": "RCS, implicit",
}
README_SETTINGS = {"lr5e-5_b0.1": "lr 5e-5, β 0.1", "lr1e-4_b0.1": "lr 1e-4, β 0.1", "lr5e-5_b0.3": "lr 5e-5, β 0.3"}


def _num(r: dict, key: str, pct: bool = False) -> str:
    return pm(r, key, pct).replace("-", "−")


def readme_table(data: dict, labels: dict = None) -> str:
    """The findings page's K = 2 table from ``findings.json``'s data: per method, the DPO headline (the best in
    bold), DPO harmless rate / helpful win and mean harmless / helpful, and the MODPO and SPO headlines."""
    labels = labels or README_LABELS
    rows = {(r["method"], r["loss"]): r for r in data["rows"] if r["world"] == "c0.9"}
    best = max((r["headline"] for (m, loss), r in rows.items() if loss == "dpo" and m in labels), default=None)
    lines = [
        "| stage 2 | DPO headline | DPO harmless rate / helpful win | DPO mean harmless / helpful | MODPO headline "
        "| SPO headline |",
        "|---|---|---|---|---|---|",
    ]
    for policy, label, ref in (("base", "base policy", True), ("stage1", "stage1 policy", False)):
        r = rows[(policy, "—")]
        win = _num(r, "helpful_win", True) if ref else "—"
        lines.append(
            f"| {label} | — | {_num(r, 'harmless_rate', True)} / {win} | "
            f"{_num(r, 'mean_harmless')} / {_num(r, 'mean_helpful')} | — | — |"
        )
    for method, label in labels.items():
        dpo = rows.get((method, "dpo"))
        if dpo is None:
            continue
        head = _num(dpo, "headline", True)
        head = f"**{head}**" if dpo["headline"] == best else head
        others = [
            _num(rows[(method, loss)], "headline", True) if (method, loss) in rows else "—" for loss in ("modpo", "spo")
        ]
        lines.append(
            f"| {label} | {head} | {_num(dpo, 'harmless_rate', True)} / {_num(dpo, 'helpful_win', True)} | "
            f"{_num(dpo, 'mean_harmless')} / {_num(dpo, 'mean_helpful')} | {others[0]} | {others[1]} |"
        )
    return "\n".join(lines)


def readme_sweep_table(data: dict) -> str:
    """The findings page's validation-sweep table: the headline per (lr, β), the setting the sweep chose in bold."""
    sweep = data["sweep"]
    lines = ["| method | " + " | ".join(README_SETTINGS.values()) + " |", "|---" * (len(README_SETTINGS) + 1) + "|"]
    for method, label in README_SWEEP_LABELS.items():
        scores = sweep["validation_headline"][method]
        cells = [f"{100 * scores[k]:.1f}%" for k in README_SETTINGS]
        cells = [f"**{c}**" if k == sweep["best"][method] else c for c, k in zip(cells, README_SETTINGS)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
