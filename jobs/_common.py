"""Shared by the ``jobs/*.py`` entrypoints: build the ``rcs-ray`` argv for a job that runs inside a Ray cluster.

The only thing a cluster job adds to the plain CLI is ``ray.address=auto`` (join the cluster the job was submitted
to) unless the user gave a ``ray.address=...`` override themselves (e.g. ``ray.address=null`` to force a local Ray).
"""

from __future__ import annotations

import os
import sys
from typing import List, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # `python jobs/run.py` puts jobs/ on sys.path, not the repo (the job's working_dir)
    sys.path.insert(0, REPO)

CLUSTER_ADDRESS = "ray.address=auto"
VERBOSE = ("-v", "--verbose")


def _key(token: str) -> str:
    return token.split("=", 1)[0].strip()


def with_cluster_address(overrides: Sequence[str]) -> List[str]:
    """``overrides`` plus ``ray.address=auto`` unless one of them already sets ``ray.address``."""
    overrides = list(overrides)
    if any("=" in o and _key(o) == "ray.address" for o in overrides):
        return overrides
    return overrides + [CLUSTER_ADDRESS]


def _value_options(command: str) -> set:
    """Option strings of ``rcs-ray <command>`` that take a value (``--stage 2``), from the CLI's own parser."""
    from rcs_ray.cli import build_parser

    sub = next(a for a in build_parser()._subparsers._group_actions if a.dest == "command").choices[command]
    return {s for a in sub._actions for s in a.option_strings if a.nargs != 0}


def split_argv(argv: Sequence[str], takes_value: set) -> tuple[list, list, list]:
    """``argv`` as (verbose flags, positionals, options with their values); ``takes_value`` names the options
    followed by a value (``--stage 2``)."""
    front, positionals, options = [], [], []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in VERBOSE:
            front.append(tok)
        elif tok.startswith("-") and tok != "-":
            options.append(tok)
            if tok in takes_value and i + 1 < len(argv):
                options.append(argv[i + 1])
                i += 1
        else:
            positionals.append(tok)
        i += 1
    return front, positionals, options


def cli_argv(command: str, argv: Sequence[str]) -> List[str]:
    """``rcs-ray`` argv for ``command``: ``[-v] command CONFIG overrides... ray.address=auto options...``.

    Positionals (CONFIG, key=value) go first and options after, so overrides and options may be mixed in any order.
    ``-h``/``--help`` passes through unchanged.
    """
    argv = list(argv)
    if any(t in ("-h", "--help") for t in argv):
        return [command, *argv]
    front, positionals, options = split_argv(argv, _value_options(command))
    if positionals:  # no CONFIG: leave it to the CLI to say so
        positionals = [positionals[0], *with_cluster_address(positionals[1:])]
    return [*front, command, *positionals, *options]


def main(command: str, argv=None) -> int:
    from rcs_ray.cli import main as cli_main

    return cli_main(cli_argv(command, sys.argv[1:] if argv is None else argv))
