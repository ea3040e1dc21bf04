"""Rule rewards of the tiny world: ``fn(prompt: str, response: str) -> float``.

Usable as rule objectives (``rcs_ray.tinyworld.rewards:harmless`` etc.). Words are found by whitespace splitting,
so the rules work on any decoded text (leading spaces, unknown words and chat markup are harmless).

Integer scale (ties are common):
    harmless = -#HARM words (each occurrence)
    helpful  = #distinct HELP words
    concise  = -#words

Fine scale (few ties):
    harmless_fine = -sum of the severities of the HARM occurrences (severities 0.6 ... 1.4)
    helpful_fine  = sum over distinct HELP words of quality (0.85 ... 1.15) + 0.25 if the word belongs to the
                    prompt topic's domain (the topic-relevance term)
    concise_fine  = -sum over words of (0.75 + 0.05 * len(word))

Stage order of the objectives: harmless, helpful, concise. At conflict 0.9 helpful conflicts with harmless (more
engaged answers carry more HARM) and concise conflicts with helpful (HELP words cost length).
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import numpy as np

from rcs_ray.errors import RcsInputError
from rcs_ray.tinyworld.world import HARM_SEVERITY, HELP_QUALITY, TOPIC_DOMAIN, WORD_DOMAIN, prompt_topic

OBJECTIVES = ("harmless", "helpful", "concise")
RELEVANCE_BONUS = 0.25
WORD_COST_BASE, WORD_COST_PER_CHAR = 0.75, 0.05

__all__ = [
    "OBJECTIVES",
    "harmless",
    "helpful",
    "concise",
    "harmless_fine",
    "helpful_fine",
    "concise_fine",
    "REWARDS",
    "reward_names",
    "score",
    "pair_stats",
    "correlations",
]


def harmless(prompt: str, response: str) -> float:
    """Minus the number of HARM word occurrences in ``response``."""
    return 0.0 - sum(1 for w in response.split() if w in HARM_SEVERITY)  # 0.0 - x: no -0.0


def helpful(prompt: str, response: str) -> float:
    """The number of distinct HELP words in ``response``."""
    return float(len({w for w in response.split() if w in HELP_QUALITY}))


def concise(prompt: str, response: str) -> float:
    """Minus the number of whitespace-separated words in ``response``."""
    return 0.0 - len(response.split())


def harmless_fine(prompt: str, response: str) -> float:
    """Minus the summed severity of the HARM word occurrences in ``response``."""
    return 0.0 - round(sum(HARM_SEVERITY.get(w, 0.0) for w in response.split()), 6)


def helpful_fine(prompt: str, response: str) -> float:
    """Sum over distinct HELP words of their quality, plus 0.25 for each in the prompt topic's domain."""
    topic = prompt_topic(prompt)
    domain = TOPIC_DOMAIN.get(topic) if topic else None
    total = 0.0
    for w in sorted({w for w in response.split() if w in HELP_QUALITY}):  # sorted: a fixed summation order
        total += HELP_QUALITY[w] + (RELEVANCE_BONUS if WORD_DOMAIN[w] == domain else 0.0)
    return round(total, 6)


def concise_fine(prompt: str, response: str) -> float:
    """Minus the summed word cost, 0.75 + 0.05 per character of each word."""
    return 0.0 - round(sum(WORD_COST_BASE + WORD_COST_PER_CHAR * len(w) for w in response.split()), 6)


REWARDS: Dict[str, Callable[[str, str], float]] = {
    "harmless": harmless,
    "helpful": helpful,
    "concise": concise,
    "harmless_fine": harmless_fine,
    "helpful_fine": helpful_fine,
    "concise_fine": concise_fine,
}


def reward_names(scale: str = "integer", k: int = 3) -> list[str]:
    """Function names of the first ``k`` objectives at ``scale`` ("integer" or "fine"), in stage order."""
    if scale not in ("integer", "fine"):
        raise RcsInputError(f"reward scale must be 'integer' or 'fine', got {scale!r}")
    if not 1 <= k <= len(OBJECTIVES):
        raise RcsInputError(f"the tiny world has 1 to {len(OBJECTIVES)} objectives, got k={k}")
    return [o + ("_fine" if scale == "fine" else "") for o in OBJECTIVES[:k]]


def score(prompts: Sequence[str], responses: Sequence[str], objectives: Sequence[str] = OBJECTIVES) -> np.ndarray:
    """Rewards of N (prompt, response) pairs on K objectives.

    Args:
        prompts: N prompts (a single string is used for every response).
        responses: N responses.
        objectives: K names from :data:`REWARDS` (e.g. ``["harmless", "helpful_fine"]``).

    Returns:
        (N, K) float64 array.

    Raises:
        RcsInputError: an unknown objective name.
        ValueError: prompts and responses of different lengths.
    """
    fns = []
    for name in objectives:
        if name not in REWARDS:
            raise RcsInputError(f"unknown tiny-world reward {name!r}; known: {sorted(REWARDS)}")
        fns.append(REWARDS[name])
    if isinstance(prompts, str):
        prompts = [prompts] * len(responses)
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    out = np.empty((len(responses), len(fns)), dtype=np.float64)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        for k, fn in enumerate(fns):
            out[i, k] = fn(p, r)
    return out


def pair_stats(groups: np.ndarray, by: int, on: int) -> dict:
    """Conflict of objective ``on`` inside pairs ordered by objective ``by``, over all pairs within each group.

    Args:
        groups: (G, m, K) rewards of m candidates for G prompts.
        by: objective that orders a pair (chosen = strictly higher on ``by``; pairs tied on ``by`` are left out).
        on: objective checked for reward consistency.

    Returns:
        dict with ``pairs`` (count), ``non_rc`` (fraction where chosen is not strictly better on ``on``: ties count
        as not RC), ``reversed`` (fraction where chosen is strictly worse on ``on``) and ``tied``.
    """
    g = np.asarray(groups, dtype=np.float64)
    d_by = g[:, :, None, by] - g[:, None, :, by]  # (G, m, m): chosen i vs rejected j
    d_on = g[:, :, None, on] - g[:, None, :, on]
    ordered = d_by > 0
    n = int(ordered.sum())
    if n == 0:
        return {"pairs": 0, "non_rc": 0.0, "reversed": 0.0, "tied": 0.0}
    return {
        "pairs": n,
        "non_rc": float((ordered & (d_on <= 0)).sum() / n),
        "reversed": float((ordered & (d_on < 0)).sum() / n),
        "tied": float((ordered & (d_on == 0)).sum() / n),
    }


def correlations(values: np.ndarray, names: Sequence[str]) -> Dict[str, float]:
    """Pearson correlations of the columns of ``values`` (N, K), keyed ``"a~b"`` for each pair a < b."""
    v = np.asarray(values, dtype=np.float64)
    out = {}
    for a in range(v.shape[1]):
        for b in range(a + 1, v.shape[1]):
            sa, sb = v[:, a].std(), v[:, b].std()
            r = (
                float(np.mean((v[:, a] - v[:, a].mean()) * (v[:, b] - v[:, b].mean())) / (sa * sb))
                if sa * sb > 0
                else 0.0
            )
            out[f"{names[a]}~{names[b]}"] = round(r, 4)
    return out
