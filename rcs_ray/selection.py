"""Selection strategies and the truncation rule: which pair a prompt group gives. Pure numpy over the RC core
(:mod:`rcs_ray.rc`).

A strategy is a plain function sharing one keyword signature, in the :data:`STRATEGIES` registry::

    fn(rewards (m, K), target, *, enforce, margin, sources, weights, tau, eta, rng, allowed) -> (winner, loser) | None

A multi-pair strategy (:data:`MULTI_PAIR`: ``rs_dpo``) also has a function returning every pair of a group.

``allowed`` ((m, 2) booleans: may win, may lose) comes from the truncation rule (:func:`allowed_sides`,
``sampling.truncated``): a response cut at the token limit is not a finished answer.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from rcs_ray.rc import ORIGINAL_CHOSEN, ORIGINAL_REJECTED, Pair, _as_rewards, rc_mask, select_pair, select_pairs

__all__ = [
    "STRATEGIES",
    "MAX_GAP_RULES",
    "MULTI_PAIR",
    "TRUNCATION_RULES",
    "allowed_sides",
    "get_strategy",
    "rs_dpo_pairs",
    "select_all",
    "select_batch",
]

# What selection may do with a candidate cut at sampling.max_tokens (finished = stopped at EOS or a stop string):
#   not_chosen (default): only as the rejected side. A cut answer is not a finished one, so the policy is never
#     taught to stop mid-sentence; as the rejected side it is a real worse response (it ran past the budget), so
#     fewer prompts fail than with drop.
#   drop: never in a pair.   keep: like any candidate (what rcs-ray did before the rule existed).
TRUNCATION_RULES = ("not_chosen", "drop", "keep")


def allowed_sides(finished, rule: str) -> Optional[np.ndarray]:
    """(m, 2) may-win / may-lose booleans of candidates with ``finished`` flags under ``rule``; None for ``keep``
    (or when every candidate finished, where every rule allows everything)."""
    if rule not in TRUNCATION_RULES:
        raise ValueError(f"sampling.truncated must be one of {list(TRUNCATION_RULES)}, got {rule!r}")
    done = np.asarray(finished, dtype=bool)
    if rule == "keep" or done.all():
        return None
    return np.stack([done, done if rule == "drop" else np.ones_like(done)], axis=1)


def _rcs_rule(target, enforce, margin):
    """RCS admits pairs RC on ``enforce`` (with ``margin``) and won on the target."""
    return enforce, margin


def _target_only_rule(target, enforce, margin):
    """Max-gap target-only (RSDPO-style) admits every pair won on the target (strictly), whatever the other
    objectives say."""
    return [target], max(margin, 0.0)


def strategy_rcs(rewards, target, *, enforce=None, margin=0.0, allowed=None, **_) -> Pair:
    """RCS: the admissible (RC) pair with the largest gap on the target."""
    return select_pair(rewards, target, *_rcs_rule(target, enforce, margin), allowed=allowed)


def strategy_rc_random(rewards, target, *, enforce=None, margin=0.0, rng=None, allowed=None, **_) -> Pair:
    """NRCS: a uniformly random RC pair (RC without the max-gap rule)."""
    pairs = np.argwhere(rc_mask(rewards, target, enforce, margin, allowed))
    if len(pairs) == 0:
        return None
    rng = rng if rng is not None else np.random.default_rng(0)
    w, l = pairs[int(rng.integers(len(pairs)))]
    return int(w), int(l)


def strategy_target_only(rewards, target, *, margin=0.0, allowed=None, **_) -> Pair:
    """Max-gap target-only (RSDPO-style): the one pair with the largest gap on the target, ignoring every other
    objective. Not RS-DPO proper, which keeps every pair above a threshold (``rs_dpo``)."""
    return select_pair(rewards, target, *_target_only_rule(target, None, margin), allowed=allowed)


def _weights(weights, k: int) -> np.ndarray:
    w_vec = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, float)
    if w_vec.shape != (k,) or not np.all(np.isfinite(w_vec)):
        raise ValueError(f"weights must be {k} finite numbers, got {weights!r}")
    return w_vec


def strategy_weighted(rewards, target, *, weights=None, allowed=None, **_) -> Pair:
    """RSDPO-W: the largest gap of the weighted sum of objectives (equal weights when none are given) among the
    pairs that win on the target (strictly, as every strategy requires) and that ``allowed`` lets win / lose.
    Ties in the gap go to the lowest (winner, loser) in row-major order."""
    arr = _as_rewards(rewards)
    score = arr @ _weights(weights, arr.shape[1])
    mask = rc_mask(arr, target, [target], 0.0, allowed)
    gap = np.where(mask, score[:, None] - score[None, :], -np.inf)
    best = int(np.argmax(gap))
    return divmod(best, arr.shape[0]) if gap.flat[best] > 0 else None


def rs_dpo_pairs(rewards, target, *, tau: float = 1.0, eta: float = 0.85, allowed=None) -> list[tuple[int, int]]:
    """RS-DPO's pairs (Khaki et al. 2024, Algorithm 1): every (w, l) whose target rewards give
    ``sigmoid((r_w - r_l) / tau) > eta``, i.e. ``r_w - r_l > tau * logit(eta)``; largest gap first (then row-major).
    ``eta`` >= 0.5, so every pair wins on the target."""
    if not (tau > 0 and np.isfinite(tau)):
        raise ValueError(f"rs_tau must be a positive number, got {tau!r}")
    if not 0.5 <= eta < 1:
        raise ValueError(f"rs_eta must be in [0.5, 1) (below 0.5 a pair could lose on the target), got {eta!r}")
    arr = _as_rewards(rewards)
    need = tau * float(np.log(eta / (1 - eta)))
    t = arr[:, target]
    diff = t[:, None] - t[None, :]
    mask = rc_mask(arr, target, [target], 0.0, allowed) & (diff > need)
    found = np.argwhere(mask)
    order = np.lexsort((found[:, 1], found[:, 0], -diff[mask]))  # gap descending, then row-major
    return [(int(w), int(l)) for w, l in found[order]]


def strategy_rs_dpo(rewards, target, *, tau: float = 1.0, eta: float = 0.85, allowed=None, **_) -> Pair:
    """RS-DPO's first pair (the largest target gap above the threshold); the writer takes all of
    :func:`rs_dpo_pairs` (a multi-pair strategy, :data:`MULTI_PAIR`)."""
    pairs = rs_dpo_pairs(rewards, target, tau=tau, eta=eta, allowed=allowed)
    return pairs[0] if pairs else None


def _original_pair(sources) -> Pair:
    if sources is None:
        raise ValueError("this strategy needs candidate sources (original_chosen / original_rejected)")
    sources = list(sources)
    if ORIGINAL_CHOSEN not in sources or ORIGINAL_REJECTED not in sources:
        return None
    return sources.index(ORIGINAL_CHOSEN), sources.index(ORIGINAL_REJECTED)


def strategy_original(rewards, target, *, sources=None, **_) -> Pair:
    """Vanilla: the dataset's own (chosen, rejected) pair, whatever the rewards say (the dataset's responses are
    finished answers: the truncation rule does not apply)."""
    return _original_pair(sources)


def strategy_filter_only(rewards, target, *, enforce=None, margin=0.0, sources=None, **_) -> Pair:
    """The dataset's own pair, kept only when it is admissible (RC on enforce and won on target)."""
    pair = _original_pair(sources)
    if pair is None:
        return None
    return pair if rc_mask(rewards, target, enforce, margin)[pair] else None


