"""The RC step: each prompt group reduced to its pair (``rs_dpo``: its pairs) by a selection strategy
(:mod:`rcs_ray.selection`), or the reason it cannot give one. Columnar over the Arrow batch; fused into the last
scorer's call (no pool of its own).

Candidates cut at ``sampling.max_tokens`` (``candidate_finished`` false) are treated by ``sampling.truncated``
(:data:`rcs_ray.selection.TRUNCATION_RULES`; default ``not_chosen``: a cut response may only be the rejected side).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import pyarrow as pa

from rcs_ray import rc, selection
from rcs_ray.config import RCConfig
from rcs_ray.data.pairs import require_columns, reward_column
from rcs_ray.rc import ORIGINAL_CHOSEN
from rcs_ray.sampling.columns import add_seconds, flat, lengths, positions, put
from rcs_ray.sampling.seeds import rc_seed


class RCFilterStage:
    """Reduces each group to one pair with a selection strategy (default RCS), or records why it cannot.

    Adds ``chosen_index``, ``rejected_index`` (null on failure) and ``failure_reason`` (null on success); a
    multi-pair strategy (``rs_dpo``) also adds ``chosen_indices`` / ``rejected_indices``, every pair of the group
    (best first; ``chosen_index`` is the first), and fails a group with ``below_threshold`` when no pair clears it:
    ``error`` rows keep their error as the reason; others fail with ``non_finite_reward``, ``too_few_candidates``,
    ``all_candidates_identical``, ``tied_on_target``, ``no_rc_pair`` or ``truncated_only`` (a pair exists only
    with a side the truncation rule forbids) (``no_original_pair`` / ``original_not_rc`` for the strategies that
    use the dataset's pair).

    Args:
        truncated: ``sampling.truncated`` (what selection may do with cut candidates).
    """

    def __init__(
        self, objectives: Sequence[str], target: str, rc_cfg: RCConfig, seed: int = 0, truncated: str = "not_chosen"
    ):
        self.objectives = list(objectives)
        self.columns = [reward_column(n) for n in self.objectives]
        self.target = self.objectives.index(target)
        enforce = rc_cfg.enforce if rc_cfg.enforce is not None else self.objectives
        self.enforce = [self.objectives.index(n) for n in enforce]
        self.margin = rc_cfg.margin
        self.strategy_name = rc_cfg.strategy
        selection.get_strategy(rc_cfg.strategy)  # an unknown name fails here, not per batch
        selection.allowed_sides([True], truncated)  # and so does an unknown truncation rule
        self.weights = rc_cfg.weights
        self.tau, self.eta = rc_cfg.rs_tau, rc_cfg.rs_eta
        self.seed = seed
        self.truncated = truncated

    def _reason(self, candidates: list, sources: list, rewards: np.ndarray, finished) -> str:
        if len(candidates) < 2:
            return "too_few_candidates"
        if len(set(candidates)) == 1:
            return "all_candidates_identical"
        if self.strategy_name in ("original", "filter_only"):
            return "original_not_rc" if ORIGINAL_CHOSEN in sources else "no_original_pair"
        if self.strategy_name in selection.MULTI_PAIR:
            every = selection.MULTI_PAIR[self.strategy_name]
            if selection.allowed_sides(finished, self.truncated) is not None and every(
                rewards, self.target, tau=self.tau, eta=self.eta
            ):
                return "truncated_only"
            if rc.select_pair(rewards, self.target, enforce=[self.target]) is None:
                return "tied_on_target"
            return "below_threshold"
        if self.strategy_name in selection.MAX_GAP_RULES:
            enforce, margin = selection.MAX_GAP_RULES[self.strategy_name](self.target, self.enforce, self.margin)
            return rc.failure_reason(
                rewards, self.target, enforce, margin, selection.allowed_sides(finished, self.truncated)
            )
        return rc.failure_reason(
            rewards, self.target, self.enforce, self.margin, selection.allowed_sides(finished, self.truncated)
        )

    def _allowed(self, batch: pa.Table, rows: np.ndarray, size: int) -> np.ndarray:
        """(N, 2) may-win / may-lose of the selected groups' candidates (all true without ``candidate_finished``)."""
        sides = None
        if "candidate_finished" in batch.column_names:
            done = flat(batch.column("candidate_finished").take(pa.array(rows))).astype(bool)
            sides = selection.allowed_sides(done, self.truncated)
        return np.ones((size, 2), dtype=bool) if sides is None else sides

    def _pairs(self, values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, batch: pa.Table):
        """(winner, loser) per valid group, -1 where none: the flat vectorized core for the max-gap strategies,
        the strategy per group (with its sources and seed) for the others; with every pair of each group (best
        first) for a multi-pair strategy, else None."""
        allowed = self._allowed(batch, rows, values.shape[0])
        if self.strategy_name in selection.MULTI_PAIR:
            bounds = list(zip(offsets[:-1], offsets[1:]))
            every = selection.select_all(
                self.strategy_name,
                [values[a:b] for a, b in bounds],
                self.target,
                tau=self.tau,
                eta=self.eta,
                allowed=[allowed[a:b] for a, b in bounds],
            )
            best = np.array([p[0] if p else (-1, -1) for p in every], dtype=np.int64).reshape(-1, 2)
            return best, every
        if self.strategy_name in selection.MAX_GAP_RULES:
            enforce, margin = selection.MAX_GAP_RULES[self.strategy_name](self.target, self.enforce, self.margin)
            return rc.select_pairs_flat(values, offsets, self.target, enforce, margin, allowed), None
        sources = batch.column("sources").take(pa.array(rows)).to_pylist()
        ids = batch.column("prompt_id").take(pa.array(rows)).to_pylist()
        bounds = list(zip(offsets[:-1], offsets[1:]))
        picked = selection.select_batch(
            self.strategy_name,
            [values[a:b] for a, b in bounds],
            self.target,
            enforce=self.enforce,
            margin=self.margin,
            sources=sources,
            weights=self.weights,
            seeds=lambda i: rc_seed(self.seed, ids[i]),
            allowed=[allowed[a:b] for a, b in bounds],
        )
        return np.array([(-1, -1) if p is None else p for p in picked], dtype=np.int64).reshape(-1, 2), None

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Columnar: the reward lists are flattened once into an (N, K) array and every max-gap group is selected in
        one vectorized call; Python runs per row only for the rows that fail (to say why)."""
        require_columns(batch, ["prompt_id", "candidates", "sources", *self.columns], "rc_filter")
        start = time.perf_counter()
        n = batch.num_rows
        m = lengths(batch.column("candidates"))
        errors = batch.column("error").to_pylist() if "error" in batch.column_names else [None] * n
        has_error = np.array([bool(e) for e in errors], dtype=bool)  # as the score stage: "" is no error
        ok = ~has_error
        for col in self.columns:  # a reward list shorter than the group: missing
            ok &= lengths(batch.column(col)) == m
        rows = np.flatnonzero(ok)
        values, offsets, bad = self._rewards(batch, rows, m)
        chosen, rejected = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
        every: list = [[] for _ in range(n)]  # a multi-pair strategy's pairs, per row
        keep = np.flatnonzero(~bad)
        if keep.size:
            lo, hi = offsets[:-1][keep], offsets[1:][keep]
            size = hi - lo
            if keep.size == rows.size:
                at = np.arange(values.shape[0])
            else:  # the kept groups' rows of values
                group, within = positions(size)
                at = lo[group] + within
            picked, pairs = self._pairs(values[at], np.concatenate([[0], np.cumsum(size)]), rows[keep], batch)
            chosen[rows[keep]], rejected[rows[keep]] = picked[:, 0], picked[:, 1]
            for i, group_pairs in zip(rows[keep], pairs or []):
                every[i] = group_pairs
        reasons = self._reasons(batch, errors, has_error, ok, m, rows, (values, offsets, bad), chosen)
        return add_seconds(self._output(batch, errors, chosen, rejected, reasons, every), "rc_filter", start)

    def _rewards(self, batch: pa.Table, rows: np.ndarray, m: np.ndarray):
        """The reward rows of the groups ``rows`` (those with every reward list complete) as one (sum m, K) array,
        the groups' offsets into it, and per group whether any of its rewards is not finite."""
        sub = batch.select(self.columns)
        if rows.size != batch.num_rows:
            sub = sub.take(pa.array(rows))
        values = (
            np.stack([flat(sub.column(c)) for c in self.columns], axis=1)
            if rows.size
            else np.zeros((0, len(self.columns)))
        )
        offsets = np.concatenate([[0], np.cumsum(m[rows])]).astype(np.int64)
        nonfinite = (~np.all(np.isfinite(values), axis=1)).astype(float)
        bad = np.bincount(np.repeat(np.arange(rows.size), m[rows]), weights=nonfinite, minlength=rows.size) > 0
        return values, offsets, bad

    def _reasons(
        self,
        batch: pa.Table,
        errors: list,
        has_error: np.ndarray,
        ok: np.ndarray,
        m: np.ndarray,
        rows: np.ndarray,
        rewards: tuple,
        chosen: np.ndarray,
    ) -> list:
        """Each row's failure reason (None where it has a pair): an upstream error's kind, missing rewards, a
        non-finite reward (its objectives are written into ``errors``), or why no pair passed. ``rewards``: what
        :meth:`_rewards` returned."""
        values, offsets, bad = rewards
        reasons: list = [None] * batch.num_rows
        for i in np.flatnonzero(has_error):
            reasons[i] = errors[i].split(":", 1)[0]
        for i in np.flatnonzero(~ok & ~has_error):
            reasons[i] = "missing_rewards"
        for r in np.flatnonzero(bad):  # record which objectives are not finite
            i, group = rows[r], values[offsets[r] : offsets[r + 1]]
            names = sorted({self.objectives[j] for j in np.argwhere(~np.isfinite(group))[:, 1]})
            reasons[i], errors[i] = "non_finite_reward", f"non_finite_reward: objective(s) {', '.join(names)}"
        finished = batch.column("candidate_finished") if "candidate_finished" in batch.column_names else None
        for r in np.flatnonzero(~bad):
            i = rows[r]
            if chosen[i] < 0:
                done = finished[i].as_py() if finished is not None else [True] * int(m[i])
                reasons[i] = self._reason(
                    batch.column("candidates")[i].as_py(),
                    batch.column("sources")[i].as_py(),
                    values[offsets[r] : offsets[r + 1]],
                    done,
                )
        return reasons

    def _output(
        self, batch: pa.Table, errors: list, chosen: np.ndarray, rejected: np.ndarray, reasons: list, every: list
    ) -> pa.Table:
        """``batch`` with the selection's columns: ``error``, ``chosen_index`` / ``rejected_index`` (null without a
        pair), ``failure_reason`` and, for a multi-pair strategy, every pair's indices."""
        found = chosen >= 0
        out = put(batch, "error", pa.array(errors, pa.string()))
        out = put(out, "chosen_index", pa.array(chosen, mask=~found))
        out = put(out, "rejected_index", pa.array(rejected, mask=~found))
        out = put(out, "failure_reason", pa.array(reasons, pa.string()))
        if self.strategy_name in selection.MULTI_PAIR:  # the writer writes every pair of a row
            out = put(out, "chosen_indices", pa.array([[w for w, _ in p] for p in every], pa.list_(pa.int64())))
            out = put(out, "rejected_indices", pa.array([[l for _, l in p] for p in every], pa.list_(pa.int64())))
        return out


def rc_filter_batch(batch: pa.Table, **select) -> pa.Table:
    """The RC step as a stateless task (a pipeline with no model scorer to fuse it into)."""
    return RCFilterStage(**select)(batch)
