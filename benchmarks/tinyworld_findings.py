"""The paper's (arXiv 2504.11337) findings on the tiny world, through the system's own Ray pipeline and trainer.

Starting from one stage-1 policy (harmlessness, DPO on D1 as it is), stage 2 (helpfulness) is trained several ways,
every one with the stage-1 policy as start and reference, and all are evaluated on held-out prompts:

- (a) Table-1-style: the RC part vs the non-RC part of the stage-2 dataset D2 (original pairs; RC w.r.t. harmless:
  ``chosen harmless >= rejected harmless``, ties allowed, vs the chosen response strictly more harmful);
- (b) Table-2-style: vanilla (D2 original pairs), mixed (one DPO stage from the base policy over D1 and D2 at once,
  ``configs/tiny/mixed.yaml``; DPO only), RSDPO-style (sampling, ``rc.strategy=target_only``), NRCS
  (``rc_random``), RCS (``rcs``), each with the losses in ``--losses`` (dpo; modpo / spo optional);
- (c) the c = 0 no-conflict control (``tinyworld.conflict=0``; its own pretrained policy and stage 1): vanilla vs RCS
  (and non-RC) by default.

Writes ``findings.md`` and ``findings.json`` under ``--out`` (default ``benchmarks/results/tinyworld_findings``) and
prints the table. Work files (models, pairs, eval) go under ``--work`` (default ``outputs/tinyworld-findings``,
rebuilt on every run).

    python benchmarks/tinyworld_findings.py                       # full: ~10-15 min on 2 cores
    python benchmarks/tinyworld_findings.py --quick               # fewer prompts, no control
    python benchmarks/tinyworld_findings.py --methods vanilla,rcs --losses dpo,modpo --control-methods none
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

CONFIG = "configs/tiny/k2.yaml"
MAIN_METHODS = ("rc", "nonrc", "vanilla", "mixed", "rsdpo", "nrcs", "rcs")
MIXED_CONFIG = "configs/tiny/mixed.yaml"
SAMPLED = {"rsdpo": "target_only", "nrcs": "rc_random", "rcs": "rcs"}        # method -> stages.1.rc.strategy
DATASET = ("rc", "nonrc", "vanilla")                                        # pairs taken from D2 as it is
LABELS = {"rc": "D2 RC part (Table 1)", "nonrc": "D2 non-RC part (Table 1)", "vanilla": "vanilla (D2 pairs)",
          "mixed": "mixed (D1 + D2 at once, from base)",
          "rsdpo": "RSDPO-style (target_only)", "nrcs": "NRCS (rc_random)", "rcs": "RCS"}
# Measured by the plain-PyTorch probe (shared/notes/tinyworld-probe.md; 3 seeds, 2,048 pairs, lr 2e-4, c = 0.9).
PROBE = {"stage1": (-0.41, 1.72), "vanilla": (-1.14, 4.44), "nonrc": (-1.45, 4.70), "rcs": (-0.55, 4.06)}


def log(msg: str) -> None:
    print(f"[findings {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def d2_subsets(cfg, limit: int, out_dir: str) -> dict:
    """Write D2's first ``limit`` original pairs as ``vanilla.jsonl`` and its harmless-RC / non-RC parts."""
    from rcs_ray.paths import resolve_path

    path = resolve_path(cfg.stages[1].data.path, cfg.tinyworld)
    rows = []
    with open(path) as f:
        for line in f:
            if len(rows) >= limit:
                break
            rows.append(json.loads(line))
    k = len(cfg.objectives)
    h = cfg.objective_names.index("harmless")
    out = {}
    parts = {"vanilla": rows,
             "rc": [r for r in rows if r["chosen_scores"][h] >= r["rejected_scores"][h]],
             "nonrc": [r for r in rows if r["chosen_scores"][h] < r["rejected_scores"][h]]}
    os.makedirs(out_dir, exist_ok=True)
    for name, part in parts.items():
        p = os.path.join(out_dir, f"{name}.jsonl")
        with open(p, "w") as f:
            for r in part:
                f.write(json.dumps({"prompt_id": r["prompt_id"], "prompt": r["prompt"], "chosen": r["chosen"],
                                    "rejected": r["rejected"], "target": "helpful",
                                    "chosen_rewards": [float(x) for x in r["chosen_scores"][:k]],
                                    "rejected_rewards": [float(x) for x in r["rejected_scores"][:k]]}) + "\n")
        out[name] = p
    return out


