"""Driver-side writer: streams selected groups into ``pairs.parquet`` / ``failed.parquet`` and counts ``stats.json``.

Files are written through :class:`rcs_ray.storage.AtomicPath` (under temporary names, moved into place only when the
run finishes), so an interrupted run leaves no half file and any earlier complete output stays as it was until then.
The files' schemas (and the objective names in their metadata) are :mod:`rcs_ray.data.pairs`'.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from rcs_ray.data.pairs import as_response, candidates_schema, failed_schema, pairs_schema, reward_column
from rcs_ray.layout import SamplingFiles
from rcs_ray.storage import AtomicPath, write_text


class _ParquetSink:
    """Buffered rows -> one parquet file written through an :class:`AtomicPath`."""

    def __init__(self, path: str, schema: pa.Schema, flush_rows: int = 4096):
        self.file = AtomicPath(path)
        self.schema = schema
        self.writer: Optional[pq.ParquetWriter] = None
        self.buffer: list[dict] = []
        self.flush_rows = flush_rows
        self.rows = 0

    def write(self, row: dict) -> None:
        self.buffer.append(row)
        self.rows += 1
        if len(self.buffer) >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.file.tmp, self.schema)
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []

    def commit(self) -> None:
        self._flush()
        self.writer.close()
        self.file.commit()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.file.abort()


class OutputWriter:
    """Routes RC-filtered rows to the pairs / failed files and accumulates the run's statistics.

    Args:
        out_dir: a local directory.
        objectives: the scored objectives, in order (the K rewards of each pair).
        target: the objective the pairs are selected for.
        chat: write TRL's conversational form: the prompts are chat messages, or plain prompts that the policy read
            through its chat template (stored as one user message, so TRL tokenizes them as the policy saw them).
    """

    def __init__(self, out_dir: str, objectives: Sequence[str], target: str, chat: bool = False,
                 candidates: bool = False, seed: int = 0):
        os.makedirs(out_dir, exist_ok=True)
        for stale in glob.glob(os.path.join(out_dir, "*.tmp-*")):
            os.remove(stale)
        self.files = SamplingFiles(out_dir)
        self.objectives = list(objectives)
        self.target = target
        self.chat = chat
        self.reward_cols = [reward_column(n) for n in self.objectives]
        self.pairs = _ParquetSink(self.files.pairs, pairs_schema(chat, self.objectives, target))
        self.failed = _ParquetSink(self.files.failed, failed_schema(chat, self.objectives, target))
        self.candidates = _ParquetSink(self.files.candidates, candidates_schema(chat, self.objectives, target, seed)) \
            if candidates else None
        self.reasons: Counter = Counter()
        self.pair_sources: Counter = Counter()
        self.seconds: Counter = Counter()
        self.gaps: list[float] = []

    def _prompt(self, prompt):
        return [{"role": "user", "content": prompt}] if self.chat and isinstance(prompt, str) else prompt

    def account(self, row: dict) -> None:
        for key, value in row.items():
            if key.startswith("seconds__") and value:
                self.seconds[key[len("seconds__"):]] += value

    def write_pair(self, row: dict, round_index: int) -> None:
        w, l = row["chosen_index"], row["rejected_index"]
        rewards = [[row[c][i] for c in self.reward_cols] for i in (w, l)]
        t = self.objectives.index(self.target)
        self.gaps.append(rewards[0][t] - rewards[1][t])
        self.pair_sources[f"{row['sources'][w]}>{row['sources'][l]}"] += 1
        self.pairs.write({
            "prompt": self._prompt(row["prompt"]), "chosen": as_response(row["candidates"][w], self.chat),
            "rejected": as_response(row["candidates"][l], self.chat), "prompt_id": row["prompt_id"],
            "chosen_rewards": rewards[0], "rejected_rewards": rewards[1], "target": self.target,
            "chosen_source": row["sources"][w], "rejected_source": row["sources"][l],
            "num_candidates": len(row["candidates"]), "round": round_index})

    def write_failed(self, row: dict, rounds: int) -> None:
        reason = row["failure_reason"]
        self.reasons[reason] += 1
        candidates = row.get("candidates") or []
        self.failed.write({
            "prompt_id": row["prompt_id"], "prompt": self._prompt(row["prompt"]), "reason": reason, "detail": row.get("error"),
            "num_candidates": len(candidates), "num_distinct": len(set(candidates)), "rounds": rounds})

    def write_candidates(self, row: dict, round_index: int) -> None:
        """A finalised group (its pair or its failure is written too) into ``candidates.parquet``."""
        if self.candidates is None:
            return
        cands = row.get("candidates") or []
        cols = [row.get(c) or [] for c in self.reward_cols]
        rewards = [[col[i] if i < len(col) else None for col in cols] for i in range(len(cands))] \
            if all(len(c) == len(cands) for c in cols) else []
        self.candidates.write({
            "prompt_id": row["prompt_id"], "prompt": self._prompt(row["prompt"]), "candidates": cands,
            "sources": row.get("sources") or [], "candidate_tokens": row.get("candidate_tokens") or [],
            "rewards": rewards, "error": row.get("error"), "round": round_index})

    def commit(self, stats: dict) -> dict:
        """Move the files into place and write ``stats.json``; returns the full stats."""
        self.pairs.commit()
        self.failed.commit()
        if self.candidates is not None:
            self.candidates.commit()
        total = self.pairs.rows + self.failed.rows
        full = {
            "objectives": self.objectives, "target": self.target, "prompts": total, "pairs": self.pairs.rows,
            "failed": self.failed.rows, "failure_rate": self.failed.rows / total if total else 0.0,
            "failed_by_reason": dict(sorted(self.reasons.items())), "pair_sources": dict(self.pair_sources),
            "mean_target_gap": sum(self.gaps) / len(self.gaps) if self.gaps else None,
            "actor_seconds_by_stage": {k: round(v, 3) for k, v in sorted(self.seconds.items())},
            **stats,
        }
        write_text(self.files.stats, json.dumps(full, indent=2) + "\n")
        return full

    def abort(self) -> None:
        self.pairs.abort()
        self.failed.abort()
        if self.candidates is not None:
            self.candidates.abort()
