"""Driver-side writer: streams selected groups into ``pairs.parquet`` / ``failed.parquet`` and counts ``stats.json``.

The four files are written into a temporary directory beside the output directory and committed as one set
(:class:`rcs_ray.storage.AtomicPath` of the directory: one rename), so an interrupted or failed run (a full disk)
leaves no half file and no mixed set, and an earlier complete set stays as it was until the new one replaces it.
A disk error names the file and the bytes it was writing (:class:`rcs_ray.storage.DiskError`).
The files' schemas (and the objective names in their metadata) are :mod:`rcs_ray.data.pairs`'.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rcs_ray.data.pairs import reward_column
from rcs_ray.data.sampling_files import candidates_schema, failed_schema, pairs_schema
from rcs_ray.rc import SAMPLED
from rcs_ray.run_layout import STATS_FILE, SamplingFiles
from rcs_ray.sampling.columns import (
    column_sum,
    flat,
    lengths,
    messages,
    no_null_lists,
    offsets_of,
    pick,
    positions,
    rows_of,
    starts,
    with_system,
)
from rcs_ray.sampling.sizing import busy_figures
from rcs_ray.storage import AtomicPath, writing
from rcs_ray.storage.atomic import remove_local

# A carried group's selection and timings, cleared for the next round.
CLEARED = ("chosen_index", "rejected_index", "chosen_indices", "rejected_indices", "failure_reason", "generate_started")


class _ParquetSink:
    """Arrow tables -> one parquet file at ``path`` (inside the writer's staging directory), in row groups of
    ``flush_rows`` (cut at fixed row counts, so the same rows give the same file however they arrived)."""

    def __init__(self, path: str, schema: pa.Schema, home: str, flush_rows: int = 4096):
        self.path, self.home = path, home  # home: where the file is published, for messages
        self.schema = schema
        self.writer: Optional[pq.ParquetWriter] = None
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.flush_rows = flush_rows
        self.rows = 0

    def write(self, columns: dict) -> None:
        table = pa.Table.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)
        if not table.num_rows:
            return
        self.buffer.append(table)
        self.rows += table.num_rows
        self.buffered += table.num_rows
        while self.buffered >= self.flush_rows:
            self._flush(self.flush_rows)

    def _flush(self, rows: Optional[int] = None) -> None:
        table = pa.concat_tables(self.buffer) if self.buffer else self.schema.empty_table()
        rows = table.num_rows if rows is None else rows
        with writing(self.home, table.slice(0, rows).nbytes):
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.path, self.schema)
            if rows:
                self.writer.write_table(table.slice(0, rows).combine_chunks())
        rest = table.slice(rows)
        self.buffer, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        self._flush()
        with writing(self.home):
            self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:  # a full disk: the staging directory goes anyway
                pass


class OutputWriter:
    """Routes RC-selected batches (columnar, :meth:`write`) to the pairs / failed / candidates files and accumulates
    the run's statistics.

    Args:
        out_dir: a local directory.
        objectives: the scored objectives, in order (the K rewards of each pair).
        target: the objective the pairs are selected for.
        chat: write TRL's conversational form: the prompts are chat messages, or plain prompts that the policy read
            through its chat template (stored as one user message, so TRL tokenizes them as the policy saw them).
        system: the policy's system prompt, written as the first message of every conversational prompt that has
            none (as the prompt rule put it in front of what the policy read).
    """

    def __init__(
        self,
        out_dir: str,
        objectives: Sequence[str],
        target: str,
        chat: bool = False,
        candidates: bool = False,
        selection: Optional[dict] = None,
        system: Optional[str] = None,
    ):
        out_dir = out_dir.rstrip(os.sep)
        for stale in (
            glob.glob(glob.escape(out_dir) + ".tmp-*")
            + glob.glob(glob.escape(out_dir) + ".old-*")
            + glob.glob(os.path.join(glob.escape(out_dir), "*.tmp-*"))
        ):
            remove_local(stale)  # left by a run that was killed (one run per dir: the lock)
        self.staging = AtomicPath(out_dir)
        with writing(out_dir):
            os.makedirs(self.staging.tmp)
        home, self.files = SamplingFiles(out_dir), SamplingFiles(self.staging.tmp)
        self.objectives = list(objectives)
        self.target = target
        self.chat = chat
        self.system = system  # policy.system_prompt: the first message of each prompt
        self.reward_cols = [reward_column(n) for n in self.objectives]
        self.pairs = _ParquetSink(self.files.pairs, pairs_schema(chat, self.objectives, target), home.pairs)
        self.failed = _ParquetSink(self.files.failed, failed_schema(chat, self.objectives, target), home.failed)
        self.candidates = (
            _ParquetSink(
                self.files.candidates, candidates_schema(chat, self.objectives, target, selection), home.candidates
            )
            if candidates
            else None
        )
        self.reasons: Counter = Counter()
        self.pair_sources: Counter = Counter()
        self.seconds: Counter = Counter()
        self.gaps: list[float] = []
        self.paired_prompts = 0  # groups that gave pairs (rs_dpo: several pairs each)
        self.sampled = 0  # sampled candidates in the finalised groups
        self.truncated = 0  # of them, cut at max_tokens

    def _prompts(self, table: pa.Table) -> pa.Array:
        prompts = table.column("prompt").combine_chunks()
        if not self.chat:
            return prompts
        return with_system(messages(prompts, "user") if prompts.type == pa.string() else prompts, self.system)

    def _response(self, texts: pa.Array) -> pa.Array:
        return messages(texts, "assistant") if self.chat else texts

    def write(self, batch: pa.Table, round_index, resample: Sequence[str] = ()) -> pa.Table:
        """Route one RC-selected batch, columnar: its pairs, its failures and (with ``candidates``) every finalised
        group; returns the rows to carry into the next round (failures whose reason is in ``resample``), cleared
        of their selection and timings.

        Args:
            round_index: the 0-based round, one for the batch or one per row (offline selection: the stored rounds).
        """
        batch = batch.combine_chunks()
        n = batch.num_rows
        for name in batch.column_names:
            if name.startswith("seconds__"):
                self.seconds[name[len("seconds__") :]] += column_sum(batch, name)
        rounds = np.broadcast_to(np.asarray(round_index, dtype=np.int64), (n,))
        reason = batch.column("failure_reason")
        paired = pc.is_null(reason).to_numpy(zero_copy_only=False)
        carry = (
            ~paired
            & pc.fill_null(pc.is_in(reason, pa.array(list(resample), pa.string())), False).to_numpy(
                zero_copy_only=False
            )
            if resample
            else np.zeros(n, dtype=bool)
        )
        final = np.flatnonzero(~carry)
        self._pairs(batch, np.flatnonzero(paired), rounds)
        self._failed(batch, np.flatnonzero(~paired & ~carry), rounds + 1)
        if "sources" in batch.column_names and final.size:
            sources = batch.column("sources").take(pa.array(final))
            self.sampled += int(pc.sum(pc.equal(pc.list_flatten(sources), SAMPLED)).as_py() or 0)
            if "truncated_samples" in batch.column_names:
                self.truncated += int(column_sum(batch.take(pa.array(final)), "truncated_samples"))
        if self.candidates is not None and final.size:
            self._candidates(batch.take(pa.array(final)), rounds[final])
        drop = [c for c in batch.column_names if c.startswith("seconds__") or c in CLEARED]
        return batch.filter(pa.array(carry)).drop_columns(drop)

    def _pairs(self, batch: pa.Table, rows: np.ndarray, rounds: np.ndarray) -> None:
        """One pairs row per selected pair: per group, or per pair of a multi-pair strategy (``chosen_indices``)."""
        if not rows.size:
            return
        self.paired_prompts += rows.size
        if "chosen_indices" in batch.column_names:  # rs_dpo: every pair of each group
            every_w, every_l = (batch.column(c).take(pa.array(rows)) for c in ("chosen_indices", "rejected_indices"))
            rows = np.repeat(rows, lengths(every_w))
            w, l = flat(every_w).astype(np.int64), flat(every_l).astype(np.int64)
        else:
            w = batch.column("chosen_index").take(pa.array(rows)).to_numpy(zero_copy_only=False).astype(np.int64)
            l = batch.column("rejected_index").take(pa.array(rows)).to_numpy(zero_copy_only=False).astype(np.int64)
        cols = [(flat(batch.column(c)), starts(batch.column(c))[rows]) for c in self.reward_cols]
        chosen = np.stack([values[at + w] for values, at in cols], 1)
        rejected = np.stack([values[at + l] for values, at in cols], 1)
        t = self.objectives.index(self.target)
        self.gaps.extend((chosen[:, t] - rejected[:, t]).tolist())
        cands, srcs = batch.column("candidates"), batch.column("sources")
        chosen_source, rejected_source = pick(srcs, rows, w), pick(srcs, rows, l)
        for item in pc.value_counts(pc.binary_join_element_wise(chosen_source, rejected_source, ">")).to_pylist():
            self.pair_sources[item["values"]] += item["counts"]
        sub = batch.take(pa.array(rows))
        self.pairs.write(
            {
                "prompt": self._prompts(sub),
                "chosen": self._response(pick(cands, rows, w)),
                "rejected": self._response(pick(cands, rows, l)),
                "prompt_id": sub.column("prompt_id"),
                "chosen_rewards": rows_of(chosen, len(self.objectives)),
                "rejected_rewards": rows_of(rejected, len(self.objectives)),
                "target": pa.array([self.target] * rows.size, pa.string()),
                "chosen_source": chosen_source,
                "rejected_source": rejected_source,
                "chosen_finished": self._finished(batch, rows, w),
                "rejected_finished": self._finished(batch, rows, l),
                "num_candidates": pa.array(lengths(sub.column("candidates"))),
                "round": pa.array(rounds[rows]),
            }
        )

    @staticmethod
    def _finished(batch: pa.Table, rows: np.ndarray, index: np.ndarray) -> pa.Array:
        """Whether the picked candidates finished (all true for groups without ``candidate_finished``)."""
        if "candidate_finished" not in batch.column_names:
            return pa.array(np.ones(rows.size, dtype=bool))
        return pick(batch.column("candidate_finished"), rows, index)

    def _failed(self, batch: pa.Table, rows: np.ndarray, rounds: np.ndarray) -> None:
        if not rows.size:
            return
        sub = batch.take(pa.array(rows))
        for item in pc.value_counts(sub.column("failure_reason")).to_pylist():
            self.reasons[item["values"]] += item["counts"]
        cands = no_null_lists(sub, "candidates", pa.list_(pa.string()))
        distinct = np.zeros(rows.size, dtype=np.int64)  # distinct candidates per group
        if len(pc.list_flatten(cands)):
            per = (
                pa.table({"g": pc.list_parent_indices(cands), "c": pc.list_flatten(cands)})
                .group_by("g")
                .aggregate([("c", "count_distinct")])
            )
            distinct[per.column("g").to_numpy()] = per.column("c_count_distinct").to_numpy()
        self.failed.write(
            {
                "prompt_id": sub.column("prompt_id"),
                "prompt": self._prompts(sub),
                "reason": sub.column("failure_reason"),
                "detail": sub.column("error") if "error" in sub.column_names else pa.nulls(rows.size, pa.string()),
                "num_candidates": pa.array(lengths(cands)),
                "num_distinct": pa.array(distinct),
                "rounds": pa.array(rounds[rows]),
            }
        )

    def _candidates(self, sub: pa.Table, rounds: np.ndarray) -> None:
        """Finalised groups (their pair or their failure is written too) into ``candidates.parquet``: the m x K
        reward matrix where every objective scored every candidate, else an empty one."""
        cands = no_null_lists(sub, "candidates", pa.list_(pa.string()))
        m = lengths(cands)
        cols = [sub.column(c) if c in sub.column_names else None for c in self.reward_cols]
        full = np.ones(sub.num_rows, dtype=bool)
        for col in cols:
            full &= (lengths(col) if col is not None else np.zeros_like(m)) == m
        size = np.where(full, m, 0)
        rr, at = positions(size)
        matrix = np.stack([flat(col)[starts(col)[rr] + at] for col in cols], 1) if rr.size else np.zeros((0, len(cols)))
        self.candidates.write(
            {
                "prompt_id": sub.column("prompt_id"),
                "prompt": self._prompts(sub),
                "candidates": cands,
                "sources": no_null_lists(sub, "sources", pa.list_(pa.string())),
                "candidate_tokens": no_null_lists(sub, "candidate_tokens", pa.list_(pa.int64())),
                "candidate_finished": no_null_lists(sub, "candidate_finished", pa.list_(pa.bool_())),
                "rewards": pa.ListArray.from_arrays(offsets_of(size), rows_of(matrix, len(cols))),
                "error": sub.column("error") if "error" in sub.column_names else pa.nulls(sub.num_rows, pa.string()),
                "round": pa.array(rounds),
            }
        )

    def commit(self, stats: dict) -> dict:
        """Close the files, write ``stats.json`` and move the set into place in one rename; returns the full stats."""
        self.pairs.close()
        self.failed.close()
        if self.candidates is not None:
            self.candidates.close()
        total = self.paired_prompts + self.failed.rows
        full = {
            "objectives": self.objectives,
            "target": self.target,
            "prompts": total,
            "pairs": self.pairs.rows,
            "prompts_paired": self.paired_prompts,
            "failed": self.failed.rows,
            "failure_rate": self.failed.rows / total if total else 0.0,
            "failed_by_reason": dict(sorted(self.reasons.items())),
            "pair_sources": dict(self.pair_sources),
            "mean_target_gap": sum(self.gaps) / len(self.gaps) if self.gaps else None,
            "samples_truncated": self.truncated,  # sampled candidates cut at max_tokens
            "truncated_share": round(self.truncated / self.sampled, 5) if self.sampled else 0.0,
            **busy_figures(self.seconds),  # actor_seconds_by_stage (and _by_pool)
            **stats,
        }
        text = json.dumps(full, indent=2) + "\n"
        with writing(os.path.join(self.staging.path, STATS_FILE), len(text)):
            with open(self.files.stats, "w", encoding="utf-8") as fh:
                fh.write(text)
        self.staging.commit()
        return full

    def abort(self) -> None:
        for sink in (self.pairs, self.failed, self.candidates):
            if sink is not None:
                sink.abort()
        self.staging.abort()