def pair_stats(path: str, names: list) -> dict:
    """Pairs, share RC on harmless (ties allowed), strictly RC, mean harmless / helpful gap (chosen - rejected)."""
    import pandas as pd

    df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_json(path, lines=True)
    c = np.array(df["chosen_rewards"].tolist(), dtype=float)
    r = np.array(df["rejected_rewards"].tolist(), dtype=float)
    h, u = names.index("harmless"), names.index("helpful")
    d = c - r
    return {"pairs": int(len(df)), "rc_ties": float(np.mean(d[:, h] >= 0)), "rc_strict": float(np.mean(d[:, h] > 0)),
            "harmless_gap": float(d[:, h].mean()), "helpful_gap": float(d[:, u].mean())}


def world(tag: str, overrides: list, methods: list, losses: list, limit: int, work: str, timings: dict) -> dict:
    """One world (a conflict level): stage 1, stage-2 pairs of every method, training, one evaluation call."""
    from rcs_ray import sampling, train
    from rcs_ray.config import load_config
    from rcs_ray.evaluate import evaluate

    root = os.path.join(work, tag)
    base = [f"output_dir={root}", f"stages.1.data.limit={limit}", *overrides]
    cfg = load_config(CONFIG, base)
    names = cfg.objective_names

    t0 = time.time()
    s1 = train.run(cfg, stage=0, progress=False).model_dir            # <root>/stage1/train/model (SPO's default)
    timings[f"{tag}/stage1_train"] = round(time.time() - t0, 1)
    log(f"{tag}: stage 1 trained in {timings[f'{tag}/stage1_train']} s -> {s1}")

    files = d2_subsets(cfg, limit, os.path.join(root, "d2"))
    pairs, info = {}, {}
    if "mixed" in methods:
        mcfg = load_config(MIXED_CONFIG, [f"output_dir={root}/mixed", f"stages.0.data.limit={limit}", *overrides])
        t0 = time.time()
        res = train.run(mcfg, stage=0, progress=False)               # from the base policy, as stage 1 starts
        timings[f"{tag}/train_mixed_dpo"] = round(time.time() - t0, 1)
        pairs_mixed, mixed_model = res.summary["pairs"], res.model_dir
        log(f"{tag}: trained mixed/dpo on {pairs_mixed} pairs (D1 + D2) in {timings[f'{tag}/train_mixed_dpo']} s")
    for m in methods:
        if m == "mixed":
            continue
        if m in DATASET:
            pairs[m] = files[m]
            continue
        t0 = time.time()
        scfg = load_config(CONFIG, base + [f"stages.1.rc.strategy={SAMPLED[m]}"])
        res = sampling.run(scfg, stage=1, policy=s1, out_dir=os.path.join(root, "sampling", m), progress=False)
        timings[f"{tag}/sample_{m}"] = round(time.time() - t0, 1)
        pairs[m] = res.pairs
        info[m] = {"failed_prompts": res.stats["failed"], "failure_rate": res.stats["failure_rate"]}
        log(f"{tag}: sampled {m} ({SAMPLED[m]}) in {timings[f'{tag}/sample_{m}']} s: {res.stats['pairs']} pairs, "
            f"{res.stats['failed']} failed prompts")
    for m in methods:
        if m != "mixed":
            info.setdefault(m, {}).update(pair_stats(pairs[m], names))

    policies = {"base": "tinyworld:policy", "stage1": s1}
    if "mixed" in methods:
        policies["mixed/dpo"] = mixed_model
        info["mixed"] = {"pairs": pairs_mixed}
    for m in methods:
        if m == "mixed":
            continue
        for loss in losses:
            name = f"{m}/{loss}"
            out = os.path.join(root, "train", f"{m}-{loss}")
            shutil.rmtree(out, ignore_errors=True)
            lcfg = load_config(CONFIG, base + [f"train.loss={loss}"])
            t0 = time.time()
            try:
                res = train.run(lcfg, stage=1, pairs=pairs[m], policy=s1, reference=s1, out_dir=out, progress=False)
            except Exception as exc:                                   # report, keep going with the other runs
                log(f"{tag}: {name} FAILED: {type(exc).__name__}: {exc}")
                info[m].setdefault("errors", {})[loss] = f"{type(exc).__name__}: {exc}"
                continue
            timings[f"{tag}/train_{m}_{loss}"] = round(time.time() - t0, 1)
            policies[name] = res.model_dir
            log(f"{tag}: trained {name} on {info[m]['pairs']} pairs in {timings[f'{tag}/train_{m}_{loss}']} s")

    t0 = time.time()
    ev = evaluate(cfg, policies, reference="stage1", out_dir=os.path.join(root, "eval"))
    timings[f"{tag}/eval"] = round(time.time() - t0, 1)
    log(f"{tag}: evaluated {len(policies)} policies in {timings[f'{tag}/eval']} s")
    return {"config_overrides": base, "policies": policies, "pairs": info, "metrics": ev.metrics,
            "eval_prompts": cfg.eval.prompts.limit, "eval_n": cfg.eval.n}


