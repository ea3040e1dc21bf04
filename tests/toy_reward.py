"""A toy reward source, added by a test as one entry (tests/ray/test_reward_source_plugin.py): reward = sign * the
number of words in the response. Ray workers import it by module path (``tests.toy_reward:WordCountScorer``)."""

from typing import Any, Sequence

import numpy as np


def words(response: Any) -> int:
    """The words of a response: a string, or the last message of a conversation."""
    text = response if isinstance(response, str) else response[-1]["content"]
    return len(text.split())


class WordCountScorer:
    """``Scorer(objectives, settings)``: one column per objective, ``sign * words(response)``."""

    def __init__(self, objectives: Sequence, settings=None):
        self.signs = np.array([o.sign for o in objectives], dtype=np.float64)

    def score(self, prompts: Sequence[Any], responses: Sequence[Any]) -> np.ndarray:
        counts = np.array([words(r) for r in responses], dtype=np.float64)
        return counts[:, None] * self.signs[None, :]


def check_toy(objective, checker, key: str) -> None:
    """The toy's own config check (its entry's ``check_config``): it reads no model."""
    if objective.model:
        checker.fail(f"{key}.model", "a toy objective reads no model")
