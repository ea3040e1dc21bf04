"""What each ``rcs-ray`` command does: load the config, take the output directory's lock, call the library, print
where the outputs went. Thin: the work is in the library (:mod:`rcs_ray.cli` parses the line and handles errors)."""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

from rcs_ray import storage
from rcs_ray.errors import RcsInputError

DEFAULT_DEMO_CONFIG = os.path.join("configs", "tiny", "demo.yaml")


def _find_config(path: str) -> str:
    """``path`` as given if it exists, else relative to the repository this package lives in."""
    if os.path.exists(path):
        return path
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidate = os.path.join(repo, path)
    return candidate if os.path.exists(candidate) else path


def _locked(cfg, out: Optional[str], args):
    """The lock on the directory a command writes into (``--out``, else ``output_dir``): one run per directory."""
    from rcs_ray.storage.lock import RunLock

    return RunLock(out or cfg.output_dir, " ".join(["rcs-ray", args.command, getattr(args, "config", "") or ""]))


def _cmd_config(args) -> int:
    from rcs_ray.config import explain, load_config, to_yaml

    if args.explain is not None:
        if args.config or args.overrides:
            args.parser.error("--explain KEY takes no config file or overrides")
        print(explain(args.explain))
        return 0
    if not args.config:
        args.parser.error("a config file is needed (or --explain KEY)")
    print(to_yaml(load_config(_find_config(args.config), args.overrides)), end="")
    return 0


def _cmd_analyze(args) -> int:
    from rcs_ray.config import DataConfig
    from rcs_ray.dataset_analysis import analyze_dataset

    columns = {}
    for item in args.column or []:
        canon, sep, col = item.partition("=")
        if not sep or not canon or not col:
            raise RcsInputError(f"--column {item!r} is not canonical=column (e.g. prompt=question)")
        columns[canon] = col
    data = DataConfig(
        path=args.data,
        format=args.format,
        preset=args.preset,
        objective=args.objective,
        columns=columns,
        split=args.split,
        limit=args.limit,
        on_bad_row=args.on_bad_row,
        score_names=args.score_names.split(",") if args.score_names else None,
    )
    out = args.out or os.path.join("outputs", "analyze", _stem(args.data))
    result = analyze_dataset(
        data, out_dir=out, target=args.target, enforce=args.enforce.split(",") if args.enforce else None
    )
    print(result.summary())
    return 0


def _stem(path: str) -> str:
    base = os.path.basename(os.path.normpath(path.split(":", 1)[-1]))
    return base.split(".")[0] or "data"


def _cmd_sample(args) -> int:
    from rcs_ray.config import load_config
    from rcs_ray.sampling import run

    cfg = load_config(_find_config(args.config), args.overrides)
    with _locked(cfg, args.out, args):
        result = run(
            cfg,
            stage=None if args.stage is None else args.stage - 1,
            policy=args.policy,
            out_dir=args.out,
            progress=not args.no_progress,
        )
    s = result.stats
    print(
        f"stage {s['stage']}: {s['prompts']} prompts -> {s['pairs']} pairs, {s['failed']} failed "
        f"({100 * s['failure_rate']:.2f}%), {s['tokens_generated']} tokens in {s['seconds']:.1f}s"
    )
    if s["failed_by_reason"]:
        print("  failed by reason: " + ", ".join(f"{k}={v}" for k, v in s["failed_by_reason"].items()))
    print(f"  pairs:  {result.pairs}\n  failed: {result.failed}\n  stats:  {result.stats_path}")
    return 0


def _cmd_select(args) -> int:
    from rcs_ray.sampling.select import select
    from rcs_ray.storage import StagedDir

    def names(value):
        return [v.strip() for v in value.split(",") if v.strip()] if value else None

    staged = StagedDir(args.out, key="--out")
    s = select(
        args.candidates,
        staged.local,
        strategy=args.strategy,
        margin=args.margin,
        enforce=names(args.enforce),
        target=args.target,
        weights=[float(w) for w in names(args.weights)] if args.weights else None,
        seed=args.seed,
        truncated=args.truncated,
        rs_tau=args.rs_tau,
        rs_eta=args.rs_eta,
    )
    staged.push("pairs.parquet", "failed.parquet", "stats.json")
    print(
        f"{s['strategy']}: {s['prompts']} groups -> {s['pairs']} pairs, {s['failed']} failed "
        f"({100 * s['failure_rate']:.2f}%)"
        + (
            "; failed by reason: " + ", ".join(f"{k}={v}" for k, v in s["failed_by_reason"].items())
            if s["failed_by_reason"]
            else ""
        )
    )
    print(f"  pairs:  {storage.join(staged.home, 'pairs.parquet')}")
    print(f"  failed: {storage.join(staged.home, 'failed.parquet')}")
    return 0


