"""RC selection speed: groups/s of the pipeline's RC step (the columnar stage over an Arrow batch, and its flat
vectorized core) vs the list-of-groups call, a per-group call and a naive pure-Python loop, on one core.

Goal (issue 14): >= 300k groups/s per core at m = 10, K = 3. Also reports the RC stage's share of a pipeline run's
actor time when given that run's stats.json.

    python benchmarks/rc_select.py [--groups 4096] [--m 10] [--k 3] [--stats outputs/.../stats.json] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from rcs_ray.rc import select_pair, select_pairs, select_pairs_flat

GOAL = 300_000


def naive_select(rewards, target, enforce, margin):
    """The textbook double loop over candidate pairs (what a hand-rolled script does)."""
    best, best_gap = None, -float("inf")
    m = len(rewards)
    for w in range(m):
        for l in range(m):
            if rewards[w][target] - rewards[l][target] <= max(margin, 0.0):
                continue
            if all(rewards[w][j] - rewards[l][j] > margin for j in enforce if j != target):
                gap = rewards[w][target] - rewards[l][target]
                if gap > best_gap:
                    best, best_gap = (w, l), gap
    return best


def rc_stage(groups, k, target, margin):
    """The pipeline's RC step itself, :class:`RCFilterStage`, and one Arrow batch holding every group."""
    import pyarrow as pa

    from rcs_ray.config import RCConfig
    from rcs_ray.sampling.rc_step import RCFilterStage

    names = [f"o{j}" for j in range(k)]
    m = groups[0].shape[0]
    cols = {
        "prompt_id": [str(i) for i in range(len(groups))],
        "candidates": [[str(c) for c in range(m)]] * len(groups),
        "sources": [["sampled"] * m] * len(groups),
    }
    cols.update({f"reward__{n}": [g[:, j].tolist() for g in groups] for j, n in enumerate(names)})
    table = pa.table(cols)
    return RCFilterStage(names, names[target], RCConfig(strategy="rcs", margin=margin)), table


def stage_pairs(stage, table):
    out = stage(table)
    return [
        None if w is None else (w, l)
        for w, l in zip(out.column("chosen_index").to_pylist(), out.column("rejected_index").to_pylist())
    ]


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=4096)
    ap.add_argument("--m", type=int, default=10, help="candidates per group (n=8 + the 2 originals)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--margin", type=float, default=-0.5)
    ap.add_argument("--stats", help="a sampling run's stats.json: report the RC stage's share of actor time")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "rc_select.json"))
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    groups = [rng.integers(-3, 4, size=(args.m, args.k)).astype(float) for _ in range(args.groups)]
    lists = [g.tolist() for g in groups]
    target, enforce = args.k - 1, list(range(args.k))
    flat, offsets = np.concatenate(groups), np.arange(0, args.m * (args.groups + 1), args.m)
    t_flat, flat_out = timed(lambda: select_pairs_flat(flat, offsets, target, enforce, args.margin))
    stage, table = rc_stage(groups, args.k, target, args.margin)
    t_stage, staged = timed(lambda: stage_pairs(stage, table))
    t_vec, vec = timed(lambda: select_pairs(groups, target, enforce, args.margin))
    t_one, one = timed(lambda: [select_pair(g, target, enforce, args.margin) for g in groups])
    t_naive, naive = timed(lambda: [naive_select(g, target, enforce, args.margin) for g in lists], repeat=1)
    as_pairs = [None if w < 0 else (int(w), int(l)) for w, l in vec.tolist()]
    assert as_pairs == one == naive == staged, "the implementations disagree"
    assert (flat_out == vec).all()
    result = {
        "groups": args.groups,
        "candidates_per_group": args.m,
        "objectives": args.k,
        "margin": args.margin,
        "groups_per_s": {
            "rc_stage_columnar": args.groups / t_stage,
            "flat_core": args.groups / t_flat,
            "vectorized": args.groups / t_vec,
            "per_group": args.groups / t_one,
            "naive_python": args.groups / t_naive,
        },
        "goal_groups_per_s": GOAL,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "speedup_vectorized_vs_naive": t_naive / t_vec,
        "speedup_vectorized_vs_per_group": t_one / t_vec,
        "failed_groups": sum(p is None for p in as_pairs),
    }
    if args.stats:
        with open(args.stats) as fh:
            secs = json.load(fh)["actor_seconds_by_stage"]
        result["rc_stage_share_of_actor_time"] = secs.get("rc_filter", 0.0) / max(sum(secs.values()), 1e-12)
        result["actor_seconds_by_stage"] = secs
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    g = result["groups_per_s"]
    print(f"RC select, {args.groups} groups x {args.m} candidates x K={args.k} (goal {GOAL:,} groups/s per core):")
    print(
        f"  pipeline RC stage (Arrow batch in, columns out) {g['rc_stage_columnar']:,.0f} groups/s | its flat core "
        f"{g['flat_core']:,.0f}"
    )
    print(
        f"  vectorized {g['vectorized']:,.0f} groups/s | per-group {g['per_group']:,.0f} | "
        f"naive Python {g['naive_python']:,.0f}"
    )
    print(
        f"  ratio vectorized / naive = {result['speedup_vectorized_vs_naive']:.1f}x, "
        f"vectorized / per-group = {result['speedup_vectorized_vs_per_group']:.1f}x"
    )
    if "rc_stage_share_of_actor_time" in result:
        print(f"  RC stage share of the pipeline's actor time: {100 * result['rc_stage_share_of_actor_time']:.2f}%")
    print(f"  -> {args.out}")
    return result


if __name__ == "__main__":
    main()
