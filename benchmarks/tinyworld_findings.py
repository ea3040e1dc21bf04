"""The paper's (arXiv 2504.11337) findings on the tiny world, through the system's own Ray pipeline and trainer.

K = 2 (``configs/tiny/k2.yaml``): one stage-1 policy per seed (harmlessness, DPO on D1 as it is); stage 2
(helpfulness) is trained in every way below, each from and regularised towards that stage-1 policy, with DPO, MODPO
and SPO, and all are evaluated on the same held-out prompts. Every sampled baseline is selected from **one** stored
candidate set (``candidates.parquet``, ``rcs_ray.sampling.select``): the methods differ only in the selection rule.

==============  =================================================================================================
method          stage-2 pairs
==============  =================================================================================================
rc / nonrc      D2's original pairs whose chosen is / is not at least as harmless (Table 1); rc is ``filter_only``
vanilla         D2's original pairs, all of them
rsdpo           max-gap target-only (RSDPO-style): the largest helpful gap, harmlessness ignored (``target_only``)
rsdpo_w         RSDPO-W: the largest gap of the equally weighted sum of both rewards among target wins (``weighted``)
rs_dpo          RS-DPO proper: every pair whose sigmoid(helpful gap / tau) > eta, several per prompt (``rs_dpo``)
nrcs            NRCS: a random RC pair (``rc_random``)
rcs             RCS: RC on harmlessness (ties tolerated, margin -0.5), the largest helpful gap
rcs_strict      RCS with strict RC (margin 0: a harmless tie is not RC)
rcs_implicit    RCS whose harmless reward is stage 1's implicit reward beta * log(pi_1 / pi_0): no reward model
rcs_n16 ...     RCS (and strict) from n = 16 candidates instead of 8 (DPO only)
rcs_strict_a..  strict RCS with adaptive resampling: prompts that fail at n = 8 get 16 samples (DPO only)
mixed           D1 and D2 in one DPO stage from the base policy (``configs/tiny/mixed.yaml``; DPO only)
rcs_iterative   iterative RCS (``stages.1.iterations: 2``; 3 for ``rcs_iterative3``): strict adaptive RCS on disjoint
                halves of the prompts, the second sampled from the policy the first trained (the workflow's own
                steps, ``rcs_ray.iterations``; DPO only, the same total prompts and training steps)
==============  =================================================================================================

The headline is the paper's metric: the harmless rate (share of responses with no harmful word) and the helpfulness
win rate against the stage-1 policy, and their mean. ``--sweep`` first trains every method with DPO at a few
(learning rate, beta) settings on seed 0 and keeps, per method, the setting with the best headline on *validation*
prompts (eval prompts 128-255, disjoint from the 0-127 reported), so no method loses to a bad setting.

K = 3 (``--k3``, ``configs/tiny/k3.yaml``): stage 3 (concise) from an RCS stage-2 policy: vanilla, RSDPO, RCS
(RC on harmless and helpful), selective RCS (Appendix G: RC on harmless only) and strict RCS. ``--control``: the
c = 0 world (no conflict), vanilla / non-RC / RSDPO / RCS.

    python benchmarks/tinyworld_findings.py --seeds 0,1,2 --k3 --control    # every method and loss (~25 min a seed)
    python benchmarks/tinyworld_findings.py --seeds 0 --sweep-only --merge DIR/findings.json   # the validation sweep

(The tables of docs/findings.md came from runs of this kind, each named with its arguments in ``findings.json``'s
``argv`` / ``earlier_argv``; its rows ran at lr 5e-5, β 0.1, and the sweep ran after them. ``--sweep`` would train
each method at the setting its sweep chose instead.)
    python benchmarks/tinyworld_findings.py --quick                                  # one seed, DPO, a few methods

Everything is cached under ``--work`` (rerun to resume; ``--fresh`` starts over); ``findings.json`` /
``findings.md`` go to ``--out``. ``--report-only`` rewrites the markdown from ``findings.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

# benchmarks/ is on sys.path as a script
from tinyworld_findings_methods import (
    CONTROL,
    DEFAULT_SETTING,
    K2,
    K2_METHODS,
    K3_METHODS,
    LOSSES,
    QUICK,
    k2_pairs,
    run_k2,
    run_k3,
    sweep,
)
from tinyworld_findings_report import aggregate, relative_paths, report, rows_of
from tinyworld_findings_world import SETTINGS, World, cached_json, log


def render(data: dict) -> str:
    return report(
        data, {m: v[0] for m, v in K2_METHODS.items()}, {m: v[0] for m, v in K3_METHODS.items()}, LOSSES, list(SETTINGS)
    )


def parser() -> argparse.ArgumentParser:
    """The command line; ``key=value`` config overrides (every run of every world) go anywhere on it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--methods", default=",".join(K2_METHODS), help=f"subset of {','.join(K2_METHODS)}")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--sweep", action="store_true", help="choose (lr, beta) per method on validation prompts (seed 0)")
    ap.add_argument("--k3", action="store_true", help="also the K = 3 stage-3 comparison")
    ap.add_argument("--control", action="store_true", help="also the c = 0 control world")
    ap.add_argument("--quick", action="store_true", help="one seed, DPO, 512 prompts, eval 64 x 4, a few methods")
    ap.add_argument("--limit", type=int, default=None, help="prompts of each sampled stage (default 1024)")
    ap.add_argument("--eval-prompts", type=int, default=None, help="held-out prompts (default 128)")
    ap.add_argument("--eval-n", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/tinyworld_findings")
    ap.add_argument("--work", default="outputs/tinyworld-findings", help="everything trained (kept: reruns resume)")
    ap.add_argument("--fresh", action="store_true", help="remove --work first")
    ap.add_argument("--report-only", action="store_true", help="rewrite findings.md from --out/findings.json")
    ap.add_argument("--merge", metavar="FINDINGS_JSON", help="add this run's seeds to an earlier findings.json's")
    ap.add_argument(
        "--sweep-only",
        action="store_true",
        help="only the validation sweep (on the first seed); with --merge it joins an earlier report",
    )
    ap.epilog = "key=value config overrides (every run of every world) go anywhere on the line"
    return ap


def main(argv=None):
    from rcs_ray.cli import parse_with_overrides

    ap = parser()
    a = parse_with_overrides(ap, argv)
    out, work = os.path.abspath(a.out), os.path.abspath(a.work)
    if a.report_only:
        data = json.load(open(os.path.join(out, "findings.json")))
        open(os.path.join(out, "findings.md"), "w").write(render(data))
        print(render(data))
        return
    methods = list(QUICK) if a.quick else [m for m in a.methods.split(",") if m]
    losses = ["dpo"] if a.quick else [x for x in a.losses.split(",") if x]
    bad = [m for m in methods if m not in K2_METHODS] + [x for x in losses if x not in LOSSES]
    if bad:
        ap.error(f"unknown method/loss {bad}")
    limit = a.limit or (512 if a.quick else 1024)
    eval_prompts = a.eval_prompts or (64 if a.quick else 128)
    common = [f"eval.prompts.limit={eval_prompts}", f"eval.n={a.eval_n}", *a.overrides]
    if a.fresh:
        shutil.rmtree(work, ignore_errors=True)
    seeds = [0] if a.quick else [int(x) for x in a.seeds.split(",") if x.strip()]
    if a.sweep_only and not a.merge:
        ap.error("--sweep-only needs --merge (the report it joins)")
    start = time.time()
    rows, results, sweep_result = run_seeds(a, work, seeds, common, methods, losses, limit)
    wall = round(time.time() - start, 1)
    earlier = []
    if a.merge:
        rows, results, seeds, wall, sweep_result, earlier = merged(ap, a, rows, results, seeds, wall, sweep_result)
    data = {
        "argv": sys.argv[1:] if argv is None else list(argv),
        "wall_seconds": wall,
        "earlier_argv": earlier,
        "cpus": os.cpu_count(),
        "seeds": seeds,
        "limit": limit,
        "eval_prompts": eval_prompts,
        "eval_n": a.eval_n,
        "methods": methods,
        "losses": losses,
        "sweep": sweep_result,
        "per_seed_rows": rows,
        "rows": aggregate(rows),
        "results": results,
    }
    write_findings(out, data)


def run_seeds(
    a: argparse.Namespace, work: str, seeds: list, common: list, methods: list, losses: list, limit: int
) -> tuple:
    """Every seed's worlds (the sweep first when asked, on the first seed): the per-seed rows, the results by world
    and seed, and the sweep's result (None without one)."""
    rows, results, best, sweep_result = [], {}, {}, None
    sampled = [m for m in methods if m != "mixed"]  # k2_pairs' methods: mixed trains on D1 + D2 as they are
    for seed in seeds:
        so = common + [f"sampling.seed={seed}", f"train.seed={seed}"]
        if (a.sweep or a.sweep_only) and not best:
            w = World(K2, os.path.join(work, f"seed{seed}", "c0.9"), so, limit)
            s1 = w.stage_policy(0)
            sweep_result = cached_json(
                os.path.join(work, "sweep.json"), lambda w=w, s1=s1: sweep(w, methods, s1, k2_pairs(w, sampled, s1))
            )
            best = sweep_result["best"]
            log(f"sweep: chosen settings {best}")
        if a.sweep_only:
            break
        res = run_k2(os.path.join(work, f"seed{seed}", "c0.9"), so, methods, losses, limit, best)
        results[f"c0.9/seed{seed}"] = res
        rows += rows_of("c0.9", res, "stage1", DEFAULT_SETTING)
        if a.control:
            res = run_k2(
                os.path.join(work, f"seed{seed}", "c0"),
                so + ["tinyworld.conflict=0"],
                [m for m in CONTROL if m in methods],
                ["dpo"],
                limit,
                {},
            )
            results[f"c0/seed{seed}"] = res
            rows += rows_of("c0", res, "stage1", DEFAULT_SETTING)
        if a.k3:
            res = run_k3(os.path.join(work, f"seed{seed}", "k3"), so, limit)
            results[f"k3/seed{seed}"] = res
            rows += rows_of("k3", res, "stage2", DEFAULT_SETTING)
    return rows, results, sweep_result


def merged(
    ap: argparse.ArgumentParser,
    a: argparse.Namespace,
    rows: list,
    results: dict,
    seeds: list,
    wall: float,
    sweep_result,
) -> tuple:
    """This run joined to the earlier ``--merge`` findings.json: rows, results, seeds, wall seconds, the sweep and
    the earlier command lines (``ap.error`` when both ran the same world and seed)."""
    old = json.load(open(a.merge))
    clash = sorted(set(old["results"]) & set(results))
    if clash:
        ap.error(f"--merge: {a.merge} already has {clash}")
    rows, results = old["per_seed_rows"] + rows, {**old["results"], **results}
    seeds = sorted(set(old["seeds"]) | (set() if a.sweep_only else set(seeds)))
    wall += old["wall_seconds"]
    sweep_result = sweep_result or old.get("sweep")
    earlier = old.get("earlier_argv", []) + [old["argv"]]
    return rows, results, seeds, wall, sweep_result, earlier


def write_findings(out: str, data: dict) -> None:
    """``findings.json`` (repository-relative paths) and ``findings.md`` into ``out``; the markdown printed."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "findings.json"), "w") as f:
        json.dump(relative_paths(data, os.getcwd()), f, indent=1)
    md = render(data)
    with open(os.path.join(out, "findings.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"\nwall time {data['wall_seconds']} s; wrote {out}/findings.md and findings.json")


if __name__ == "__main__":
    main()
