"""Shared by the ``jobs/*.py`` entrypoints: build the ``rcs-ray`` argv for a job that runs inside a Ray cluster.

The only thing a cluster job adds to the plain CLI is ``ray.address=auto`` (join the cluster the job was submitted
to) unless the user gave a ``ray.address=...`` override themselves (e.g. ``ray.address=null`` to force a local Ray).
The CLI takes ``key=value`` overrides anywhere on the line, so the user's arguments pass through in their order.
"""

from __future__ import annotations

import os
import sys
from typing import List, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # `python jobs/run.py` puts jobs/ on sys.path, not the repo (the job's working_dir)
    sys.path.insert(0, REPO)

CLUSTER_ADDRESS = "ray.address=auto"


def _key(token: str) -> str:
    return token.split("=", 1)[0].strip()


def with_cluster_address(argv: Sequence[str]) -> List[str]:
    """``argv`` plus ``ray.address=auto`` unless one of its overrides already sets ``ray.address``."""
    argv = list(argv)
    if any("=" in t and not t.startswith("-") and _key(t) == "ray.address" for t in argv):
        return argv
    return argv + [CLUSTER_ADDRESS]


def cli_argv(command: str, argv: Sequence[str]) -> List[str]:
    """``rcs-ray`` argv for ``command``: the user's arguments in their order, then ``ray.address=auto``.

    ``-h``/``--help`` and a missing CONFIG pass through unchanged (the CLI prints the help or the usage error).
    """
    argv = list(argv)
    if any(t in ("-h", "--help") for t in argv) or not any(not t.startswith("-") for t in argv):
        return [command, *argv]
    return [command, *with_cluster_address(argv)]


def main(command: str, argv=None) -> int:
    from rcs_ray.cli import main as cli_main

    return cli_main(cli_argv(command, sys.argv[1:] if argv is None else argv))
