"""The reward-consistency (RC) core: pure numpy, no Ray, no models.

A pair (x, y_w, y_l) is reward-consistent on a set E of objectives when r_j(x, y_w) > r_j(x, y_l) + margin for
every j in E (arXiv 2504.11337, Lemma 1: only RC pairs give gradients that do not conflict across objectives).
RCS picks, among a prompt's candidates, the RC pair with the largest gap on the objective being trained.

Shapes: ``rewards`` is (m, K): m candidates of one prompt, K objectives. The batch form takes G groups of
possibly different m and returns a (G, 2) array of (winner, loser) indices, -1 where a group has no pair.

Margin: on the enforced objectives other than the target, a pair needs ``diff > margin``; on the target it needs
``diff > max(margin, 0)``. A negative margin therefore tolerates ties (or small losses) on the earlier objectives,
which matters for integer-valued rewards; the target always needs a strict win.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "is_consistent",
    "select_pair",
    "select_pairs",
    "select_pairs_flat",
    "rc_mask",
    "failure_reason",
    "STRATEGIES",
    "get_strategy",
    "select_batch",
    "ORIGINAL_CHOSEN",
    "ORIGINAL_REJECTED",
    "SAMPLED",
]

ORIGINAL_CHOSEN = "original_chosen"
ORIGINAL_REJECTED = "original_rejected"
SAMPLED = "sampled"

Pair = Optional[tuple[int, int]]

# Elements of the (G, M, M, K) difference tensor computed at once by the batch form; larger inputs go in chunks.
_CHUNK_ELEMENTS = 1 << 22


def _as_rewards(rewards, what: str = "rewards") -> np.ndarray:
    """Return ``rewards`` as a finite float64 (m, K) array or raise ValueError."""
    arr = np.asarray(rewards, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D (candidates, objectives) array, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{what}: no objectives (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{what}: non-finite reward {arr[tuple(bad)]} at candidate {bad[0]}, objective {bad[1]}")
    return arr


def _check_margin(margin: float) -> float:
    margin = float(margin)
    if not np.isfinite(margin):
        raise ValueError(f"margin must be finite, got {margin}")
    return margin


def _objective_index(index, num_objectives: int, what: str) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"{what} must be an integer objective index, got {index!r}")
    if not 0 <= int(index) < num_objectives:
        raise ValueError(f"{what} {index} out of range for K={num_objectives} objectives")
    return int(index)


def _enforced(enforce: Optional[Iterable[int]], num_objectives: int) -> list[int]:
    """Objective indices to enforce: all when ``enforce`` is None; validated and de-duplicated, sorted."""
    if enforce is None:
        return list(range(num_objectives))
    return sorted({_objective_index(j, num_objectives, "enforce index") for j in enforce})


def is_consistent(r_chosen: Sequence[float], r_rejected: Sequence[float],
                  enforce: Optional[Iterable[int]] = None, margin: float = 0.0) -> bool:
    """True when the chosen response beats the rejected one on every enforced objective.

    Args:
        r_chosen: (K,) rewards of the chosen response.
        r_rejected: (K,) rewards of the rejected response.
        enforce: objective indices that must hold; None means all K.
        margin: required lead: ``r_chosen[j] > r_rejected[j] + margin`` for each enforced j.

    Raises:
        ValueError: on NaN/inf, different lengths, or an out-of-range index.
    """
    chosen = np.ravel(np.asarray(r_chosen, dtype=np.float64))
    rejected = np.ravel(np.asarray(r_rejected, dtype=np.float64))
    if chosen.shape != rejected.shape:
        raise ValueError(f"r_chosen has {chosen.size} objectives but r_rejected has {rejected.size}")
    pair = _as_rewards(np.stack([chosen, rejected]), "pair rewards")
    margin = _check_margin(margin)
    idx = _enforced(enforce, pair.shape[1])
    return bool(np.all(pair[0, idx] > pair[1, idx] + margin))


def _thresholds(num_objectives: int, target: int, enforce: Optional[Iterable[int]], margin: float):
    """Objectives to test and the lead each needs: ``margin`` for enforced ones, ``max(margin, 0)`` for target."""
    idx = sorted(set(_enforced(enforce, num_objectives)) | {target})
    need = np.array([max(margin, 0.0) if j == target else margin for j in idx])
    return idx, need


def rc_mask(rewards, target: int, enforce: Optional[Iterable[int]] = None, margin: float = 0.0) -> np.ndarray:
    """(m, m) boolean mask: ``mask[w, l]`` is True when (w, l) is an admissible pair.

    Admissible: ``rewards[w, j] - rewards[l, j] > margin`` for every j in ``enforce`` other than ``target``
    and ``> max(margin, 0)`` on ``target``.
    """
    arr = _as_rewards(rewards)
    target = _objective_index(target, arr.shape[1], "target")
    idx, need = _thresholds(arr.shape[1], target, enforce, _check_margin(margin))
    sub = arr[:, idx]
    diff = sub[:, None, :] - sub[None, :, :]
    return np.all(diff > need, axis=-1)


def select_pair(rewards, target: int, enforce: Optional[Iterable[int]] = None, margin: float = 0.0) -> Pair:
    """The RCS choice for one prompt: the admissible pair with the largest gap on ``target``.

    Args:
        rewards: (m, K) rewards of m candidates on K objectives.
        target: the objective being trained (its gap is maximized; it always needs a strict win).
        enforce: objectives on which the winner must beat the loser; None means all K.
        margin: see the module docstring.

    Returns:
        (winner, loser) candidate indices, or None when no admissible pair exists. Ties in the gap go to the
        lowest (winner, loser) in row-major order.

    Raises:
        ValueError: on NaN/inf rewards, a wrong shape, or an out-of-range index.
    """
    arr = _as_rewards(rewards)
    mask = rc_mask(arr, target, enforce, margin)
    if not mask.any():
        return None
    gap = np.where(mask, arr[:, None, target] - arr[None, :, target], -np.inf)
    return divmod(int(np.argmax(gap)), arr.shape[0])


def select_pairs(groups: Sequence, target: int, enforce: Optional[Iterable[int]] = None,
                 margin: float = 0.0) -> np.ndarray:
    """Vectorized :func:`select_pair` over G prompt groups.

    Args:
        groups: G reward arrays, each (m_i, K); m_i may differ between groups.
        target, enforce, margin: as in :func:`select_pair`.

    Returns:
        (G, 2) int64 array of (winner, loser); (-1, -1) where a group has no admissible pair.
        Identical to calling :func:`select_pair` on each group.
    """
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != arrays[0].shape[1]:
            _as_rewards(a, f"group {i}")
            raise ValueError(f"group {i} has {a.shape[1]} objectives, group 0 has {arrays[0].shape[1]}")
    offsets = np.concatenate([[0], np.cumsum([a.shape[0] for a in arrays], dtype=np.int64)]).astype(np.int64)
    values = np.concatenate(arrays, axis=0) if arrays else np.zeros((0, 1))
    if not np.all(np.isfinite(values)):                  # name the first bad group as select_pair would
        bad = int(np.searchsorted(offsets, np.argwhere(~np.isfinite(values))[0, 0], side="right") - 1)
        _as_rewards(arrays[bad], f"group {bad}")
    return select_pairs_flat(values, offsets, target, enforce, margin)


def select_pairs_flat(values: np.ndarray, offsets: np.ndarray, target: int, enforce: Optional[Iterable[int]] = None,
                      margin: float = 0.0) -> np.ndarray:
    """:func:`select_pairs` on the flat (columnar) layout: no per-group Python at all.

    Args:
        values: (N, K) finite float64 rewards of every candidate of every group, group after group (what
            flattening an Arrow ``list<double>`` column per objective gives).
        offsets: (G + 1,) int offsets: group g is ``values[offsets[g]:offsets[g + 1]]`` (the Arrow list offsets).
        target, enforce, margin: as in :func:`select_pair`.

    Returns:
        (G, 2) int64 (winner, loser) indices within each group; (-1, -1) where a group has no admissible pair.
    """
    values, offsets = np.asarray(values, dtype=np.float64), np.asarray(offsets, dtype=np.int64)
    num_groups, lengths = len(offsets) - 1, np.diff(offsets)
    out = np.full((max(num_groups, 0), 2), -1, dtype=np.int64)
    if num_groups <= 0 or values.shape[0] == 0 or lengths.max() < 2:
        return out
    target = _objective_index(target, values.shape[1], "target")
    idx, need = _thresholds(values.shape[1], target, enforce, _check_margin(margin))
    max_m = int(lengths.max())
    step = max(1, _CHUNK_ELEMENTS // max(1, max_m * max_m * len(idx)))
    sub, t_pos = values[:, idx], idx.index(target)
    for start in range(0, num_groups, step):
        stop = min(num_groups, start + step)
        lo, hi, lens = offsets[start], offsets[stop], lengths[start:stop]
        if np.all(lens == max_m):                                   # the common case: a plain reshape
            padded = sub[lo:hi].reshape(stop - start, max_m, len(idx))
        else:
            padded = np.full((stop - start, max_m, len(idx)), np.nan)
            group = np.repeat(np.arange(stop - start), lens)
            padded[group, np.arange(hi - lo) - (offsets[start:stop] - lo)[group]] = sub[lo:hi]
        with np.errstate(invalid="ignore"):       # (g, M, M): every enforced lead; NaN pads compare False
            mask = np.ones((stop - start, max_m, max_m), dtype=bool)
            for j in range(len(idx)):
                mask &= (padded[:, :, j, None] - padded[:, None, :, j]) > need[j]
            t = padded[:, :, t_pos]
            gap = np.where(mask, t[:, :, None] - t[:, None, :], -np.inf).reshape(stop - start, -1)
        best = np.argmax(gap, axis=1)
        found = gap[np.arange(stop - start), best] > -np.inf
        w, l = np.divmod(best, max_m)
        out[start:stop] = np.where(found[:, None], np.stack([w, l], axis=1), -1)
    return out


def failure_reason(rewards, target: int, enforce: Optional[Iterable[int]] = None, margin: float = 0.0) -> str:
    """Why a group yields no RCS pair: ``too_few_candidates``, ``tied_on_target`` or ``no_rc_pair``.

    Call it for groups where :func:`select_pair` returned None.
    """
    arr = _as_rewards(rewards)
    if arr.shape[0] < 2:
        return "too_few_candidates"
    target = _objective_index(target, arr.shape[1], "target")
    if select_pair(arr, target, enforce=[target], margin=max(margin, 0.0)) is None:
        return "tied_on_target"
    return "no_rc_pair"


# ---------------------------------------------------------------------------------------------------------------
# Selection strategies: plain functions sharing one keyword signature, in a registry.
#   fn(rewards (m, K), target, *, enforce, margin, sources, weights, rng) -> (winner, loser) | None
# ---------------------------------------------------------------------------------------------------------------

def _rcs_rule(target, enforce, margin):
    """RCS admits pairs RC on ``enforce`` (with ``margin``) and won on the target."""
    return enforce, margin


def _target_only_rule(target, enforce, margin):
    """RSDPO-style admits every pair won on the target (strictly), whatever the other objectives say."""
    return [target], max(margin, 0.0)


def strategy_rcs(rewards, target, *, enforce=None, margin=0.0, **_) -> Pair:
    """RCS: the admissible (RC) pair with the largest gap on the target."""
    return select_pair(rewards, target, *_rcs_rule(target, enforce, margin))


def strategy_rc_random(rewards, target, *, enforce=None, margin=0.0, rng=None, **_) -> Pair:
    """NRCS: a uniformly random RC pair (RC without the max-gap rule)."""
    mask = rc_mask(rewards, target, enforce, margin)
    pairs = np.argwhere(mask)
    if len(pairs) == 0:
        return None
    rng = rng if rng is not None else np.random.default_rng(0)
    w, l = pairs[int(rng.integers(len(pairs)))]
    return int(w), int(l)


def strategy_target_only(rewards, target, *, margin=0.0, **_) -> Pair:
    """RSDPO-style: the largest gap on the target, ignoring every other objective."""
    return select_pair(rewards, target, *_target_only_rule(target, None, margin))


def strategy_weighted(rewards, target, *, weights=None, **_) -> Pair:
    """The largest gap of the weighted sum of objectives (equal weights when none are given)."""
    arr = _as_rewards(rewards)
    w_vec = np.full(arr.shape[1], 1.0 / arr.shape[1]) if weights is None else np.asarray(weights, float)
    if w_vec.shape != (arr.shape[1],) or not np.all(np.isfinite(w_vec)):
        raise ValueError(f"weights must be {arr.shape[1]} finite numbers, got {weights!r}")
    score = arr @ w_vec
    w, l = int(np.argmax(score)), int(np.argmin(score))
    return (w, l) if score[w] > score[l] else None


def _original_pair(sources) -> Pair:
    if sources is None:
        raise ValueError("this strategy needs candidate sources (original_chosen / original_rejected)")
    sources = list(sources)
    if ORIGINAL_CHOSEN not in sources or ORIGINAL_REJECTED not in sources:
        return None
    return sources.index(ORIGINAL_CHOSEN), sources.index(ORIGINAL_REJECTED)


def strategy_original(rewards, target, *, sources=None, **_) -> Pair:
    """Vanilla: the dataset's own (chosen, rejected) pair, whatever the rewards say."""
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
    "original": strategy_original,
    "filter_only": strategy_filter_only,
}


