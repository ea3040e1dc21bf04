"""Ray Data stages over prompt-group rows (pyarrow batches): generate, score, RC-filter.

Each stage is one small class: ``__init__`` loads its model once per actor, ``__call__(batch) -> batch`` maps a
batch of prompt groups to the same groups with columns added. A per-prompt failure (a prompt too long for the
engine, an engine error, a non-finite reward) is recorded on the row, never raised, so one bad prompt does not
stop the run and every prompt reaches the writer.

Model paths may be URIs: each stage fetches its models into the node's local cache in ``__init__``
(:func:`rcs_ray.storage.local_copy`), so actors on any node of a cluster load them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from rcs_ray import rc
from rcs_ray.config import ModelConfig, RCConfig, SamplingConfig
from rcs_ray.data.pairs import group_table, is_chat, require_columns, reward_column, seconds_column
from rcs_ray.rc import ORIGINAL_CHOSEN, ORIGINAL_REJECTED, SAMPLED

log = logging.getLogger(__name__)


def sample_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    """A 31-bit seed for sample ``sample_index`` of a prompt: independent of batch size, actor count, prompt order
    and resampling round (adaptive resampling's first m samples are those of a fixed run with n = m)."""
    digest = hashlib.sha256(f"{seed}\x1f{prompt_id}\x1f{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def rc_seed(seed: int, prompt_id: str) -> int:
    """Seed of the random choice of the ``rc_random`` strategy for one prompt (independent of batching)."""
    return sample_seed(seed, prompt_id, -1)


def _timed(rows: list[dict], stage: str, start: float) -> None:
    per_row = (time.perf_counter() - start) / max(1, len(rows))
    col = seconds_column(stage)
    for row in rows:
        row[col] = (row.get(col) or 0.0) + per_row


class GenerateStage:
    """Adds sampled candidates until each group holds ``n_target`` samples (plus the dataset's originals).

    Each prompt is rendered and tokenized once (:func:`rcs_ray.prompting.prompt_ids`, the policy's rule), its length
    checked against the engine's context, and its token ids handed to the engine.
    """

    INPUTS = ("prompt_id", "prompt")

    def __init__(self, model: ModelConfig, sampling: SamplingConfig, n_target: int, include_original: bool = True,
                 engine=None):
        from rcs_ray.sampling.engines import make_engine
        from rcs_ray.storage import local_copy

        if engine is None:
            model = dataclasses.replace(model, path=local_copy(model.path), tokenizer=local_copy(model.tokenizer))
        self.sampling = sampling
        self.n_target = n_target
        self.include_original = include_original
        self.use_chat_template = model.chat_template
        self.engine = engine if engine is not None else make_engine(model, sampling)

    def _count(self, text: str) -> int:
        try:
            return len(self.engine.tokenizer(text, add_special_tokens=False)["input_ids"])
        except Exception:  # noqa: BLE001 - a count is informative only
            return 0

    def _prepare(self, row: dict) -> Optional[tuple[list[int], list[int]]]:
        from rcs_ray.prompting import prompt_ids

        if row.get("candidates") is None:
            row["candidates"], row["sources"], row["candidate_tokens"] = [], [], []
            if self.include_original and row.get("original_chosen") and row.get("original_rejected"):
                row["candidates"] += [row["original_chosen"], row["original_rejected"]]
                row["sources"] += [ORIGINAL_CHOSEN, ORIGINAL_REJECTED]
                row["candidate_tokens"] += [self._count(row["original_chosen"]), self._count(row["original_rejected"])]
        row["generated_tokens"] = row.get("generated_tokens") or 0
        have = row["sources"].count(SAMPLED)
        if row.get("error") or have >= self.n_target:
            return None
        try:
            ids = prompt_ids(self.engine.tokenizer, row["prompt"], self.use_chat_template)
        except Exception as exc:  # noqa: BLE001 - a template or tokenizer failure fails this prompt only
            row["error"] = f"prompt_render_failed: {type(exc).__name__}: {exc}"
            return None
        if len(ids) + self.sampling.max_tokens > self.engine.max_model_len:
            row["error"] = (f"prompt_too_long: {len(ids)} prompt tokens + max_tokens {self.sampling.max_tokens} > "
                            f"max_model_len {self.engine.max_model_len}")
            return None
        seeds = [sample_seed(self.sampling.seed, row["prompt_id"], i) for i in range(have, self.n_target)]
        return ids, seeds

    def __call__(self, batch: pa.Table) -> pa.Table:
        require_columns(batch, self.INPUTS, "generate")
        start = time.perf_counter()
        rows = batch.to_pylist()
        todo = [(i, job) for i, row in enumerate(rows) if (job := self._prepare(row)) is not None]
        results = self._generate([job for _, job in todo])
        for (i, _), result in zip(todo, results):
            row = rows[i]
            if isinstance(result, Exception):
                row["error"] = f"generation_failed: {type(result).__name__}: {result}"
                continue
            row["candidates"] = row["candidates"] + [c.text for c in result]
            row["sources"] = row["sources"] + [SAMPLED] * len(result)
            row["candidate_tokens"] = (row.get("candidate_tokens") or []) + [c.num_tokens for c in result]
            row["generated_tokens"] += sum(c.num_tokens for c in result)
        _timed(rows, "generate", start)
        return group_table(rows, is_chat(batch.schema))

    def _generate(self, jobs: list[tuple[list[int], list[int]]]) -> list:
        if not jobs:
            return []
        try:
            return self.engine.generate([t for t, _ in jobs], [s for _, s in jobs])
        except Exception as exc:  # noqa: BLE001 - isolate the prompt that breaks the engine
            log.warning("generation of a batch failed (%s); retrying its %d prompts one by one", exc, len(jobs))
        out = []
        for ids, seeds in jobs:
            try:
                out.append(self.engine.generate([ids], [seeds])[0])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


class ScoreStage:
    """Scores every candidate not yet scored on the objectives of one scorer (one model, one forward pass).

    Args:
        spec: the scorer: its reward source and the objectives it serves (:func:`rcs_ray.sampling.scorers.plan_scorers`).
        settings: how the scorer loads and tokenizes (:class:`rcs_ray.sampling.job.ScorerSettings`).
    """

    INPUTS = ("prompt", "candidates")

    def __init__(self, spec, settings):
        from rcs_ray.sampling.scorers import make_scorer
        from rcs_ray.storage import local_copy

        spec = dataclasses.replace(spec, objectives=[
            dataclasses.replace(o, model=local_copy(o.model), reference=local_copy(o.reference))
            for o in spec.objectives])
        self.names = spec.names
        self.label = spec.label
        self.scorer = make_scorer(spec, settings)

    def __call__(self, batch: pa.Table) -> pa.Table:
        require_columns(batch, self.INPUTS, f"score {self.label}")
        start = time.perf_counter()
        rows = batch.to_pylist()
        prompts, responses, owners = [], [], []
        cols = [reward_column(n) for n in self.names]
        for i, row in enumerate(rows):
            done = len(row.get(cols[0]) or [])
            if row.get("error"):
                continue
            for cand in row["candidates"][done:]:
                prompts.append(row["prompt"])
                responses.append(cand)
                owners.append(i)
        scores = self.scorer.score(prompts, responses) if responses else np.zeros((0, len(cols)))
        new: dict[int, list] = {}
        for owner, values in zip(owners, scores.tolist()):
            new.setdefault(owner, []).append(values)
        for i, row in enumerate(rows):
            for j, col in enumerate(cols):
                row[col] = (row.get(col) or []) + [v[j] for v in new.get(i, [])]
        _timed(rows, "score", start)
        return group_table(rows, is_chat(batch.schema))


class RCFilterStage:
    """Reduces each group to one pair with a selection strategy (default RCS), or records why it cannot.

    Adds ``chosen_index``, ``rejected_index`` (null on failure) and ``failure_reason`` (null on success):
    ``error`` rows keep their error as the reason; others fail with ``non_finite_reward``, ``too_few_candidates``,
    ``all_candidates_identical``, ``tied_on_target`` or ``no_rc_pair`` (``no_original_pair`` / ``original_not_rc``
    for the strategies that use the dataset's pair).
    """

    def __init__(self, objectives: Sequence[str], target: str, rc_cfg: RCConfig, seed: int = 0):
        self.objectives = list(objectives)
        self.columns = [reward_column(n) for n in self.objectives]
        self.target = self.objectives.index(target)
        enforce = rc_cfg.enforce if rc_cfg.enforce is not None else self.objectives
        self.enforce = [self.objectives.index(n) for n in enforce]
        self.margin = rc_cfg.margin
        self.strategy_name = rc_cfg.strategy
        rc.get_strategy(rc_cfg.strategy)              # an unknown name fails here, not per batch
        self.weights = rc_cfg.weights
        self.seed = seed

    def _reason(self, row: dict, rewards: np.ndarray) -> str:
        if len(row["candidates"]) < 2:
            return "too_few_candidates"
        if len(set(row["candidates"])) == 1:
            return "all_candidates_identical"
        if self.strategy_name in ("original", "filter_only"):
            return "original_not_rc" if ORIGINAL_CHOSEN in row["sources"] else "no_original_pair"
        return rc.failure_reason(rewards, self.target, self.enforce, self.margin)

    def _rewards(self, row: dict) -> Optional[np.ndarray]:
        """The row's (m, K) rewards, or None after recording why the row cannot be selected on."""
        row["chosen_index"] = row["rejected_index"] = None
        row["failure_reason"] = None
        if row.get("error"):
            row["failure_reason"] = row["error"].split(":", 1)[0]
            return None
        m, k = len(row["candidates"]), len(self.columns)
        rewards = np.array([row.get(c) or [] for c in self.columns], dtype=np.float64).T.reshape(-1, k)
        if rewards.shape[0] != m:
            row["failure_reason"] = "missing_rewards"
            return None
        if not np.all(np.isfinite(rewards)):
            bad = sorted({self.objectives[j] for j in np.argwhere(~np.isfinite(rewards))[:, 1]})
            row["failure_reason"] = "non_finite_reward"
            row["error"] = f"non_finite_reward: objective(s) {', '.join(bad)}"
            return None
        return rewards

    def _pairs(self, rows: list[dict], groups: list[np.ndarray]) -> list:
        """Selected (winner, loser) or None per group (vectorized over the batch where the strategy allows)."""
        return rc.select_batch(self.strategy_name, groups, self.target, enforce=self.enforce, margin=self.margin,
                               sources=[row["sources"] for row in rows], weights=self.weights,
                               seeds=lambda i: rc_seed(self.seed, rows[i]["prompt_id"]))

    def __call__(self, batch: pa.Table) -> pa.Table:
        require_columns(batch, ["prompt_id", "candidates", "sources", *self.columns], "rc_filter")
        start = time.perf_counter()
        rows = batch.to_pylist()
        valid = [(row, g) for row in rows if (g := self._rewards(row)) is not None]
        pairs = self._pairs([r for r, _ in valid], [g for _, g in valid])
        for (row, rewards), pair in zip(valid, pairs):
            if pair is None:
                row["failure_reason"] = self._reason(row, rewards)
            else:
                row["chosen_index"], row["rejected_index"] = pair
        _timed(rows, "rc_filter", start)
        return group_table(rows, is_chat(batch.schema))