STRATEGIES: dict[str, Callable[..., Pair]] = {
    "rcs": strategy_rcs,
    "rc_random": strategy_rc_random,
    "target_only": strategy_target_only,
    "weighted": strategy_weighted,
    "rs_dpo": strategy_rs_dpo,
    "original": strategy_original,
    "filter_only": strategy_filter_only,
}

# Strategies that give several pairs per prompt: name -> the function returning them all (a list, best first).
MULTI_PAIR: dict[str, Callable[..., list]] = {"rs_dpo": rs_dpo_pairs}


def get_strategy(name: str) -> Callable[..., Pair]:
    """Look up a selection strategy by name; ValueError naming the choices when unknown."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown selection strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None


# Strategies that are "the max-gap admissible pair" under a rule: vectorized over a batch by select_pairs.
MAX_GAP_RULES = {"rcs": _rcs_rule, "target_only": _target_only_rule}


def select_batch(
    strategy: str,
    groups: Sequence,
    target: int,
    *,
    enforce: Optional[Iterable[int]] = None,
    margin: float = 0.0,
    sources: Optional[Sequence] = None,
    weights=None,
    tau: float = 1.0,
    eta: float = 0.85,
    seeds: Optional[Callable[[int], int]] = None,
    allowed: Optional[Sequence] = None,
) -> list:
    """Apply ``strategy`` to G groups: the same pairs as calling it on each group, vectorized where it can be.
    A multi-pair strategy (:data:`MULTI_PAIR`) gives each group's best pair here; :func:`select_all` gives them all.

    Args:
        strategy: a key of :data:`STRATEGIES`.
        groups: G (m_i, K) reward arrays.
        target, enforce, margin, weights, tau, eta: as for the strategy functions.
        sources: G candidate-source lists (for ``original`` / ``filter_only``).
        seeds: ``seeds(i)`` -> the seed of group i's random generator (for ``rc_random``; called only by strategies
            that draw, so a per-group seed costs nothing otherwise).
        allowed: G (m_i, 2) may-win / may-lose arrays (or None entries), or None.

    Returns:
        G entries, each ``(winner, loser)`` or ``None``.
    """
    allowed = allowed if allowed is not None else [None] * len(groups)
    if strategy in MAX_GAP_RULES:
        full = [a if a is not None else np.ones((len(g), 2), dtype=bool) for a, g in zip(allowed, groups)]
        picked = select_pairs(groups, target, *MAX_GAP_RULES[strategy](target, enforce, margin), allowed=full)
        return [None if w < 0 else (int(w), int(l)) for w, l in picked.tolist()]
    fn = get_strategy(strategy)
    sources = sources if sources is not None else [None] * len(groups)
    return [
        fn(
            g,
            target,
            enforce=enforce,
            margin=margin,
            sources=s,
            weights=weights,
            tau=tau,
            eta=eta,
            allowed=a,
            rng=np.random.default_rng(seeds(i)) if seeds is not None else None,
        )
        for i, (g, s, a) in enumerate(zip(groups, sources, allowed))
    ]


def select_all(
    strategy: str,
    groups: Sequence,
    target: int,
    *,
    tau: float = 1.0,
    eta: float = 0.85,
    allowed: Optional[Sequence] = None,
) -> list[list[tuple[int, int]]]:
    """Every pair a multi-pair strategy (:data:`MULTI_PAIR`) gives each of G groups, best first ([] for none)."""
    fn = MULTI_PAIR[strategy]
    allowed = allowed if allowed is not None else [None] * len(groups)
    return [fn(g, target, tau=tau, eta=eta, allowed=a) for g, a in zip(groups, allowed)]
