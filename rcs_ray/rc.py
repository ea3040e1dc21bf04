"""The reward-consistency (RC) core: pure numpy, no Ray, no models.

A pair (x, y_w, y_l) is reward-consistent on a set E of objectives when r_j(x, y_w) > r_j(x, y_l) + margin for
every j in E (arXiv 2504.11337, Lemma 1: only RC pairs give gradients that do not conflict across objectives).
RCS picks, among a prompt's candidates, the RC pair with the largest gap on the objective being trained.

Shapes: ``rewards`` is (m, K): m candidates of one prompt, K objectives. The batch form takes G groups of
possibly different m and returns a (G, 2) array of (winner, loser) indices, -1 where a group has no pair.

Margin: on the enforced objectives other than the target, a pair needs ``diff > margin``; on the target it needs
``diff > max(margin, 0)``. A negative margin therefore tolerates ties (or small losses) on the earlier objectives,
which matters for integer-valued rewards; the target always needs a strict win.

``allowed`` (optional, (m, 2) booleans per group): whether each candidate may be the winner (column 0) and the loser
(column 1) of a pair -- e.g. a response cut at the token limit may not be the chosen side
(:mod:`rcs_ray.selection`, ``sampling.truncated``). None: every candidate may be either.

Selection strategies (RCS, NRCS, the baselines) are in :mod:`rcs_ray.selection`.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "is_consistent",
    "select_pair",
    "select_pairs",
    "select_pairs_flat",
    "rc_mask",
    "failure_reason",
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


def is_consistent(
    r_chosen: Sequence[float], r_rejected: Sequence[float], enforce: Optional[Iterable[int]] = None, margin: float = 0.0
) -> bool:
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


def _as_allowed(allowed, m: int) -> Optional[np.ndarray]:
    if allowed is None:
        return None
    arr = np.asarray(allowed, dtype=bool)
    if arr.shape != (m, 2):
        raise ValueError(f"allowed: expected a ({m}, 2) boolean array (may win, may lose), got shape {arr.shape}")
    return arr


def rc_mask(
    rewards, target: int, enforce: Optional[Iterable[int]] = None, margin: float = 0.0, allowed=None
) -> np.ndarray:
    """(m, m) boolean mask: ``mask[w, l]`` is True when (w, l) is an admissible pair.

    Admissible: ``rewards[w, j] - rewards[l, j] > margin`` for every j in ``enforce`` other than ``target``
    and ``> max(margin, 0)`` on ``target``; with ``allowed``, w may win and l may lose.
    """
    arr = _as_rewards(rewards)
    target = _objective_index(target, arr.shape[1], "target")
    idx, need = _thresholds(arr.shape[1], target, enforce, _check_margin(margin))
    sub = arr[:, idx]
    diff = sub[:, None, :] - sub[None, :, :]
    mask = np.all(diff > need, axis=-1)
    allowed = _as_allowed(allowed, arr.shape[0])
    return mask if allowed is None else mask & allowed[:, 0, None] & allowed[None, :, 1]


def select_pair(
    rewards, target: int, enforce: Optional[Iterable[int]] = None, margin: float = 0.0, allowed=None
) -> Pair:
    """The RCS choice for one prompt: the admissible pair with the largest gap on ``target``.

    Args:
        rewards: (m, K) rewards of m candidates on K objectives.
        target: the objective being trained (its gap is maximized; it always needs a strict win).
        enforce: objectives on which the winner must beat the loser; None means all K.
        margin: see the module docstring.
        allowed: (m, 2) booleans, may win / may lose (see the module docstring); None: all may.

    Returns:
        (winner, loser) candidate indices, or None when no admissible pair exists. Ties in the gap go to the
        lowest (winner, loser) in row-major order.

    Raises:
        ValueError: on NaN/inf rewards, a wrong shape, or an out-of-range index.
    """
    arr = _as_rewards(rewards)
    mask = rc_mask(arr, target, enforce, margin, allowed)
    if not mask.any():
        return None
    gap = np.where(mask, arr[:, None, target] - arr[None, :, target], -np.inf)
    return divmod(int(np.argmax(gap)), arr.shape[0])


def select_pairs(
    groups: Sequence,
    target: int,
    enforce: Optional[Iterable[int]] = None,
    margin: float = 0.0,
    allowed: Optional[Sequence] = None,
) -> np.ndarray:
    """Vectorized :func:`select_pair` over G prompt groups.

    Args:
        groups: G reward arrays, each (m_i, K); m_i may differ between groups.
        target, enforce, margin: as in :func:`select_pair`.
        allowed: G (m_i, 2) boolean arrays (see :func:`select_pair`), or None.

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
    if not np.all(np.isfinite(values)):  # name the first bad group as select_pair would
        bad = int(np.searchsorted(offsets, np.argwhere(~np.isfinite(values))[0, 0], side="right") - 1)
        _as_rewards(arrays[bad], f"group {bad}")
    flat = (
        None
        if allowed is None
        else np.concatenate([_as_allowed(a, g.shape[0]) for a, g in zip(allowed, arrays)] or [np.zeros((0, 2), bool)])
    )
    return select_pairs_flat(values, offsets, target, enforce, margin, flat)


