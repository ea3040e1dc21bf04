"""RC analysis of a preference dataset (the paper's §3.1 measurement as a tool). Pure numpy.

Given per-objective scores of each pair's chosen and rejected response, d = chosen − rejected (N, K):

- ``rc_rate``: the fraction of pairs whose chosen beats the rejected on every enforced objective (strict), and
  ``rc_rate_ties``: the same with ties allowed (d ≥ 0 everywhere, d > 0 on the target, or somewhere if no target).
- ``per_objective``: for each objective, the fraction of pairs whose chosen wins / ties / loses on it.
- ``rc_given``: K×K, ``rc_given[i][j]`` = P(d_j > 0 | d_i > 0): how often a pair preferred on i is also preferred on j
  (1.0 on the diagonal; NaN where no pair is preferred on i).
- ``conflict``: K×K, the fraction of pairs whose preferences on i and j point opposite ways (d_i · d_j < 0).
- ``not_rc_on`` (when a target is named): for each other objective j, the fraction of pairs with d_j ≤ 0
  (strict: not RC on j) and d_j < 0 (RC fails even with ties allowed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from rcs_ray.errors import RcsInputError


@dataclass
class RCAnalysis:
    objectives: list[str]
    num_pairs: int
    target: Optional[str]
    enforce: list[str]
    rc_rate: float
    rc_rate_ties: float
    per_objective: dict[str, dict[str, float]]
    rc_given: list[list[Optional[float]]]
    conflict: list[list[float]]
    not_rc_on: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _none_if_nan(x: float) -> Optional[float]:
    return None if np.isnan(x) else float(x)


def analyze_pairs(
    chosen_scores,
    rejected_scores,
    objectives: Sequence[str],
    target: Optional[str] = None,
    enforce: Optional[Sequence[str]] = None,
) -> RCAnalysis:
    """RC statistics of N preference pairs; see the module docstring.

    Args:
        chosen_scores: (N, K) per-objective scores of the chosen responses.
        rejected_scores: (N, K) scores of the rejected responses.
        objectives: the K objective names.
        target: the objective that defined chosen vs rejected, if any.
        enforce: objectives that RC must hold on (default: all K).

    Raises:
        RcsInputError: on a shape mismatch, non-finite scores, no pairs, or an unknown objective name.
    """
    names = list(objectives)
    k = len(names)
    c, r = _checked_scores(chosen_scores, rejected_scores, names)

    def index(name: str, what: str) -> int:
        if name not in names:
            raise RcsInputError(f"{what} {name!r} is not an objective; objectives are {names}")
        return names.index(name)

    t = index(target, "target") if target is not None else None
    enforced = [index(n, "enforce") for n in enforce] if enforce is not None else list(range(k))
    d = c - r
    win, tie = d > 0, d == 0
    rc_rate = float(np.mean(np.all(win[:, enforced], axis=1)))
    strict_on = [t] if t is not None else enforced
    no_loss = np.all(d[:, enforced] >= 0, axis=1)
    some_win = np.any(win[:, strict_on], axis=1) if strict_on else np.zeros(len(d), bool)
    rc_rate_ties = float(np.mean(no_loss & some_win))

    per_objective = {
        name: {"win": float(win[:, j].mean()), "tie": float(tie[:, j].mean()), "loss": float((d[:, j] < 0).mean())}
        for j, name in enumerate(names)
    }
    rc_given, conflict = _pairwise(d)
    not_rc_on = {}
    if t is not None:
        for j, name in enumerate(names):
            if j != t:
                not_rc_on[name] = {"strict": float(np.mean(d[:, j] <= 0)), "ties_allowed": float(np.mean(d[:, j] < 0))}
    return RCAnalysis(
        objectives=names,
        num_pairs=int(len(d)),
        target=target,
        enforce=[names[j] for j in enforced],
        rc_rate=rc_rate,
        rc_rate_ties=rc_rate_ties,
        per_objective=per_objective,
        rc_given=[[_none_if_nan(x) for x in row] for row in rc_given],
        conflict=conflict.tolist(),
        not_rc_on=not_rc_on,
    )


def _checked_scores(chosen_scores, rejected_scores, names: list) -> tuple:
    """The (N, K) chosen and rejected scores as float64 arrays, refused unless both are (N, K) with N > 0 and finite.

    Raises:
        RcsInputError: on a shape mismatch, no pairs, or a non-finite score (naming the 1-based pair).
    """
    c = np.asarray(chosen_scores, dtype=np.float64)
    r = np.asarray(rejected_scores, dtype=np.float64)
    k = len(names)
    if c.ndim != 2 or c.shape != r.shape or c.shape[1] != k:
        raise RcsInputError(f"scores must be (N, {k}) for objectives {names}; got {c.shape} and {r.shape}")
    if c.shape[0] == 0:
        raise RcsInputError("no preference pairs to analyze")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(r))):
        row = int(np.argwhere(~(np.isfinite(c) & np.isfinite(r)))[0, 0])
        raise RcsInputError(f"non-finite score in pair {row + 1}")
    return c, r


def _pairwise(d: np.ndarray) -> tuple:
    """K×K ``rc_given`` (P(d_j > 0 | d_i > 0), NaN where no pair is preferred on i) and ``conflict`` (the share of
    pairs with d_i · d_j < 0) of the (N, K) score differences ``d``."""
    k = d.shape[1]
    win = d > 0
    rc_given = np.full((k, k), np.nan)
    conflict = np.zeros((k, k))
    sign = np.sign(d)
    for i in range(k):
        base = win[:, i]
        for j in range(k):
            if base.any():
                rc_given[i, j] = win[base, j].mean()
            conflict[i, j] = np.mean(sign[:, i] * sign[:, j] < 0)
    return rc_given, conflict


def analyze_rows(
    rows: Sequence[dict],
    objectives: Sequence[str],
    target: Optional[str] = None,
    enforce: Optional[Sequence[str]] = None,
    source: str = "data",
) -> RCAnalysis:
    """:func:`analyze_pairs` over canonical preference rows (``chosen_scores`` / ``rejected_scores``)."""
    if not objectives:
        raise RcsInputError(
            f"{source}: the data carries no per-objective scores (chosen_scores/rejected_scores "
            f"or a preset with labels); RC analysis needs them"
        )
    if not rows:
        raise RcsInputError(f"{source}: no preference pairs to analyze")
    return analyze_pairs(
        [row["chosen_scores"] for row in rows],
        [row["rejected_scores"] for row in rows],
        objectives,
        target=target,
        enforce=enforce,
    )
