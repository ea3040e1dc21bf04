"""Ray Data stages over prompt-group rows (pyarrow batches): generate, score, RC-filter.

Each stage is one small class: ``__init__`` loads its model once per actor, ``__call__(batch) -> batch`` maps a
batch of prompt groups to the same groups with columns added. A per-prompt failure (a prompt too long for the
engine, an engine error, a non-finite reward) is recorded on the row, never raised, so one bad prompt does not
stop the run and every prompt reaches the writer.

Model paths may be URIs: each stage fetches its models into the node's local cache in ``__init__``
(:func:`rcs_ray.storage.local_copy`), so actors on any node of a cluster load them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rcs_ray.config import ModelConfig, SamplingConfig
from rcs_ray.data.pairs import require_columns, reward_column
from rcs_ray.prompting import PromptRule, encode_batch, prompt_ids_batch
from rcs_ray.rc import ORIGINAL_CHOSEN, ORIGINAL_REJECTED, SAMPLED
from rcs_ray.sampling.busy import BusyClock
from rcs_ray.sampling.columns import (
    add_seconds,
    append_lists,
    begins,
    flat,
    lengths,
    positions,
    put,
    share_seconds,
)
from rcs_ray.sampling.seeds import sample_seed
from rcs_ray.sampling.sizing import scorer_kind

log = logging.getLogger(__name__)


class GenerateStage:
    """Adds sampled candidates until each group holds ``n_target`` samples (plus the dataset's originals), with
    whether each finished (``candidate_finished``: stopped at EOS or a stop string, not cut at ``max_tokens``) and
    running totals of generated tokens and cut samples.

    Each prompt is rendered and tokenized once (:func:`rcs_ray.prompting.prompt_ids`, the policy's rule), its length
    checked against the engine's context, and its token ids handed to the engine.

    One batch at a time; :class:`AsyncGenerateStage` keeps several in flight for an engine with ``submit``.
    """

    INPUTS = ("prompt_id", "prompt")

    def __init__(
        self,
        model: ModelConfig,
        sampling: SamplingConfig,
        n_target: int = 0,
        include_original: bool = True,
        engine=None,
    ):
        from rcs_ray.sampling.engines import make_engine
        from rcs_ray.storage import local_copy

        if engine is None:
            model = dataclasses.replace(model, path=local_copy(model.path), tokenizer=local_copy(model.tokenizer))
        self.sampling = sampling
        self.n_target = n_target
        self.include_original = include_original
        self.use_chat_template = PromptRule.of(model)  # chat template, system prompt, template variables
        self.engine = engine if engine is not None else make_engine(model, sampling)
        self.clock = BusyClock()  # the engine's busy time, however many batches overlap in it

    def _counts_of(self, originals: list) -> list:
        """Token counts of the originals added per row (informative only: 0 where the tokenizer fails)."""
        counts = iter(
            len(x) if isinstance(x, list) else 0
            for x in encode_batch(self.engine.tokenizer, [t for o in originals for t in o], False)
        )
        return [[next(counts) for _ in o] for o in originals]

    def _originals(self, batch: pa.Table, include_original: bool) -> list:
        """Per row: the dataset's (chosen, rejected) to add as candidates -- on a group's first pass only."""
        first = (
            batch.column("candidates").is_null().to_pylist()
            if "candidates" in batch.column_names
            else [True] * batch.num_rows
        )
        if not include_original or "original_chosen" not in batch.column_names:
            return [()] * batch.num_rows
        pairs = zip(batch.column("original_chosen").to_pylist(), batch.column("original_rejected").to_pylist())
        return [(c, r) if f and c and r else () for f, (c, r) in zip(first, pairs)]

    def _jobs(self, prompts: list, prompt_ids: list, have: np.ndarray, n_target: int) -> list:
        """Per prompt ``((token ids, seeds), None)``, or ``(None, error)``: rendered and tokenized once, as a batch,
        and checked against the engine's context."""
        out, limit = [], self.engine.max_model_len
        for ids, pid, k in zip(
            prompt_ids_batch(self.engine.tokenizer, prompts, self.use_chat_template), prompt_ids, have
        ):
            if isinstance(ids, Exception):  # a template or tokenizer failure fails this prompt only
                out.append((None, f"prompt_render_failed: {type(ids).__name__}: {ids}"))
            elif len(ids) + self.sampling.max_tokens > limit:
                out.append(
                    (
                        None,
                        f"prompt_too_long: {len(ids)} prompt tokens + max_tokens "
                        f"{self.sampling.max_tokens} > max_model_len {limit}",
                    )
                )
            else:
                out.append(((ids, [sample_seed(self.sampling.seed, pid, i) for i in range(int(k), n_target)]), None))
        return out

    def generate_batch(self, batch: pa.Table) -> pa.Table:
        return asyncio.run(self._call(batch, self.n_target, self.include_original))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return asyncio.run(self._call(batch, self.n_target, self.include_original))

    async def host_call(self, batch: pa.Table, n_target: int, include_original: bool = True) -> pa.Table:
        """A pass's call into this stage kept in a :mod:`~rcs_ray.sampling.hosts` host: each round gives its own
        ``n_target`` (and an evaluation no originals)."""
        return await self._call(batch, n_target, include_original)

    async def _call(self, batch: pa.Table, n_target: int, include_original: bool) -> pa.Table:
        """The batch with its samples (:meth:`_generated`) and its share of the engine's busy time in
        ``seconds__generate``: batches in flight together share the time once (:class:`BusyClock`)."""
        require_columns(batch, self.INPUTS, "generate")
        self.clock.enter()
        try:
            batch = await self._generated(batch, n_target, include_original)
        finally:
            busy = self.clock.leave()
        return share_seconds(batch, "generate", busy)

    async def _generated(self, batch: pa.Table, n_target: int, include_original: bool) -> pa.Table:
        """Columnar: only the prompts that need samples are rendered (the engine takes token ids), and the new
        candidates are appended to the list columns by index; the batch never becomes Python rows."""
        started = time.time()
        batch, n = batch.combine_chunks(), batch.num_rows
        originals = self._originals(batch, include_original)
        have = np.zeros(n, dtype=np.int64)
        if "sources" in batch.column_names:
            sampled = pc.equal(pc.list_flatten(batch.column("sources")), SAMPLED).to_numpy(zero_copy_only=False)
            parents = pc.list_parent_indices(batch.column("sources")).to_numpy(zero_copy_only=False)
            have = np.bincount(parents[sampled], minlength=n).astype(np.int64)
        errors = batch.column("error").to_pylist() if "error" in batch.column_names else [None] * n
        need = np.flatnonzero(np.array([not e for e in errors], dtype=bool) & (have < n_target))
        prompts = batch.column("prompt").take(pa.array(need, pa.int64())).to_pylist()
        ids = batch.column("prompt_id").take(pa.array(need, pa.int64())).to_pylist()
        todo = []
        for i, (job, error) in zip(need, self._jobs(prompts, ids, have[need], n_target)):
            errors[i] = error
            if job is not None:
                todo.append((i, job))
        results = await self._generate([job for _, job in todo])
        texts = [list(o) for o in originals]
        sources = [[ORIGINAL_CHOSEN, ORIGINAL_REJECTED] if o else [] for o in originals]
        finished = [[True] * len(o) for o in originals]  # the dataset's responses are finished answers
        tokens = self._counts_of(originals)
        generated, cut = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        for (i, _), result in zip(todo, results):
            if isinstance(result, Exception):
                errors[i] = f"generation_failed: {type(result).__name__}: {result}"
                continue
            texts[i] += [c.text for c in result]
            sources[i] += [SAMPLED] * len(result)
            finished[i] += [bool(c.finished) for c in result]
            tokens[i] += [c.num_tokens for c in result]
            generated[i] = sum(c.num_tokens for c in result)
            cut[i] = sum(not c.finished for c in result)
        old = {
            c: batch.column(c) if c in batch.column_names else None
            for c in ("candidates", "sources", "candidate_tokens", "candidate_finished")
        }
        batch = put(batch, "candidates", append_lists(old["candidates"], texts, pa.list_(pa.string())))
        batch = put(batch, "sources", append_lists(old["sources"], sources, pa.list_(pa.string())))
        batch = put(batch, "candidate_tokens", append_lists(old["candidate_tokens"], tokens, pa.list_(pa.int64())))
        batch = put(
            batch, "candidate_finished", append_lists(old["candidate_finished"], finished, pa.list_(pa.bool_()))
        )
        for name, count in (("generated_tokens", generated), ("truncated_samples", cut)):  # running totals
            if name in batch.column_names:
                count += pc.fill_null(batch.column(name), 0).to_numpy(zero_copy_only=False)
            batch = put(batch, name, pa.array(count, pa.int64()))
        batch = put(batch, "error", pa.array(errors, pa.string()))
        return put(batch, "generate_started", pa.array(np.full(n, started), pa.float64()))

    def _engine_call(self, prompts: list, seeds: list):
        """An awaitable of the engine's completions: ``submit``'s future, else a blocking ``generate`` done inline."""
        submit = getattr(self.engine, "submit", None)
        if submit is not None:
            return asyncio.wrap_future(submit(prompts, seeds))
        done = asyncio.get_running_loop().create_future()
        try:
            done.set_result(self.engine.generate(prompts, seeds))
        except Exception as exc:  # noqa: BLE001 - raised where it is awaited
            done.set_exception(exc)
        return done

    async def _generate(self, jobs: list[tuple[list[int], list[int]]]) -> list:
        if not jobs:
            return []
        try:
            return await self._engine_call([t for t, _ in jobs], [s for _, s in jobs])
        except Exception as exc:  # noqa: BLE001 - isolate the prompt that breaks the engine
            log.warning("generation of a batch failed (%s); retrying its %d prompts one by one", exc, len(jobs))
        out = []
        for ids, seeds in jobs:
            try:
                out.append((await self._engine_call([ids], [seeds]))[0])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


class AsyncGenerateStage(GenerateStage):
    """:class:`GenerateStage` with an async ``__call__``: Ray Data runs ``sampling.max_concurrent_batches`` calls at
    once on each actor (as ``ray.data.llm`` does), and every batch in flight goes into the engine's ``submit`` (vLLM:
    one continuous batch). For engines with ``submit`` only: a blocking engine would just hold more batches back."""

    async def __call__(self, batch: pa.Table) -> pa.Table:
        return await self._call(batch, self.n_target, self.include_original)


class ScoreStage:
    """Scores every candidate not yet scored on the objectives of one scorer (one model, one forward pass).

    Args:
        spec: the scorer: its reward source and the objectives it serves
            (:func:`rcs_ray.sampling.scorers.plan_scorers`).
        settings: how the scorer loads and tokenizes (:class:`rcs_ray.sampling.job.ScorerSettings`).

    The RC step is not here: the last scorer's caller applies it (:class:`~rcs_ray.sampling.host_actors.HostCall`),
    so one loaded scorer serves passes that select and passes that do not (an evaluation).
    """

    INPUTS = ("prompt", "candidates")

    def __init__(self, spec, settings):
        from rcs_ray.sampling.scorers import make_scorer
        from rcs_ray.storage import local_copy

        spec = dataclasses.replace(
            spec,
            objectives=[
                dataclasses.replace(o, model=local_copy(o.model), reference=local_copy(o.reference))
                for o in spec.objectives
            ],
        )
        self.names = spec.names
        self.label = spec.label
        self.scorer = make_scorer(spec, settings)

    async def host_call(self, batch: pa.Table) -> pa.Table:
        """A pass's call into this scorer kept in a :mod:`~rcs_ray.sampling.hosts` host."""
        return self(batch)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Columnar: the candidates not yet scored are taken from the flattened list column (their prompts by parent
        index), scored in one call, and the reward lists rebuilt from offsets; no per-row Python."""
        require_columns(batch, self.INPUTS, f"score {self.label}")
        start = time.perf_counter()
        batch = batch.combine_chunks()
        n, cols = batch.num_rows, [reward_column(name) for name in self.names]
        cands = batch.column("candidates")
        m = lengths(cands)
        done = lengths(batch.column(cols[0])) if cols[0] in batch.column_names else np.zeros(n, dtype=np.int64)
        failed = (
            np.zeros(n, dtype=bool)
            if "error" not in batch.column_names
            else pc.fill_null(pc.not_equal(batch.column("error"), ""), False).to_numpy(zero_copy_only=False)
        )
        parent, pos = positions(m)  # each flat candidate's row and index in it
        new = ~failed[parent] & (pos >= done[parent])  # the candidates this call scores
        keep = new | (pos < done[parent])  # every candidate that has a reward afterwards
        todo = np.flatnonzero(new)
        if todo.size:
            prompts = batch.column("prompt").take(pa.array(parent[todo])).to_pylist()
            responses = pc.list_flatten(cands).take(pa.array(todo)).to_pylist()
            scores = np.asarray(self.scorer.score(prompts, responses), dtype=np.float64).reshape(todo.size, -1)
        else:
            scores = np.zeros((0, len(cols)))
        offsets = pa.array(np.concatenate([[0], np.cumsum(np.bincount(parent[keep], minlength=n))]), pa.int32())
        old_at = (begins(done)[parent] + pos)[keep & ~new]  # into the old flat lists
        for j, col in enumerate(cols):
            values = np.empty(parent.size)
            values[todo] = scores[:, j]
            if old_at.size:
                values[keep & ~new] = flat(batch.column(col))[old_at]
            batch = put(batch, col, pa.ListArray.from_arrays(offsets, pa.array(values[keep], pa.float64())))
        return add_seconds(batch, scorer_kind(self.label), start)  # by scorer: rcs_ray.sampling.sizing
