"""The ``rcs-ray`` command. Thin: parse arguments, call the library, print where outputs went.

Bad input (a malformed file, an unknown key, a missing path) prints ``error: <one line>`` and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from rcs_ray import __version__, storage
from rcs_ray.commands import (
    DEFAULT_DEMO_CONFIG,
    _cmd_analyze,
    _cmd_config,
    _cmd_demo,
    _cmd_eval,
    _cmd_plan,
    _cmd_run,
    _cmd_sample,
    _cmd_select,
    _cmd_train,
    _cmd_world,
)
from rcs_ray.errors import RcsInputError

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


class _Commands:
    """Adds the subcommands: each with the shared ``-v`` flag and, where it takes them, the overrides epilog."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        self.verbose = argparse.ArgumentParser(add_help=False)
        self.verbose.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )

    def add(self, name: str, help: str, overrides: bool = True, **kwargs) -> argparse.ArgumentParser:
        p = self.sub.add_parser(
            name, help=help, parents=[self.verbose], epilog=OVERRIDES_HELP if overrides else None, **kwargs
        )
        p.set_defaults(parser=p, accepts_overrides=overrides)
        return p

    @staticmethod
    def with_config(p: argparse.ArgumentParser, default: Optional[str] = None) -> None:
        """The command's YAML config: positional, or ``--config`` with a default."""
        if default:
            p.add_argument("--config", default=default, help=f"YAML config (default {default})")
        else:
            p.add_argument("config", help="YAML config, e.g. configs/tiny/k2.yaml")
        p.usage = (
            f"rcs-ray {p.prog.split()[-1]} {'[--config CONFIG]' if default else 'CONFIG'} [key=value ...] [options]"
        )