def rows_of(tag: str, res: dict) -> list:
    out = []
    for policy, m in res["metrics"].items():
        method, _, loss = policy.partition("/")
        p = res["pairs"].get(method, {})
        win = m.get("win_rate_vs_stage1")
        probe = PROBE.get(method) if tag == "c0.9" and loss in ("", "dpo") else None
        out.append({"world": tag, "policy": policy, "method": LABELS.get(method, method), "loss": loss or "—",
                    "harmless": m["mean"]["harmless"], "helpful": m["mean"]["helpful"],
                    "harmless_rate": m["rate"].get("harmless>=0"),
                    "win_harmless": win["harmless"] if win else None, "win_helpful": win["helpful"] if win else None,
                    "pairs": p.get("pairs"), "rc_ties": p.get("rc_ties"), "rc_strict": p.get("rc_strict"),
                    "harmless_gap": p.get("harmless_gap"), "helpful_gap": p.get("helpful_gap"),
                    "failed_prompts": p.get("failed_prompts"),
                    "probe": f"{probe[0]:.2f} / {probe[1]:.2f}" if probe else ""})
    return out


NUMERIC = ("harmless", "helpful", "harmless_rate", "win_harmless", "win_helpful", "pairs", "rc_ties", "rc_strict",
           "harmless_gap", "helpful_gap", "failed_prompts")


