"""``python -m tests.ray.refusing_source ARGS``: ``rcs-ray ARGS`` with one more reward source, ``toy``, whose model
passes the driver's checks but fails to load in its host (what a checkpoint unreadable on one node does). A separate
process: the CLI's stderr as a user sees it (tests/ray/test_reward_source_plugin.py)."""

import sys
from typing import Sequence

from rcs_ray.errors import RcsInputError


class RefusingScorer:
    """A scorer whose model refuses to load."""

    def __init__(self, objectives: Sequence, settings=None):
        raise RcsInputError(f"objectives.1: the toy model of {objectives[0].name} has no weights on this node")


if __name__ == "__main__":
    from rcs_ray import registry
    from rcs_ray.cli import main
    from rcs_ray.registry import RewardSourceSpec

    scorers = {None: "tests.ray.refusing_source:RefusingScorer"}
    registry.REWARD_SOURCES["toy"] = RewardSourceSpec(scorers, family="toy", check_config="tests.toy_reward:check_toy")
    sys.exit(main(sys.argv[1:]))
