"""The methods of ``benchmarks/tinyworld_findings.py``: each K = 2 and K = 3 method's label, where its stage-2 (stage-3)
pairs come from and which losses train it (:data:`K2_METHODS`, :data:`K3_METHODS`), and one world's run of them
(:func:`run_k2`, :func:`run_k3`; :func:`sweep`: the (lr, beta) setting each method's validation headline picks)."""

from __future__ import annotations

import os

# benchmarks/ is on sys.path as a script
from tinyworld_findings_report import headline
from tinyworld_findings_world import (
    MIXED,
    SETTINGS,
    World,
    d2_parts,
    pair_stats,
    read_json,
    read_jsonl,
    write_jsonl,
)

K2, K3, IMPLICIT = "configs/tiny/k2.yaml", "configs/tiny/k3.yaml", "configs/tiny/k2_implicit.yaml"
LOSSES = ("dpo", "modpo", "spo")
# method -> (label, source, losses or None for all): d2:<part> | select:<strategy>:<margin>[:n16] | implicit | mixed
# | adaptive:<margin>:<n_max> | iterative:<margin>:<n_max>:<iterations> (the stage run by rcs_ray.iterations: its
# pairs depend on the policy each iteration trained, so it is sampled and trained per loss and setting)
K2_METHODS = {
    "rc": ("D2 RC part / filter-only (Table 1)", "select:filter_only:-0.5", None),
    "nonrc": ("D2 non-RC part (Table 1)", "d2:nonrc", None),
    "vanilla": ("vanilla (D2 pairs)", "d2:vanilla", None),
    "rsdpo": ("RSDPO (target_only)", "select:target_only:-0.5", None),
    "rsdpo_w": ("RSDPO-W (weighted sum)", "select:weighted:-0.5", None),
    "rs_dpo": ("RS-DPO (every pair with sigmoid(gap / 1) > 0.85)", "select:rs_dpo:0", None),
    "nrcs": ("NRCS (rc_random)", "select:rc_random:-0.5", None),
    "rcs": ("RCS", "select:rcs:-0.5", None),
    "rcs_strict": ("RCS, strict RC (margin 0)", "select:rcs:0", None),
    "rcs_implicit": ("RCS, implicit harmless reward", "implicit", None),
    "rcs_n16": ("RCS, n = 16", "select:rcs:-0.5:n16", ("dpo",)),
    "rcs_strict_n16": ("RCS strict, n = 16", "select:rcs:0:n16", ("dpo",)),
    "rcs_strict_adaptive": ("RCS strict, adaptive n = 8 -> 16", "adaptive:0:16", ("dpo",)),
    "mixed": ("mixed (D1 + D2 at once, from base)", "mixed", ("dpo",)),
    "rcs_iterative": ("RCS strict, adaptive, 2 iterations (iterative RCS)", "iterative:0:16:2", ("dpo",)),
    "rcs_iterative3": ("RCS strict, adaptive, 3 iterations (iterative RCS)", "iterative:0:16:3", ("dpo",)),
}
QUICK = ("nonrc", "vanilla", "rsdpo", "rcs")
CONTROL = ("nonrc", "vanilla", "rsdpo", "rcs")
# stage-3 method -> (label, selection: strategy, margin, enforce)
K3_METHODS = {
    "vanilla": ("vanilla (D3 pairs)", None),
    "rsdpo": ("RSDPO (target_only)", ("target_only", -0.5, None)),
    "rcs": ("RCS (RC on harmless + helpful)", ("rcs", -0.5, None)),
    "rcs_selective": ("selective RCS (RC on harmless only)", ("rcs", -0.5, ["harmless", "concise"])),
    "rcs_strict": ("RCS, strict RC", ("rcs", 0.0, None)),
}
DEFAULT_SETTING = "lr5e-5_b0.1"


