"""The sampling-budget sweep (the paper's Figure 4): failed prompts vs n, for K = 2 and 3, strict RC and ties allowed,
fixed n vs adaptive resampling. Every point is a real run of the Ray Data pipeline.

Writes ``sweep.csv``, ``sweep.json`` and ``sweep.png`` and prints, per setting, how adaptive resampling compares with
fixed n = max(n): failed prompts and tokens generated (the ratio we want well under 0.5).

    python benchmarks/sampling_budget_sweep.py [--ns 2,4,8,12,16] [--ks 2,3] [--prompts 128] [--out DIR]
    python benchmarks/sampling_budget_sweep.py --config configs/paper/pku_helpsteer_k2.yaml --ks 2   # on GPUs
    python benchmarks/sampling_budget_sweep.py --ks 2 --from-run outputs/tiny-k2   # from the trained stage-1 policy

By default every K samples from the config's ``policy.path`` (the base policy). ``--from-run DIR`` samples stage K from
the stage K-1 policy that ``rcs-ray run`` trained into ``DIR`` (``DIR/stage<K-1>/train/model``), as the workflow
does; ``--policy PATH`` uses one given model for every K.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile

from rcs_ray.config import load_config

TIE_POLICIES = {"strict": 0.0, "ties": -0.5}
K_CONFIGS = {2: "configs/tiny/k2.yaml", 3: "configs/tiny/k3.yaml"}


def one_run(config, k, margin, n, prompts, adaptive_max=None, extra=(), policy=None):
    from rcs_ray.sampling import run

    stage = k - 1
    overrides = [
        f"stages.{stage}.data.limit={prompts}",
        f"stages.{stage}.rc.margin={margin}",
        f"sampling.n={n}",
        *extra,
    ]
    if adaptive_max:
        rounds = 0
        while n * 2**rounds < adaptive_max:
            rounds += 1
        overrides += [
            "sampling.adaptive.enabled=true",
            f"sampling.adaptive.n_max={adaptive_max}",
            f"sampling.adaptive.rounds={rounds}",
        ]
    cfg = load_config(config, overrides)
    with tempfile.TemporaryDirectory() as out:
        s = run(cfg, stage=stage, policy=policy, out_dir=out, progress=False).stats
    return {
        "k": k,
        "tie_policy": [p for p, m in TIE_POLICIES.items() if m == margin][0],
        "margin": margin,
        "mode": "adaptive" if adaptive_max else "fixed",
        "n": n,
        "n_max": adaptive_max or n,
        "prompts": s["prompts"],
        "pairs": s["pairs"],
        "failed": s["failed"],
        "failure_rate": s["failure_rate"],
        "mean_target_gap": s["mean_target_gap"],
        "tokens_generated": s["tokens_generated"],
        "seconds": s["seconds"],
        "failed_by_reason": s["failed_by_reason"],
    }


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["k"] for r in rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(5.2 * len(ks), 3.8), squeeze=False)
    for ax, k in zip(axes[0], ks):
        for policy, style in (("strict", "-o"), ("ties", "--s")):
            fixed = sorted(
                (r for r in rows if r["k"] == k and r["tie_policy"] == policy and r["mode"] == "fixed"),
                key=lambda r: r["n"],
            )
            if fixed:
                ax.plot(
                    [r["n"] for r in fixed], [100 * r["failure_rate"] for r in fixed], style, label=f"fixed n, {policy}"
                )
            for r in rows:
                if r["k"] == k and r["tie_policy"] == policy and r["mode"] == "adaptive":
                    ax.plot(
                        [r["n_max"]],
                        [100 * r["failure_rate"]],
                        "*",
                        markersize=12,
                        label=f"adaptive {r['n']}→{r['n_max']}, {policy}",
                    )
        ax.set_xlabel("samples per prompt n")
        ax.set_ylabel("failed prompts (%)")
        ax.set_title(f"K = {k}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Failed prompts vs sampling budget (RCS)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="2,4,8,12,16")
    ap.add_argument("--ks", default="2,3")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--adaptive-start", type=int, default=2, help="adaptive resampling's first n")
    ap.add_argument(
        "--rules",
        default=",".join(TIE_POLICIES),
        help=f"RC rules to sweep, of {list(TIE_POLICIES)} (strict: margin 0; ties: margin -0.5)",
    )
    ap.add_argument("--config", help="one config for every K (default: configs/tiny/k<K>.yaml)")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "sampling_budget_sweep"))
    ap.add_argument("--policy", help="sample from this model for every K (default: the config's policy.path)")
    ap.add_argument("--from-run", help="sample stage K from DIR/stage<K-1>/train/model (a finished `rcs-ray run`)")
    ap.epilog = "key=value config overrides (for every run) go anywhere on the line"
    from rcs_ray.cli import parse_with_overrides

    args = parse_with_overrides(ap, argv)
    if args.policy and args.from_run:
        ap.error("give --policy or --from-run, not both")
    ns = [int(x) for x in args.ns.split(",")]
    ks = [int(x) for x in args.ks.split(",")]
    rules = [r for r in args.rules.split(",") if r]
    if not rules or set(rules) - set(TIE_POLICIES):
        ap.error(f"--rules: expected a comma-separated subset of {list(TIE_POLICIES)}, got {args.rules!r}")
    if max(ns) <= args.adaptive_start:
        ap.error(
            f"the largest --ns ({max(ns)}) must exceed --adaptive-start ({args.adaptive_start}): adaptive "
            f"resampling goes from --adaptive-start up to it"
        )
    os.makedirs(args.out, exist_ok=True)

    from rcs_ray.ray_runtime import init_ray
    from rcs_ray.run_layout import RunLayout

    init_ray(load_config(args.config or K_CONFIGS[ks[0]], args.overrides).ray)
    rows = []
    for k in ks:
        config = args.config or K_CONFIGS[k]
        model = args.policy
        if args.from_run:
            model = RunLayout(args.from_run).stage(k - 2).train.model  # the policy before stage k
            if not os.path.isdir(model):
                ap.error(f"--from-run: {model} does not exist (run `rcs-ray run` with {config} first)")
        for policy in rules:
            margin = TIE_POLICIES[policy]
            for n in ns:
                rows.append(one_run(config, k, margin, n, args.prompts, extra=args.overrides, policy=model))
                r = rows[-1]
                print(
                    f"K={k} {policy:6s} fixed n={n:2d}: failed {100 * r['failure_rate']:5.1f}%  "
                    f"tokens {r['tokens_generated']:7d}  {r['seconds']:.0f}s",
                    flush=True,
                )
            rows.append(
                one_run(
                    config,
                    k,
                    margin,
                    args.adaptive_start,
                    args.prompts,
                    adaptive_max=max(ns),
                    extra=args.overrides,
                    policy=model,
                )
            )
            r = rows[-1]
            print(
                f"K={k} {policy:6s} adaptive {args.adaptive_start}->{max(ns)}: failed "
                f"{100 * r['failure_rate']:5.1f}%  tokens {r['tokens_generated']:7d}  {r['seconds']:.0f}s",
                flush=True,
            )
    summary = []
    for k in ks:
        for policy in rules:
            fixed = next(
                r for r in rows if (r["k"], r["tie_policy"], r["mode"], r["n"]) == (k, policy, "fixed", max(ns))
            )
            adaptive = next(r for r in rows if (r["k"], r["tie_policy"], r["mode"]) == (k, policy, "adaptive"))
            summary.append(
                {
                    "k": k,
                    "tie_policy": policy,
                    "fixed_n": max(ns),
                    "fixed_failure_rate": fixed["failure_rate"],
                    "adaptive_failure_rate": adaptive["failure_rate"],
                    "token_ratio_adaptive_over_fixed": adaptive["tokens_generated"] / max(fixed["tokens_generated"], 1),
                }
            )
    with open(os.path.join(args.out, "sweep.json"), "w") as fh:
        json.dump(
            {"policy": args.policy, "from_run": args.from_run, "runs": rows, "adaptive_vs_fixed": summary}, fh, indent=2
        )
    with open(os.path.join(args.out, "sweep.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[c for c in rows[0] if c != "failed_by_reason"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    plot(rows, os.path.join(args.out, "sweep.png"))
    print("\nadaptive vs fixed n =", max(ns))
    for s in summary:
        print(
            f"  K={s['k']} {s['tie_policy']:6s}: failed {100 * s['adaptive_failure_rate']:.1f}% vs "
            f"{100 * s['fixed_failure_rate']:.1f}%, tokens ratio adaptive/fixed = "
            f"{s['token_ratio_adaptive_over_fixed']:.2f}"
        )
    print(f"-> {args.out}/sweep.csv, sweep.json, sweep.png")
    return rows, summary


if __name__ == "__main__":
    main()
