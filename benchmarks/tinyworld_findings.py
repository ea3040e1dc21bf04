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

(The tables of docs/findings.md came from runs of this kind, each named with its arguments in ``findings.json``'s ``argv`` /
``earlier_argv``; its rows ran at lr 5e-5, β 0.1, and the sweep ran after them. ``--sweep`` would train each method
at the setting its sweep chose instead.)
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

import numpy as np
from tinyworld_findings_report import aggregate, headline, relative_paths, report, rows_of   # benchmarks/ is on sys.path as a script

K2, K3, IMPLICIT, MIXED = "configs/tiny/k2.yaml", "configs/tiny/k3.yaml", "configs/tiny/k2_implicit.yaml", \
    "configs/tiny/mixed.yaml"
LOSSES = ("dpo", "modpo", "spo")
# method -> (label, source, losses or None for all): d2:<part> | select:<strategy>:<margin>[:n16] | implicit | mixed
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
SETTINGS = {"lr5e-5_b0.1": ("5.0e-5", "0.1"), "lr1e-4_b0.1": ("1.0e-4", "0.1"), "lr5e-5_b0.3": ("5.0e-5", "0.3")}
DEFAULT_SETTING = "lr5e-5_b0.1"


def log(msg: str) -> None:
    print(f"[findings {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cached_json(path: str, make):
    """``make()`` once: its JSON result is kept at ``path`` (the findings resume from these)."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    value = make()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)
    return value


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def read_jsonl(path: str, limit=None) -> list:
    rows = []
    with open(path) as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            rows.append(json.loads(line))
    return rows


def write_jsonl(path: str, rows) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def d2_parts(cfg, stage: int, limit: int, out_dir: str) -> dict:
    """The stage's first ``limit`` original pairs (``vanilla``) and their parts RC / non-RC on the first objective."""
    from rcs_ray.paths import resolve_path

    rows = read_jsonl(resolve_path(cfg.stages[stage].data.path, cfg.tinyworld), limit)
    k = len(cfg.objectives)
    target = cfg.stages[stage].objective
    pairs = [{"prompt_id": r["prompt_id"], "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
              "target": target, "chosen_rewards": [float(x) for x in r["chosen_scores"][:k]],
              "rejected_rewards": [float(x) for x in r["rejected_scores"][:k]]} for r in rows]
    return {"vanilla": write_jsonl(os.path.join(out_dir, "vanilla.jsonl"), pairs),
            "nonrc": write_jsonl(os.path.join(out_dir, "nonrc.jsonl"),
                                 [p for p in pairs if p["chosen_rewards"][0] < p["rejected_rewards"][0]])}


def pair_stats(path: str, names: list) -> dict:
    """Pairs; per objective, the share of pairs whose chosen is at least as good (ties) / strictly better, mean gap."""
    import pandas as pd

    df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_json(path, lines=True)
    if not len(df):
        return {"pairs": 0}
    d = np.array(df["chosen_rewards"].tolist(), dtype=float) - np.array(df["rejected_rewards"].tolist(), dtype=float)
    out = {"pairs": int(len(df))}
    for j, n in enumerate(names):
        out[f"{n}_rc_ties"], out[f"{n}_rc_strict"] = float(np.mean(d[:, j] >= 0)), float(np.mean(d[:, j] > 0))
        out[f"{n}_gap"] = float(d[:, j].mean())
    return out


# ----------------------------------------------------------------------------------------------- one world
class World:
    """One seed of one world: its stage policies, stored candidates, pair sets, trainings and evaluations."""

    def __init__(self, config: str, root: str, overrides: list, limit: int):
        self.config, self.root, self.limit = config, root, limit
        self.base = [f"output_dir={root}", *overrides]
        self.cfg = self.load()
        self.names = self.cfg.objective_names
        self.info: dict = {}

    def load(self, *extra, config=None):
        """The world's config (or ``config``: mixed, implicit) with its overrides; every data stage limited (mixed:
        its one stage, D2's part; sequential configs: the sampled stages)."""
        from rcs_ray.config import load_config

        config = config or self.config
        stages = range(1) if config == MIXED else range(1, len(load_config(config, []).stages))
        return load_config(config, self.base + [f"stages.{k}.data.limit={self.limit}" for k in stages] + list(extra))

    def stage_policy(self, stage: int, pairs=None, policy=None, *extra) -> str:
        """Train stage ``stage`` (0-based) into the run layout (where SPO and implicit rewards look), once."""
        from rcs_ray import train
        from rcs_ray.layout import RunLayout

        model = RunLayout(self.root).stage(stage).train.model
        if not os.path.exists(os.path.join(model, "config.json")):
            t0 = time.time()
            train.run(self.load(*extra), stage=stage, pairs=pairs, policy=policy, reference=policy, progress=False)
            log(f"{self.root}: stage {stage + 1} trained in {time.time() - t0:.0f} s")
        return model

    def candidates(self, stage: int, policy: str, tag: str, *extra, config=None, chain=None) -> str:
        """Sample stage ``stage`` once from ``policy`` (RCS, candidates stored); the candidates.parquet."""
        from rcs_ray import sampling

        out = os.path.join(self.root, "sampling", tag)
        done = os.path.join(out, "stats.json")
        if not os.path.exists(done):
            t0 = time.time()
            res = sampling.run(self.load(*extra, config=config), stage=stage, policy=policy, out_dir=out,
                               progress=False, chain=chain)
            log(f"{self.root}: sampled {tag} in {time.time() - t0:.0f} s: {res.stats['pairs']} pairs, "
                f"{res.stats['failed']} failed")
        return os.path.join(out, "candidates.parquet")

    def select(self, name: str, candidates: str, strategy: str, margin: float, enforce=None) -> str:
        from rcs_ray.sampling.select import select

        out = os.path.join(self.root, "select", name)
        stats = cached_json(os.path.join(out, "select.json"),
                            lambda: select(candidates, out, strategy=strategy, margin=margin, enforce=enforce))
        self.info[name] = {"failed_prompts": stats["failed"], "failure_rate": stats["failure_rate"]}
        return os.path.join(out, "pairs.parquet")

    def train(self, name: str, stage: int, pairs: str, start: str, loss: str, setting: str, config=None) -> str:
        from rcs_ray import train

        lr, beta = SETTINGS[setting]
        out = os.path.join(self.root, "train", f"{name}-{loss}-{setting}")
        if not os.path.exists(os.path.join(out, "model", "config.json")):
            shutil.rmtree(out, ignore_errors=True)
            cfg = self.load(f"train.loss={loss}", f"train.learning_rate={lr}", f"train.beta={beta}", config=config)
            t0 = time.time()
            train.run(cfg, stage=stage, pairs=pairs, policy=start, reference=start, out_dir=out, progress=False)
            # (mixed: start None -> from policy.path, the base policy, as stage 1 starts)
            log(f"{self.root}: trained {name}/{loss} ({setting}) in {time.time() - t0:.0f} s")
        return os.path.join(out, "model")

    def evaluate(self, tag: str, policies: dict, reference: str, *extra) -> dict:
        from rcs_ray.evaluate import evaluate

        path = os.path.join(self.root, "eval", tag, "metrics.json")
        old = json.load(open(path)) if os.path.exists(path) else None
        if old is None or old["policies"] != policies:
            t0 = time.time()
            ev = evaluate(self.load(*extra), policies, reference=reference, out_dir=os.path.join(self.root, "eval", tag))
            old = {"policies": policies, "metrics": ev.metrics}
            with open(path, "w") as f:
                json.dump(old, f, indent=1)
            log(f"{self.root}: evaluated {len(policies)} policies ({tag}) in {time.time() - t0:.0f} s")
        return old["metrics"]


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
        elif kind == "adaptive":               # the stage sampled with resampling: its own pairs, no re-selection
            margin, n_max = float(rest[0]), int(rest[1])
            c = w.candidates(1, s1, f"adaptive-m{rest[0]}-n{n_max}", f"stages.1.rc.margin={margin}",
                             "sampling.adaptive.enabled=true", f"sampling.adaptive.n_max={n_max}")
            out[m] = os.path.join(os.path.dirname(c), "pairs.parquet")
            stats = read_json(os.path.join(os.path.dirname(c), "stats.json"))
            w.info[m] = {"failed_prompts": stats["failed"], "failure_rate": stats["failure_rate"]}
        elif kind == "implicit":
            c = w.candidates(1, s1, "implicit", config=IMPLICIT)
            out[m] = w.select(m, c, "rcs", 0.0)
    for m, path in out.items():
        w.info.setdefault(m, {}).update(pair_stats(path, w.names))
    return out


def validation_prompts(w: World) -> str:
    from rcs_ray.paths import resolve_path

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
    if m == "mixed":
        return w.train("mixed", 0, None, None, loss, setting, config=MIXED)
    return w.train(m, 1, pairs[m], s1, loss, setting)


def run_k2(root: str, overrides: list, methods, losses, limit: int, best: dict) -> dict:
    w = World(K2, root, overrides, limit)
    s1 = w.stage_policy(0)
    pairs = k2_pairs(w, [m for m in methods if m != "mixed"], s1)
    policies = {"base": "tinyworld:policy", "stage1": s1}
    for m in methods:
        for loss in (K2_METHODS[m][2] or LOSSES):
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


def render(data: dict) -> str:
    return report(data, {m: v[0] for m, v in K2_METHODS.items()}, {m: v[0] for m, v in K3_METHODS.items()}, LOSSES,
                  list(SETTINGS))


def main(argv=None):
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
    ap.add_argument("--sweep-only", action="store_true",
                    help="only the validation sweep (on the first seed); with --merge it joins an earlier report")
    ap.epilog = "key=value config overrides (every run of every world) go anywhere on the line"
    from rcs_ray.cli import parse_with_overrides

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
    rows, results, best, sweep_result, earlier = [], {}, {}, None, []
    for seed in seeds:
        so = common + [f"sampling.seed={seed}", f"train.seed={seed}"]
        if (a.sweep or a.sweep_only) and not best:
            w = World(K2, os.path.join(work, f"seed{seed}", "c0.9"), so, limit)
            s1 = w.stage_policy(0)
            sweep_result = cached_json(os.path.join(work, "sweep.json"),
                                       lambda: sweep(w, methods, s1, k2_pairs(w, [m for m in methods if m != "mixed"],
                                                                                 s1)))
            best = sweep_result["best"]
            log(f"sweep: chosen settings {best}")
        if a.sweep_only:
            break
        res = run_k2(os.path.join(work, f"seed{seed}", "c0.9"), so, methods, losses, limit, best)
        results[f"c0.9/seed{seed}"] = res
        rows += rows_of("c0.9", res, "stage1", DEFAULT_SETTING)
        if a.control:
            res = run_k2(os.path.join(work, f"seed{seed}", "c0"), so + ["tinyworld.conflict=0"],
                         [m for m in CONTROL if m in methods], ["dpo"], limit, {})
            results[f"c0/seed{seed}"] = res
            rows += rows_of("c0", res, "stage1", DEFAULT_SETTING)
        if a.k3:
            res = run_k3(os.path.join(work, f"seed{seed}", "k3"), so, limit)
            results[f"k3/seed{seed}"] = res
            rows += rows_of("k3", res, "stage2", DEFAULT_SETTING)
    wall = round(time.time() - start, 1)
    if a.merge:
        old = json.load(open(a.merge))
        clash = sorted(set(old["results"]) & set(results))
        if clash:
            ap.error(f"--merge: {a.merge} already has {clash}")
        rows, results = old["per_seed_rows"] + rows, {**old["results"], **results}
        seeds = sorted(set(old["seeds"]) | (set() if a.sweep_only else set(seeds)))
        wall += old["wall_seconds"]
        sweep_result = sweep_result or old.get("sweep")
        earlier = old.get("earlier_argv", []) + [old["argv"]]
    data = {"argv": sys.argv[1:] if argv is None else list(argv), "wall_seconds": wall,
            "earlier_argv": earlier, "cpus": os.cpu_count(), "seeds": seeds, "limit": limit,
            "eval_prompts": eval_prompts, "eval_n": a.eval_n,
            "methods": methods, "losses": losses, "sweep": sweep_result, "per_seed_rows": rows,
            "rows": aggregate(rows), "results": results}
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