def get_strategy(name: str) -> Callable[..., Pair]:
    """Look up a selection strategy by name; ValueError naming the choices when unknown."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown selection strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None


# Strategies that are "the max-gap admissible pair" under a rule: vectorized over a batch by select_pairs.
MAX_GAP_RULES = {"rcs": _rcs_rule, "target_only": _target_only_rule}


def select_batch(strategy: str, groups: Sequence, target: int, *, enforce: Optional[Iterable[int]] = None,
                 margin: float = 0.0, sources: Optional[Sequence] = None, weights=None,
                 seeds: Optional[Callable[[int], int]] = None) -> list:
    """Apply ``strategy`` to G groups: the same pairs as calling it on each group, vectorized where it can be.

    Args:
        strategy: a key of :data:`STRATEGIES`.
        groups: G (m_i, K) reward arrays.
        target, enforce, margin, weights: as for the strategy functions.
        sources: G candidate-source lists (for ``original`` / ``filter_only``).
        seeds: ``seeds(i)`` -> the seed of group i's random generator (for ``rc_random``; called only by strategies
            that draw, so a per-group seed costs nothing otherwise).

    Returns:
        G entries, each ``(winner, loser)`` or ``None``.
    """
    if strategy in MAX_GAP_RULES:
        picked = select_pairs(groups, target, *MAX_GAP_RULES[strategy](target, enforce, margin))
        return [None if w < 0 else (int(w), int(l)) for w, l in picked.tolist()]
    fn = get_strategy(strategy)
    sources = sources if sources is not None else [None] * len(groups)
    return [fn(g, target, enforce=enforce, margin=margin, sources=s, weights=weights,
               rng=np.random.default_rng(seeds(i)) if seeds is not None else None)
            for i, (g, s) in enumerate(zip(groups, sources))]
