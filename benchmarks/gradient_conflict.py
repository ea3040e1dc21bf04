"""Lemma 1 of arXiv 2504.11337, measured on the tiny world: do RC pairs give stage-2 gradients that agree with
the stage-1 objective, and non-RC pairs ones that oppose it?

At the start of stage 2 (the policy is the stage-1 policy pi_1, which is also stage 2's reference), for every pair
(x, y_w, y_l) of a stage-2 pair set:

- **dG2**, the update the pair adds at stage 2: minus the gradient of its stage-2 loss (``dpo`` or ``modpo``, the
  project's own loss functions), ``dG2 = -dL/d(log pi(y_w)) * g`` with ``g = grad[log pi(y_w|x) - log pi(y_l|x)]``;
- **G1**, the direction that improves the earlier objective (harmlessness), measured two independent ways:
  ``pg`` -- the policy gradient of the expected harmless reward, ``E_{x, y ~ pi_1}[(r_1(x, y) - b(x)) grad log
  pi_1(y|x)]`` from fresh samples (leave-one-out baseline); ``d1`` -- minus the gradient of stage 1's own DPO loss
  on a batch of D1 pairs (reference: the base policy, stage 1's beta).

The lemma says ``G1 . dG2 >= 0`` exactly when the pair is RC on the earlier objective. This script measures, per
pair set (RC / tie / non-RC on harmlessness, from the pairs' recorded rewards), the share of pairs with
``G1 . dG2 >= 0``, the cosine distribution, and the mean ``G1 . dG2`` (the first-order change in objective 1 per
unit learning rate of one step on that set). At a fixed policy the DPO and MODPO updates of a pair point the same
way (they differ by a positive scalar), so the *share* is loss-independent; the mean (how much each loss lets that
set pull harmlessness down or up) is not: MODPO's margin down-weights non-RC pairs.

    python benchmarks/gradient_conflict.py                         # trains stage 1 (Ray Train) then measures
    python benchmarks/gradient_conflict.py --policy outputs/tiny-k2/stage1/train/model
    python benchmarks/gradient_conflict.py --pairs rcs=outputs/x/pairs.parquet --pairs rsdpo=outputs/y/pairs.parquet

Writes ``gradient_conflict.json`` / ``.md`` / ``.png`` under ``--out`` (default
``benchmarks/results/gradient_conflict``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Sequence

import numpy as np

# benchmarks/ is on sys.path as a script
from gradient_conflict_gradients import (
    Policy,
    g1_policy_gradient,
    g1_stage1_loss,
    loss_coefficients,
    own_stage1_change,
    pair_directions,
)
from gradient_conflict_report import markdown, plot
from tinyworld_findings_report import relative_paths

CONFIG = "configs/tiny/k2.yaml"
SETS = ("RC", "tie", "non-RC")


def log(msg: str) -> None:
    print(f"[gradient-conflict {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------- data
def read_rows(path: str) -> List[dict]:
    """Rows of a jsonl (the tiny world's ``chosen_scores``) or a pairs.parquet (``chosen_rewards``)."""
    import pandas as pd

    df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_json(path, lines=True)
    return df.to_dict("records")


def split_by_rc(rows: Sequence[dict], harmless: int, per_set: int, seed: int) -> Dict[str, List[dict]]:
    """RC (chosen strictly more harmless), tie, non-RC (chosen strictly more harmful); ``per_set`` of each, seeded."""
    rng = np.random.default_rng(seed)
    out: Dict[str, List[dict]] = {s: [] for s in SETS}
    for r in rows:
        c = r.get("chosen_rewards", r.get("chosen_scores"))
        j = r.get("rejected_rewards", r.get("rejected_scores"))
        d = float(c[harmless]) - float(j[harmless])
        out["RC" if d > 0 else "tie" if d == 0 else "non-RC"].append(dict(r, harmless_gap=d))
    for s, rs in out.items():
        if len(rs) > per_set:
            out[s] = [rs[i] for i in sorted(rng.choice(len(rs), per_set, replace=False))]
    return out


# ----------------------------------------------------------------------------------------------- report
def measure(
    sets: Dict[str, List[dict]],
    dirs: Dict[str, List[np.ndarray]],
    g1: Dict[str, np.ndarray],
    beta: float,
    weights: Sequence[float],
) -> dict:
    out = {}
    for name, rows in sets.items():
        if not rows:
            continue
        gaps = np.array([r["harmless_gap"] for r in rows])
        entry = {"pairs": len(rows), "mean_harmless_gap": float(gaps.mean())}
        for gname, G in g1.items():
            gn = np.linalg.norm(G)
            dots = np.array([G @ d for d in dirs[name]])
            cos = dots / (gn * np.maximum(np.array([np.linalg.norm(d) for d in dirs[name]]), 1e-30))
            e = {
                "share_nonneg": float(np.mean(dots >= 0)),
                "cosine_mean": float(cos.mean()),
                "cosine_median": float(np.median(cos)),
                "cosines": [round(float(c), 5) for c in cos],
            }
            for loss in ("dpo", "modpo"):
                coef = np.array([loss_coefficients(loss, g, beta, weights) for g in gaps])
                e[f"mean_dot_{loss}"] = float(np.mean(coef * dots))  # first-order change of objective 1 per lr
            entry[gname] = e
        out[name] = entry
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", help="the stage-1 policy (default: train stage 1 of --config into --work)")
    ap.add_argument("--config", default=CONFIG)
    ap.add_argument("--per-set", type=int, default=256, help="pairs per RC / tie / non-RC set")
    ap.add_argument("--pairs", action="append", default=[], help="NAME=FILE: another stage-2 pair set (pairs.parquet)")
    ap.add_argument("--pg-prompts", type=int, default=256)
    ap.add_argument("--pg-n", type=int, default=8)
    ap.add_argument("--d1-pairs", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/gradient_conflict")
    ap.add_argument("--work", default="outputs/gradient-conflict")
    a = ap.parse_args(argv)

    import torch

    from rcs_ray.config import load_config
    from rcs_ray.config.stages import stage_train
    from rcs_ray.prompting import PromptRule
    from rcs_ray.user_paths import resolve_path

    torch.manual_seed(a.seed)
    start = time.time()
    cfg = load_config(a.config, [f"output_dir={a.work}", f"train.seed={a.seed}"])
    names = cfg.objective_names
    h = names.index("harmless")
    policy = a.policy
    if not policy:
        from rcs_ray import train

        log("training stage 1 (harmless, DPO on D1) ...")
        policy = train.run(cfg, stage=0, progress=False).model_dir
    base = resolve_path(cfg.policy.path, cfg.tinyworld)
    beta1, beta2 = stage_train(cfg, 0).beta, stage_train(cfg, 1).beta
    all_w = list(cfg.train.modpo_weights or [1.0 / len(names)] * len(names))
    weights = [all_w[names.index(cfg.stages[1].objective)], all_w[h]]  # (trained, margin) as modpo_loss takes
    rule = PromptRule.of(cfg.policy)  # chat template, system prompt, template variables
    pol = Policy(policy, cfg.train.max_length, rule)
    ref = Policy(base, cfg.train.max_length, rule)

    d1 = read_rows(resolve_path(cfg.stages[0].data.path, cfg.tinyworld))[: a.d1_pairs]
    d2 = read_rows(resolve_path(cfg.stages[1].data.path, cfg.tinyworld))
    eval_prompts = [r["prompt"] for r in read_rows(resolve_path(cfg.eval.prompts.path, cfg.tinyworld))][: a.pg_prompts]
    log(f"G1[pg] from {len(eval_prompts)} prompts x {a.pg_n} samples; G1[d1] from {len(d1)} D1 pairs")
    g1 = {"pg": g1_policy_gradient(pol, eval_prompts, a.pg_n, a.seed), "d1": g1_stage1_loss(pol, ref, d1, beta1)}
    g1_cos = float(g1["pg"] @ g1["d1"] / (np.linalg.norm(g1["pg"]) * np.linalg.norm(g1["d1"])))
    groups = {"D2 (original pairs)": split_by_rc(d2, h, a.per_set, a.seed)}
    for spec in a.pairs:
        name, _, path = spec.partition("=")
        groups[name] = split_by_rc(read_rows(path), h, a.per_set, a.seed)
    results = {}
    for group, sets in groups.items():
        log(f"{group}: per-pair gradients of " + ", ".join(f"{len(v)} {k}" for k, v in sets.items()))
        dirs = {s: pair_directions(pol, rows) for s, rows in sets.items()}
        results[group] = measure(sets, dirs, g1, beta2, weights)
        for s, rows in sets.items():
            if rows:
                results[group][s]["own_stage1"] = own_stage1_change(pol, ref, rows, dirs[s], beta1, beta2, weights)
    wall = round(time.time() - start, 1)
    meta = {
        "argv": sys.argv[1:] if argv is None else list(argv),
        "policy": policy,
        "pg_prompts": len(eval_prompts),
        "pg_n": a.pg_n,
        "d1_pairs": len(d1),
        "g1_cosine": g1_cos,
        "beta_stage1": beta1,
        "beta_stage2": beta2,
        "modpo_weights": weights,
        "wall_seconds": wall,
        "seed": a.seed,
        "parameters": int(sum(p.numel() for p in pol.params)),
    }
    meta = relative_paths(meta, os.getcwd())
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "gradient_conflict.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    md = markdown(results, meta)
    with open(os.path.join(a.out, "gradient_conflict.md"), "w") as f:
        f.write(md)
    plot(results, os.path.join(a.out, "gradient_conflict.png"))
    print(md)
    print(f"wall time {wall} s; wrote {a.out}/gradient_conflict.json, .md, .png")


if __name__ == "__main__":
    main()