def k2_pairs(w: World, methods, s1: str) -> dict:
    """Every method's stage-2 pair file, from D2 or from the world's stored candidates."""
    parts = d2_parts(w.cfg, 1, w.limit, os.path.join(w.root, "d2"))
    cands = {}
    out = {}
    for m in methods:
        _, source, _ = K2_METHODS[m]
        kind, *rest = source.split(":")
        if kind == "d2":
            out[m] = parts[rest[0]]
        elif kind == "select":
            n16 = len(rest) > 2
            if n16 not in cands:
                cands[n16] = w.candidates(1, s1, "n16" if n16 else "n8", *(["sampling.n=16"] if n16 else []))
            out[m] = w.select(m, cands[n16], rest[0], float(rest[1]))
        elif kind == "adaptive":  # the stage sampled with resampling: its own pairs, no re-selection
            margin, n_max = float(rest[0]), int(rest[1])
            c = w.candidates(
                1,
                s1,
                f"adaptive-m{rest[0]}-n{n_max}",
                f"stages.1.rc.margin={margin}",
                "sampling.adaptive.enabled=true",
                f"sampling.adaptive.n_max={n_max}",
            )
            out[m] = os.path.join(os.path.dirname(c), "pairs.parquet")
            stats = read_json(os.path.join(os.path.dirname(c), "stats.json"))
            w.info[m] = {"failed_prompts": stats["failed"], "failure_rate": stats["failure_rate"]}
        elif kind == "iterative":
            continue  # sampled and trained together, per loss: train_method
        elif kind == "implicit":
            c = w.candidates(1, s1, "implicit", config=IMPLICIT)
            out[m] = w.select(m, c, "rcs", 0.0)
    for m, path in out.items():
        w.info.setdefault(m, {}).update(pair_stats(path, w.names))
    return out


def validation_prompts(w: World) -> str:
    from rcs_ray.user_paths import resolve_path

    rows = read_jsonl(resolve_path(w.cfg.eval.prompts.path, w.cfg.tinyworld))[128:256]
    return write_jsonl(os.path.join(w.root, "validation_prompts.jsonl"), rows)


def sweep(w: World, methods, s1: str, pairs: dict) -> dict:
    """Per method, the (lr, beta) setting with the best validation headline (DPO, this seed)."""
    val = validation_prompts(w)
    policies, scores = {"stage1": s1}, {}
    for m in methods:
        for setting in SETTINGS:
            policies[f"{m}@{setting}"] = train_method(w, m, pairs, s1, "dpo", setting)
    metrics = w.evaluate("validation", policies, "stage1", f"eval.prompts.path={val}", "eval.prompts.limit=128")
    best = {}
    for m in methods:
        scored = {s: headline(metrics[f"{m}@{s}"], "stage1")["headline"] for s in SETTINGS}
        best[m] = max(scored, key=scored.get)
        scores[m] = scored
    return {"best": best, "validation_headline": scores}


def train_method(w: World, m: str, pairs: dict, s1: str, loss: str, setting: str) -> str:
    kind, *rest = K2_METHODS[m][1].split(":")
    if kind == "iterative":
        margin, n_max, iterations = rest
        return w.iterative(
            m,
            s1,
            loss,
            setting,
            f"stages.1.rc.margin={float(margin)}",
            "sampling.adaptive.enabled=true",
            f"sampling.adaptive.n_max={int(n_max)}",
            f"stages.1.iterations={int(iterations)}",
        )
    if m == "mixed":
        return w.train("mixed", 0, None, None, loss, setting, config=MIXED)
    return w.train(m, 1, pairs[m], s1, loss, setting)


def run_k2(root: str, overrides: list, methods, losses, limit: int, best: dict) -> dict:
    w = World(K2, root, overrides, limit)
    s1 = w.stage_policy(0)
    pairs = k2_pairs(w, [m for m in methods if m != "mixed"], s1)
    policies = {"base": "tinyworld:policy", "stage1": s1}
    for m in methods:
        for loss in K2_METHODS[m][2] or LOSSES:
            if loss in losses:
                policies[f"{m}/{loss}"] = train_method(w, m, pairs, s1, loss, best.get(m, DEFAULT_SETTING))
    metrics = w.evaluate("test", policies, "stage1")
    return {"policies": policies, "pairs": w.info, "metrics": metrics, "settings": best}


def run_k3(root: str, overrides: list, limit: int) -> dict:
    w = World(K3, root, overrides, limit)
    s1 = w.stage_policy(0)
    c2 = w.candidates(1, s1, "stage2")
    s2 = w.stage_policy(1, os.path.join(os.path.dirname(c2), "pairs.parquet"), s1)
    c3 = w.candidates(2, s2, "stage3")
    parts = d2_parts(w.cfg, 2, limit, os.path.join(w.root, "d3"))
    policies = {"stage1": s1, "stage2": s2}
    for m, (_, sel) in K3_METHODS.items():
        path = parts["vanilla"] if sel is None else w.select(m, c3, *sel)
        w.info.setdefault(m, {}).update(pair_stats(path, w.names))
        policies[f"{m}/dpo"] = w.train(m, 2, path, s2, "dpo", DEFAULT_SETTING)
    metrics = w.evaluate("test", policies, "stage2")
    return {"policies": policies, "pairs": w.info, "metrics": metrics}