def build_parser() -> argparse.ArgumentParser:
    """The ``rcs-ray`` parser: every command, grouped as the README's CLI table lists them."""
    parser = argparse.ArgumentParser(
        prog="rcs-ray",
        description="Reward Consistency Sampling for multi-objective alignment on Ray.",
        epilog=OVERRIDES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"rcs-ray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    c = _Commands(parser)
    _add_setup_commands(c)
    _add_data_commands(c)
    _add_stage_commands(c)
    _add_report_commands(c)
    return parser


def _add_setup_commands(c: _Commands) -> None:
    """demo, world, config: the tiny world and configs."""
    p = c.add("demo", "the tiny-world end-to-end demo on this machine")
    c.with_config(p, DEFAULT_DEMO_CONFIG)
    p.set_defaults(func=_cmd_demo)

    p = c.add("world", "build (or find in the cache) the tiny world and describe it")
    c.with_config(p, DEFAULT_DEMO_CONFIG)
    p.set_defaults(func=_cmd_world)

    p = c.add("config", "print a config after extends and overrides, validated; or explain a key")
    p.add_argument("config", nargs="?", help="YAML config, e.g. configs/tiny/k2.yaml")
    p.add_argument(
        "--explain",
        metavar="KEY",
        help="print a key's type, default and doc (e.g. train.beta, "
        "stages.0.train.max_steps) instead; no config needed",
    )
    p.usage = "rcs-ray config CONFIG [key=value ...] [options] | rcs-ray config --explain KEY"
    p.set_defaults(func=_cmd_config)


def _add_data_commands(c: _Commands) -> None:
    """analyze, select: preference data and stored candidates, no generation."""
    p = c.add("analyze", "RC analysis of a preference dataset: RC rate, conflict matrix, report", overrides=False)
    p.add_argument("data", help="jsonl | parquet | HF dataset dir | dir of data files | tinyworld:data/<file>")
    p.add_argument("--preset", help="pku_saferlhf | helpsteer2 | ultrafeedback_binarized")
    p.add_argument("--objective", help="preset: the label that defines chosen/rejected (e.g. harmless)")
    p.add_argument("--format", default="auto", help="auto | jsonl | parquet | hf")
    p.add_argument("--split", help="split of a DatasetDict directory")
    p.add_argument("--limit", type=int, help="read at most N rows")
    p.add_argument(
        "--column", action="append", metavar="CANON=COL", help="column map, e.g. --column prompt=question (repeatable)"
    )
    p.add_argument("--score-names", help="names of the objectives in chosen_scores, comma-separated")
    p.add_argument("--target", help="the objective that defined chosen/rejected (default: the preset's)")
    p.add_argument("--enforce", help="objectives RC must hold on, comma-separated (default: all)")
    p.add_argument("--on-bad-row", default="error", choices=["error", "skip"])
    p.add_argument("--out", help="output directory (default outputs/analyze/<data name>)")
    p.set_defaults(func=_cmd_analyze)

    p = c.add(
        "select", "re-select pairs from a stage's candidates.parquet with any strategy (no generation)", overrides=False
    )
    p.add_argument("candidates", help="a sampled stage's candidates.parquet")
    p.add_argument(
        "--strategy",
        help="rcs | rc_random | target_only | weighted | rs_dpo | original | filter_only "
        "(default: the stage's, recorded in the file; so is every option below)",
    )
    p.add_argument("--margin", type=float, help="RC margin (< 0 tolerates ties on earlier objectives)")
    p.add_argument("--enforce", help="objectives RC must hold on, comma-separated (default: all stored)")
    p.add_argument("--target", help="the objective to select for (default: the stage's)")
    p.add_argument("--weights", help="weighted strategy: one weight per stored objective, comma-separated")
    p.add_argument("--rs-tau", type=float, help="rs_dpo: keep pairs with sigmoid(target gap / tau) > eta")
    p.add_argument("--rs-eta", type=float, help="rs_dpo: the threshold, in [0.5, 1)")
    p.add_argument("--seed", type=int, help="rc_random's seed (default: the stage's sampling seed)")
    p.add_argument("--truncated", help="not_chosen | drop | keep: what selection may do with samples cut at max_tokens")
    p.add_argument("--out", required=True, help="output directory (pairs.parquet, failed.parquet, stats.json)")
    p.set_defaults(func=_cmd_select)


def _add_stage_commands(c: _Commands) -> None:
    """sample, train, run: a stage's steps and the whole workflow."""
    p = c.add("sample", "sample, score and RC-select one stage's prompts (Ray Data)")
    c.with_config(p)
    p.add_argument("--stage", type=int, help="1-based stage (default: the first stage with sample: true)")
    p.add_argument("--policy", help="policy to sample from (default: policy.path), e.g. a stage checkpoint")
    p.add_argument("--out", help="output directory (default <output_dir>/stage<k>/sampling)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sample)

    p = c.add("train", "train one stage with DPO / MODPO / SPO (Ray Train + DeepSpeed)")
    c.with_config(p)
    p.add_argument("--stage", type=int, help="1-based stage (default 1)")
    p.add_argument("--pairs", help="pairs file (default: the stage's data, or its sampling output)")
    p.add_argument("--policy", help="policy to start from (default: policy.path)")
    p.add_argument("--reference", help="frozen reference (default: the policy it starts from)")
    p.add_argument("--out", help="output directory (default <output_dir>/stage<k>/train)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-step log lines")
    p.set_defaults(func=_cmd_train)

    p = c.add("run", "the sequential RCS workflow over the K stages (resumable)")
    c.with_config(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _add_report_commands(c: _Commands) -> None:
    """eval, plan: evaluation after training and the dry run before it."""
    p = c.add("eval", "mean reward, win rate vs a reference and threshold rates on held-out prompts")
    c.with_config(p)
    p.add_argument("--policy", action="append", metavar="[NAME=]DIR", help="a policy to evaluate (repeatable)")
    p.add_argument("--reference", help="the reference policy (default: policy.path)")
    p.add_argument(
        "--arrow",
        action="append",
        metavar="FROM:TO",
        help="an arrow on the trade-off plot between two policy names (repeatable; default: from the "
        "reference to each policy)",
    )
    p.add_argument("--out", help="output directory (default <output_dir>/eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)

    p = c.add("plan", "a dry run before any GPU is spent: models, data, resources and cost, no weights loaded")
    c.with_config(p)
    p.add_argument(
        "--gpus", type=float, help="plan for this many GPUs (default: the attached cluster's, else this machine's)"
    )
    p.add_argument("--cpus", type=float, help="plan for this many CPUs")
    p.add_argument("--rates", default="", help="assumed rates, e.g. gen=5000,rm=25000,train=16,fill=0.7")
    p.add_argument("--json", help="also write the plan as JSON here")
    p.set_defaults(func=_cmd_plan)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from rcs_ray import interrupts

    with interrupts.handling():  # first of all: SIGINT / SIGTERM land from here on (rcs_ray.interrupts)
        args = parse_with_overrides(build_parser(), argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
        from rcs_ray import ray_runtime

        ray_before = ray_runtime.started_ray()
        try:
            code = _call(args)
        finally:
            with interrupts.deferred(lambda signum: True):  # a signal during the clean-up lets it finish
                if not ray_before:
                    ray_runtime.shutdown_started_ray()  # leave no Ray process this command started
        return interrupts.exit_code(code)


def _call(args) -> int:
    from rcs_ray.interrupts import Interrupted, pending, phase, received

    try:
        with phase(f"rcs-ray {args.command}"):
            return args.func(args)
    except RcsInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write that no step wrapped: still one line
        full = storage.disk_error_in(exc, None)
        if full is None:
            raise
        print(f"error: {full}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if not isinstance(exc, Interrupted) and received() is not None:
            exc = pending()  # raised inside a Ray wait, Ray's own KeyboardInterrupt replaces ours: same signal
        where = exc.where if isinstance(exc, Interrupted) else "start-up"
        print(
            f"interrupted during {where}: finished steps are kept; run the same command again to resume",
            file=sys.stderr,
        )
        return exc.exit_code if isinstance(exc, Interrupted) else 130


if __name__ == "__main__":
    sys.exit(main())