def select_pairs_flat(
    values: np.ndarray,
    offsets: np.ndarray,
    target: int,
    enforce: Optional[Iterable[int]] = None,
    margin: float = 0.0,
    allowed: Optional[np.ndarray] = None,
) -> np.ndarray:
    """:func:`select_pairs` on the flat (columnar) layout: no per-group Python at all.

    Args:
        values: (N, K) finite float64 rewards of every candidate of every group, group after group (what
            flattening an Arrow ``list<double>`` column per objective gives).
        offsets: (G + 1,) int offsets: group g is ``values[offsets[g]:offsets[g + 1]]`` (the Arrow list offsets).
        target, enforce, margin: as in :func:`select_pair`.
        allowed: (N, 2) booleans, may win / may lose, aligned with ``values``; None: all may.

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
    allowed = np.ones((values.shape[0], 2), dtype=bool) if allowed is None else _as_allowed(allowed, values.shape[0])
    for start in range(0, num_groups, step):
        stop = min(num_groups, start + step)
        lo, hi, lens = offsets[start], offsets[stop], lengths[start:stop]
        if np.all(lens == max_m):  # the common case: a plain reshape
            padded = sub[lo:hi].reshape(stop - start, max_m, len(idx))
            may = allowed[lo:hi].reshape(stop - start, max_m, 2)
        else:
            padded = np.full((stop - start, max_m, len(idx)), np.nan)
            may = np.zeros((stop - start, max_m, 2), dtype=bool)
            group = np.repeat(np.arange(stop - start), lens)
            at = np.arange(hi - lo) - (offsets[start:stop] - lo)[group]
            padded[group, at], may[group, at] = sub[lo:hi], allowed[lo:hi]
        with np.errstate(invalid="ignore"):  # (g, M, M): every enforced lead; NaN pads compare False
            mask = may[:, :, None, 0] & may[:, None, :, 1]
            for j in range(len(idx)):
                mask &= (padded[:, :, j, None] - padded[:, None, :, j]) > need[j]
            t = padded[:, :, t_pos]
            gap = np.where(mask, t[:, :, None] - t[:, None, :], -np.inf).reshape(stop - start, -1)
        best = np.argmax(gap, axis=1)
        found = gap[np.arange(stop - start), best] > -np.inf
        w, l = np.divmod(best, max_m)
        out[start:stop] = np.where(found[:, None], np.stack([w, l], axis=1), -1)
    return out


def failure_reason(
    rewards, target: int, enforce: Optional[Iterable[int]] = None, margin: float = 0.0, allowed=None
) -> str:
    """Why a group yields no RCS pair: ``too_few_candidates``, ``tied_on_target``, ``no_rc_pair``, or
    ``truncated_only`` (with ``allowed``: an admissible pair exists, but only with a side ``allowed`` forbids, e.g.
    a chosen response cut at the token limit).

    Call it for groups where :func:`select_pair` returned None.
    """
    arr = _as_rewards(rewards)
    if arr.shape[0] < 2:
        return "too_few_candidates"
    target = _objective_index(target, arr.shape[1], "target")
    if allowed is not None and select_pair(arr, target, enforce, margin) is not None:
        return "truncated_only"
    if select_pair(arr, target, enforce=[target], margin=max(margin, 0.0)) is None:
        return "tied_on_target"
    return "no_rc_pair"