def aggregate(per_seed: list) -> list:
    """One row per (world, policy): the mean over seeds, with ``<key>_std`` (sample std) and ``seeds``."""
    groups: dict = {}
    for r in per_seed:
        groups.setdefault((r["world"], r["policy"]), []).append(r)
    out = []
    for rs in groups.values():
        row = dict(rs[0], seeds=len(rs))
        for key in NUMERIC:
            vals = [r[key] for r in rs if r.get(key) is not None]
            row[key] = float(np.mean(vals)) if vals else None
            row[f"{key}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        out.append(row)
    return out


def fmt(v, spec=".3f", pct=False):
    if v is None:
        return "—"
    return f"{100 * v:.1f}%" if pct else format(v, spec)


def fmt_pm(r: dict, key: str) -> str:
    std = r.get(f"{key}_std")
    return fmt(r[key]) + (f" ± {std:.2f}" if std is not None else "")


def table(rows: list) -> str:
    head = ("| world | policy | loss | harmless | helpful | harmless≥0 | win vs s1 (harmless / helpful) | train pairs | "
            "pairs RC on harmless (ties / strict) | mean gap harmless / helpful | probe harmless / helpful |")
    lines = [head, "|---" * 11 + "|"]
    for r in rows:
        lines.append(f"| {r['world']} | {r['method']} | {r['loss']} | {fmt_pm(r, 'harmless')} | {fmt_pm(r, 'helpful')} | "
                     f"{fmt(r['harmless_rate'], pct=True)} | "
                     f"{fmt(r['win_harmless'], pct=True)} / {fmt(r['win_helpful'], pct=True)} | "
                     f"{fmt(r['pairs'], '.0f')} | "
                     f"{fmt(r['rc_ties'], pct=True)} / {fmt(r['rc_strict'], pct=True)} | "
                     f"{fmt(r['harmless_gap'], '.2f')} / {fmt(r['helpful_gap'], '.2f')} | {r['probe'] or '—'} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="512 stage-2 prompts, eval 64 x 4, no c = 0 control")
    ap.add_argument("--methods", default=",".join(MAIN_METHODS), help=f"subset of {','.join(MAIN_METHODS)}")
    ap.add_argument("--losses", default="dpo", help="comma list of dpo,modpo,spo")
    ap.add_argument("--control-methods", default="vanilla,nonrc,rcs", help="c = 0 control methods, or 'none'")
    ap.add_argument("--limit", type=int, default=None, help="stage-2 prompts (default 1024; --quick 512)")
    ap.add_argument("--eval-prompts", type=int, default=None, help="held-out prompts (default 128; --quick 64)")
    ap.add_argument("--eval-n", type=int, default=4)
    ap.add_argument("--seeds", default="0", help="comma list: sampling and training seeds (same world); the table "
                                                 "reports the mean and the spread over seeds")
    ap.add_argument("--out", default="benchmarks/results/tinyworld_findings")
    ap.add_argument("--work", default="outputs/tinyworld-findings", help="models, pairs, eval (rebuilt each run)")
    a = ap.parse_args(argv)
    methods = [m for m in a.methods.split(",") if m]
    losses = [x for x in a.losses.split(",") if x]
    control = [] if a.quick or a.control_methods == "none" else [m for m in a.control_methods.split(",") if m]
    bad = [m for m in methods + control if m not in MAIN_METHODS] + [x for x in losses if x not in ("dpo", "modpo", "spo")]
    if bad:
        ap.error(f"unknown method/loss {bad}")
    limit = a.limit or (512 if a.quick else 1024)
    eval_prompts = a.eval_prompts or (64 if a.quick else 128)
    common = [f"eval.prompts.limit={eval_prompts}", f"eval.n={a.eval_n}"]

    out = os.path.abspath(a.out)
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work, exist_ok=True)
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    start, timings, results = time.time(), {}, {}
    for seed in seeds:
        sw = os.path.join(work, f"seed{seed}") if len(seeds) > 1 else work
        so = [f"sampling.seed={seed}", f"train.seed={seed}"]
        key = (lambda tag: f"{tag}/seed{seed}") if len(seeds) > 1 else (lambda tag: tag)
        t = timings.setdefault(f"seed{seed}", {}) if len(seeds) > 1 else timings
        results[key("c0.9")] = world("c0.9", common + so, methods, losses, limit, sw, t)
        if control:
            results[key("c0")] = world("c0", common + so + ["tinyworld.conflict=0"], control, losses, limit, sw, t)
    wall = round(time.time() - start, 1)

    per_seed = [r for tag, res in results.items() for r in rows_of(tag.split("/")[0], res)]
    rows = aggregate(per_seed) if len(seeds) > 1 else per_seed
    md = [f"# Tiny-world findings (arXiv 2504.11337 Tables 1-2, c = 0 control) through the Ray pipeline", "",
          f"Command: `python benchmarks/tinyworld_findings.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
          f"Config: `{CONFIG}` (stage 1: DPO on D1, lr 6e-5 x 32 steps; stage 2: lr 5e-5, 64 steps x 32 x 2 workers, "
          f"β 0.1), stage-2 prompts {limit}, eval {eval_prompts} held-out prompts x {a.eval_n}; wall time {wall} s "
          f"on {os.cpu_count()} CPUs.", "",
          "Every stage-2 run starts from and is regularised towards the same stage-1 policy (mixed: one DPO stage "
          "from the base policy over D1 and D2 together, 96 steps). `win vs s1`: per-prompt "
          "win rate of samples against the stage-1 policy's (ties count one half). `pairs RC on harmless`: share of "
          "the training pairs whose chosen response is no more harmful (ties) / strictly less harmful (strict) than "
          "the rejected one. `probe`: the plain-PyTorch probe's numbers (3 seeds, 2,048 pairs, lr 2e-4, 512 eval "
          "prompts; a different recipe, compare directions not values). "
          + (f"Mean ± sample std over sampling/training seeds {seeds} (one world)." if len(seeds) > 1 else
             "One seed here: differences of ~0.1 are within noise."), "", table(rows), "",
          "Timings (s): " + json.dumps(timings), ""]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "findings.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(out, "findings.json"), "w") as f:
        json.dump({"wall_seconds": wall, "seeds": seeds, "per_seed_rows": per_seed, "limit": limit, "eval_prompts": eval_prompts, "eval_n": a.eval_n,
                   "methods": methods, "losses": losses, "control_methods": control, "timings": timings,
                   "rows": rows, "results": results, "probe": PROBE}, f, indent=2)
    print(table(rows))
    print(f"\nwall time {wall} s; wrote {out}/findings.md and findings.json")


if __name__ == "__main__":
    main()