def _cmd_train(args) -> int:
    from rcs_ray.config import load_config
    from rcs_ray.train import run

    cfg = load_config(_find_config(args.config), args.overrides)
    with _locked(cfg, args.out, args):
        result = run(
            cfg,
            stage=None if args.stage is None else args.stage - 1,
            pairs=args.pairs,
            policy=args.policy,
            reference=args.reference,
            out_dir=args.out,
            progress=not args.no_progress,
        )
    s, last = result.summary, result.summary["last"] or {}
    print(
        f"stage {s['stage']}: {s['loss']} on {s['pairs']} pairs, {s['steps']} steps in {s['seconds']:.1f}s; "
        f"final loss {last.get('loss', float('nan')):.4f}, reward accuracy "
        f"{last.get('rewards/accuracy', float('nan')):.3f}"
    )
    print(f"  model:   {result.model_dir}\n  metrics: {result.metrics_path}\n  summary: {result.summary_path}")
    return 0


def _cmd_run(args) -> int:
    from rcs_ray.config import load_config
    from rcs_ray.workflow import run_workflow

    cfg = load_config(_find_config(args.config), args.overrides)
    with _locked(cfg, None, args):
        result = run_workflow(cfg, progress=not args.no_progress)
    for st in result.stages:
        skipped = f" (unchanged, skipped: {', '.join(st.skipped)})" if st.skipped else ""
        print(f"stage {st.stage} ({st.objective}){skipped}: {json.dumps(st.stats)}")
        print(f"  policy:   {st.policy}\n  manifest: {st.manifest}")
    print(f"workflow finished in {result.seconds:.0f}s; outputs under {storage.absolute(result.output_dir)}")
    return 0


def _cmd_eval(args) -> int:
    from rcs_ray.config import load_config
    from rcs_ray.evaluate import evaluate

    cfg = load_config(_find_config(args.config), args.overrides)
    policies = {}
    for item in args.policy or []:
        name, sep, path = item.partition("=")
        policies[name if sep else os.path.basename(os.path.normpath(item))] = path if sep else item
    reference = args.reference or cfg.policy.path
    policies = {"reference": reference, **policies}
    arrows = None
    if args.arrow:
        arrows = [tuple(a.split(":", 1)) for a in args.arrow]
        if any(len(a) != 2 for a in arrows):
            raise RcsInputError(f"--arrow takes FROM:TO (two policy names), got {args.arrow}")
    with _locked(cfg, args.out, args):
        result = evaluate(
            cfg, policies, reference="reference", out_dir=args.out, progress=not args.no_progress, arrows=arrows
        )
    print(storage.read_text(result.markdown))
    print(f"  report: {result.markdown}\n  plot:   {result.plot}\n  json:   {result.json}")
    return 0


def _cmd_plan(args) -> int:
    from rcs_ray.config import load_config
    from rcs_ray.planning import plan
    from rcs_ray.planning.cost import parse_rates

    cfg = load_config(_find_config(args.config), args.overrides)
    try:
        rates = parse_rates(args.rates)
    except ValueError as exc:
        raise RcsInputError(str(exc)) from None
    result = plan(cfg, gpus=args.gpus, cpus=args.cpus, rates=rates)
    print(result.report())
    if args.json:
        storage.write_text(args.json, json.dumps(result.as_dict(), indent=1) + "\n")
    for problem in result.problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if result.problems else 0


def _cmd_world(args) -> int:
    from rcs_ray.config import load_config
    from rcs_ray.demo import describe_world
    from rcs_ray.tinyworld import ensure_world

    cfg = load_config(_find_config(args.config), args.overrides)
    print(describe_world(ensure_world(cfg.tinyworld)))
    return 0


def _cmd_demo(args) -> int:
    from rcs_ray.config import load_config
    from rcs_ray.demo import run_demo

    cfg = load_config(_find_config(args.config), args.overrides)
    with _locked(cfg, None, args):
        run_demo(cfg)
    return 0
