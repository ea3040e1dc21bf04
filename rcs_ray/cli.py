"""The ``rcs-ray`` command. Thin: parse arguments, call the library, print where outputs went.

Bad input (a malformed file, an unknown key, a missing path) prints ``error: <one line>`` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional, Sequence

from rcs_ray import __version__, storage
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
    from rcs_ray.config import load_config, to_yaml

    print(to_yaml(load_config(_find_config(args.config), args.overrides)), end="")
    return 0


def _cmd_analyze(args) -> int:
    from rcs_ray.config import DataConfig
    from rcs_ray.report import analyze_dataset

    columns = {}
    for item in args.column or []:
        canon, sep, col = item.partition("=")
        if not sep or not canon or not col:
            raise RcsInputError(f"--column {item!r} is not canonical=column (e.g. prompt=question)")
        columns[canon] = col
    data = DataConfig(path=args.data, format=args.format, preset=args.preset, objective=args.objective,
                      columns=columns, split=args.split, limit=args.limit, on_bad_row=args.on_bad_row,
                      score_names=args.score_names.split(",") if args.score_names else None)
    out = args.out or os.path.join("outputs", "analyze", _stem(args.data))
    result = analyze_dataset(data, out_dir=out, target=args.target,
                             enforce=args.enforce.split(",") if args.enforce else None)
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
        result = run(cfg, stage=None if args.stage is None else args.stage - 1, policy=args.policy, out_dir=args.out,
                     progress=not args.no_progress)
    s = result.stats
    print(f"stage {s['stage']}: {s['prompts']} prompts -> {s['pairs']} pairs, {s['failed']} failed "
          f"({100 * s['failure_rate']:.2f}%), {s['tokens_generated']} tokens in {s['seconds']:.1f}s")
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
    s = select(args.candidates, staged.local, strategy=args.strategy, margin=args.margin, enforce=names(args.enforce),
               target=args.target, weights=[float(w) for w in names(args.weights)] if args.weights else None,
               seed=args.seed)
    staged.push("pairs.parquet", "failed.parquet", "stats.json")
    print(f"{s['strategy']}: {s['prompts']} groups -> {s['pairs']} pairs, {s['failed']} failed "
          f"({100 * s['failure_rate']:.2f}%)" + ("; failed by reason: " + ", ".join(
              f"{k}={v}" for k, v in s["failed_by_reason"].items()) if s["failed_by_reason"] else ""))
    print(f"  pairs:  {storage.join(staged.home, 'pairs.parquet')}\n  failed: {storage.join(staged.home, 'failed.parquet')}")
    return 0


def _cmd_train(args) -> int:
    from rcs_ray.config import load_config
    from rcs_ray.train import run

    cfg = load_config(_find_config(args.config), args.overrides)
    with _locked(cfg, args.out, args):
        result = run(cfg, stage=None if args.stage is None else args.stage - 1, pairs=args.pairs, policy=args.policy,
                     reference=args.reference, out_dir=args.out, progress=not args.no_progress)
    s, last = result.summary, result.summary["last"] or {}
    print(f"stage {s['stage']}: {s['loss']} on {s['pairs']} pairs, {s['steps']} steps in {s['seconds']:.1f}s; "
          f"final loss {last.get('loss', float('nan')):.4f}, reward accuracy "
          f"{last.get('rewards/accuracy', float('nan')):.3f}")
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
    with _locked(cfg, args.out, args):
        result = evaluate(cfg, policies, reference="reference", out_dir=args.out, progress=not args.no_progress)
    print(storage.read_text(result.markdown))
    print(f"  report: {result.markdown}\n  plot:   {result.plot}\n  json:   {result.json}")
    return 0


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


OVERRIDES_HELP = "key=value config overrides (e.g. sampling.n=16) go anywhere on the line"


def is_override(token: str) -> bool:
    """A ``key=value`` config override (not an option, not an option's ``--opt=value``)."""
    key, sep, _ = token.partition("=")
    return bool(sep) and not token.startswith("-") and bool(key.strip())


def parse_with_overrides(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None):
    """``parser.parse_known_args`` with every ``key=value`` left over collected into ``args.overrides`` (in order),
    so overrides may stand before, between or after the options; anything else left over is a usage error (exit 2).

    A parser whose command takes no overrides (``accepts_overrides`` false) refuses them the same way.
    """
    args, rest = parser.parse_known_args(argv)
    overrides = [t for t in rest if is_override(t)]
    stray = [t for t in rest if not is_override(t)]
    target = getattr(args, "parser", None) or parser
    if is_override(getattr(args, "config", None) or ""):
        target.error(f"the config file comes first, then key=value overrides (got {args.config!r} as the config)")
    if stray or (overrides and not getattr(args, "accepts_overrides", True)):
        target.error(f"unrecognized arguments: {' '.join(stray or overrides)}")
    args.overrides = list(getattr(args, "overrides", None) or []) + overrides
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcs-ray", description="Reward Consistency Sampling for multi-objective alignment on Ray.",
        epilog=OVERRIDES_HELP)
    parser.add_argument("--version", action="version", version=f"rcs-ray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")

    def command(name: str, help: str, overrides: bool = True, **kwargs):
        p = sub.add_parser(name, help=help, parents=[verbose], epilog=OVERRIDES_HELP if overrides else None,
                           **kwargs)
        p.set_defaults(parser=p, accepts_overrides=overrides)
        return p

    def with_config(p, default=None):
        if default:
            p.add_argument("--config", default=default, help=f"YAML config (default {default})")
        else:
            p.add_argument("config", help="YAML config, e.g. configs/tiny/k2.yaml")
        p.usage = f"rcs-ray {p.prog.split()[-1]} {'[--config CONFIG]' if default else 'CONFIG'} [key=value ...] " \
                  f"[options]"

    p = command("demo", "the tiny-world end-to-end demo on this machine")
    with_config(p, DEFAULT_DEMO_CONFIG)
    p.set_defaults(func=_cmd_demo)

    p = command("analyze", "RC analysis of a preference dataset: RC rate, conflict matrix, report", overrides=False)
    p.add_argument("data", help="jsonl | parquet | HF dataset dir | dir of data files | tinyworld:data/<file>")
    p.add_argument("--preset", help="pku_saferlhf | helpsteer2 | ultrafeedback_binarized")
    p.add_argument("--objective", help="preset: the label that defines chosen/rejected (e.g. harmless)")
    p.add_argument("--format", default="auto", help="auto | jsonl | parquet | hf")
    p.add_argument("--split", help="split of a DatasetDict directory")
    p.add_argument("--limit", type=int, help="read at most N rows")
    p.add_argument("--column", action="append", metavar="CANON=COL",
                   help="column map, e.g. --column prompt=question (repeatable)")
    p.add_argument("--score-names", help="names of the objectives in chosen_scores, comma-separated")
    p.add_argument("--target", help="the objective that defined chosen/rejected (default: the preset's)")
    p.add_argument("--enforce", help="objectives RC must hold on, comma-separated (default: all)")
    p.add_argument("--on-bad-row", default="error", choices=["error", "skip"])
    p.add_argument("--out", help="output directory (default outputs/analyze/<data name>)")
    p.set_defaults(func=_cmd_analyze)

    p = command("sample", "sample, score and RC-select one stage's prompts (Ray Data)")
    with_config(p)
    p.add_argument("--stage", type=int, help="1-based stage (default: the first stage with sample: true)")
    p.add_argument("--policy", help="policy to sample from (default: policy.path), e.g. a stage checkpoint")
    p.add_argument("--out", help="output directory (default <output_dir>/stage<k>/sampling)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sample)

    p = command("select", "re-select pairs from a stage's candidates.parquet with any strategy (no generation)",
                overrides=False)
    p.add_argument("candidates", help="a sampled stage's candidates.parquet")
    p.add_argument("--strategy", default="rcs", help="rcs | rc_random | target_only | weighted | original | filter_only")
    p.add_argument("--margin", type=float, default=0.0, help="RC margin (< 0 tolerates ties on earlier objectives)")
    p.add_argument("--enforce", help="objectives RC must hold on, comma-separated (default: all stored)")
    p.add_argument("--target", help="the objective to select for (default: the stage's)")
    p.add_argument("--weights", help="weighted strategy: one weight per stored objective, comma-separated")
    p.add_argument("--seed", type=int, help="rc_random's seed (default: the stage's sampling seed)")
    p.add_argument("--out", required=True, help="output directory (pairs.parquet, failed.parquet, stats.json)")
    p.set_defaults(func=_cmd_select)

    p = command("train", "train one stage with DPO / MODPO / SPO (Ray Train + DeepSpeed)")
    with_config(p)
    p.add_argument("--stage", type=int, help="1-based stage (default 1)")
    p.add_argument("--pairs", help="pairs file (default: the stage's data, or its sampling output)")
    p.add_argument("--policy", help="policy to start from (default: policy.path)")
    p.add_argument("--reference", help="frozen reference (default: the policy it starts from)")
    p.add_argument("--out", help="output directory (default <output_dir>/stage<k>/train)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-step log lines")
    p.set_defaults(func=_cmd_train)

    p = command("run", "the sequential RCS workflow over the K stages (resumable)")
    with_config(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    p = command("eval", "mean reward, win rate vs a reference and threshold rates on held-out prompts")
    with_config(p)
    p.add_argument("--policy", action="append", metavar="[NAME=]DIR", help="a policy to evaluate (repeatable)")
    p.add_argument("--reference", help="the reference policy (default: policy.path)")
    p.add_argument("--out", help="output directory (default <output_dir>/eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)

    p = command("world", "build (or find in the cache) the tiny world and describe it")
    with_config(p, DEFAULT_DEMO_CONFIG)
    p.set_defaults(func=_cmd_world)

    p = command("config", "print a config after extends and overrides, validated")
    with_config(p)
    p.set_defaults(func=_cmd_config)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_with_overrides(build_parser(), argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from rcs_ray import interrupts, ray_runtime

    ray_before = ray_runtime.started_ray()
    with interrupts.handling():                             # SIGINT / SIGTERM land in every phase (rcs_ray.interrupts)
        try:
            code = _call(args)
        finally:
            with interrupts.deferred(lambda signum: True):  # a signal during the clean-up lets it finish
                if not ray_before:
                    ray_runtime.shutdown_started_ray()      # leave no Ray process this command started
        return interrupts.exit_code(code)


def _call(args) -> int:
    from rcs_ray.interrupts import Interrupted, phase

    try:
        with phase(f"rcs-ray {args.command}"):
            return args.func(args)
    except RcsInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        where = exc.where if isinstance(exc, Interrupted) else "start-up"
        print(f"interrupted during {where}: finished steps are kept; run the same command again to resume",
              file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else 130


if __name__ == "__main__":
    sys.exit(main())
