"""Driver-side writer: streams selected groups into ``pairs.parquet`` / ``failed.parquet`` and counts ``stats.json``.

Files are written under temporary names and renamed into place only when the run finishes, so an interrupted run
leaves no half file (and any earlier complete output stays as it was until then).

``pairs.parquet`` is TRL-compatible: ``prompt, chosen, rejected`` (strings, or chat messages when the input was chat)
plus ``prompt_id, chosen_rewards, rejected_rewards`` (K floats each, in ``objectives`` order), ``target``,
``chosen_source``, ``rejected_source``, ``num_candidates``, ``round``. ``failed.parquet`` has one row per prompt
that yielded no pair: ``prompt_id, prompt, reason, detail, num_candidates, num_distinct, rounds``.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from rcs_ray.sampling.schema import decode_prompt, reward_column

PAIRS_FILE = "pairs.parquet"
FAILED_FILE = "failed.parquet"
STATS_FILE = "stats.json"


def _chat_or_text(prompt, text: str):
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def _schema(fields: list[tuple[str, pa.DataType]], chat: bool, chat_fields: Sequence[str]) -> pa.Schema:
    return pa.schema([(name, MESSAGES if chat and name in chat_fields else typ) for name, typ in fields])


PAIRS_FIELDS = [("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
                ("prompt_id", pa.string()), ("chosen_rewards", pa.list_(pa.float64())),
                ("rejected_rewards", pa.list_(pa.float64())), ("target", pa.string()),
                ("chosen_source", pa.string()), ("rejected_source", pa.string()),
                ("num_candidates", pa.int64()), ("round", pa.int64())]
FAILED_FIELDS = [("prompt_id", pa.string()), ("prompt", pa.string()), ("reason", pa.string()),
                 ("detail", pa.string()), ("num_candidates", pa.int64()), ("num_distinct", pa.int64()),
                 ("rounds", pa.int64())]


class _ParquetSink:
    """Buffered rows -> one parquet file under a temporary name, renamed into place by :meth:`commit`."""

    def __init__(self, path: str, fields, chat_fields: Sequence[str], flush_rows: int = 4096):
        self.path = path
        self.tmp = f"{path}.tmp-{os.getpid()}"
        self.fields, self.chat_fields = fields, chat_fields
        self.writer: Optional[pq.ParquetWriter] = None
        self.buffer: list[dict] = []
        self.flush_rows = flush_rows
        self.chat = False
        self.rows = 0

    def write(self, row: dict) -> None:
        if self.rows == 0:
            self.chat = isinstance(row.get("prompt"), list)
        self.buffer.append(row)
        self.rows += 1
        if len(self.buffer) >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        schema = _schema(self.fields, self.chat, self.chat_fields)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, schema)
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=schema))
            self.buffer = []

    def commit(self) -> None:
        self._flush()
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


class OutputWriter:
    """Routes RC-filtered rows to the pairs / failed files and accumulates the run's statistics."""

    def __init__(self, out_dir: str, objectives: Sequence[str], target: str):
        os.makedirs(out_dir, exist_ok=True)
        for stale in glob.glob(os.path.join(out_dir, "*.tmp-*")):
            os.remove(stale)
        self.out_dir = out_dir
        self.objectives = list(objectives)
        self.target = target
        self.reward_cols = [reward_column(n) for n in self.objectives]
        self.pairs = _ParquetSink(os.path.join(out_dir, PAIRS_FILE), PAIRS_FIELDS, ("prompt", "chosen", "rejected"))
        self.failed = _ParquetSink(os.path.join(out_dir, FAILED_FILE), FAILED_FIELDS, ("prompt",))
        self.reasons: Counter = Counter()
        self.pair_sources: Counter = Counter()
        self.seconds: Counter = Counter()
        self.gaps: list[float] = []

    def account(self, row: dict) -> None:
        for key, value in row.items():
            if key.startswith("seconds__") and value:
                self.seconds[key[len("seconds__"):]] += value

    def write_pair(self, row: dict, round_index: int) -> None:
        prompt = decode_prompt(row["prompt_json"])
        w, l = row["chosen_index"], row["rejected_index"]
        rewards = [[row[c][i] for c in self.reward_cols] for i in (w, l)]
        t = self.objectives.index(self.target)
        self.gaps.append(rewards[0][t] - rewards[1][t])
        self.pair_sources[f"{row['sources'][w]}>{row['sources'][l]}"] += 1
        self.pairs.write({
            "prompt": prompt, "chosen": _chat_or_text(prompt, row["candidates"][w]),
            "rejected": _chat_or_text(prompt, row["candidates"][l]), "prompt_id": row["prompt_id"],
            "chosen_rewards": rewards[0], "rejected_rewards": rewards[1], "target": self.target,
            "chosen_source": row["sources"][w], "rejected_source": row["sources"][l],
            "num_candidates": len(row["candidates"]), "round": round_index})

    def write_failed(self, row: dict, rounds: int) -> None:
        reason = row["failure_reason"]
        self.reasons[reason] += 1
        prompt = decode_prompt(row["prompt_json"])
        candidates = row.get("candidates") or []
        self.failed.write({
            "prompt_id": row["prompt_id"], "prompt": prompt, "reason": reason, "detail": row.get("error"),
            "num_candidates": len(candidates), "num_distinct": len(set(candidates)), "rounds": rounds})

    def commit(self, stats: dict) -> dict:
        """Rename the files into place and write ``stats.json``; returns the full stats."""
        self.pairs.commit()
        self.failed.commit()
        total = self.pairs.rows + self.failed.rows
        full = {
            "objectives": self.objectives, "target": self.target, "prompts": total, "pairs": self.pairs.rows,
            "failed": self.failed.rows, "failure_rate": self.failed.rows / total if total else 0.0,
            "failed_by_reason": dict(sorted(self.reasons.items())), "pair_sources": dict(self.pair_sources),
            "mean_target_gap": sum(self.gaps) / len(self.gaps) if self.gaps else None,
            "actor_seconds_by_stage": {k: round(v, 3) for k, v in sorted(self.seconds.items())},
            **stats,
        }
        tmp = os.path.join(self.out_dir, f"{STATS_FILE}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(full, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, os.path.join(self.out_dir, STATS_FILE))
        return full

    def abort(self) -> None:
        self.pairs.abort()
        self.failed.abort()
