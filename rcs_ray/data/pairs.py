"""Preference pairs and prompt groups as Arrow tables: the one home of their types, their files and their checks.

A dataset is plain or chat throughout. Plain: prompt, chosen and rejected are strings. Chat: each is
:data:`MESSAGES`, ``list<struct<role: string, content: string>>`` -- the prompt's messages, and each response as
TRL's conversational ``[{"role": "assistant", "content": ...}]``. Prompts stay Arrow values from the reader to the
trainer (no JSON round trips).

**Prompt group** (one row per prompt through the sampling pipeline; :func:`group_table`):

==========================  =====================  ==========================================================
column                      type                   meaning
==========================  =====================  ==========================================================
``prompt_id``               string                 unique id from the reader
``prompt``                  string | MESSAGES      the prompt
``original_chosen``         string | null          the dataset's chosen response text, if any
``original_rejected``       string | null          the dataset's rejected response text, if any
``candidates``              list<string>           candidate responses (originals first, then samples)
``sources``                 list<string>           ``original_chosen`` | ``original_rejected`` | ``sampled``
``generated_tokens``        int64                  tokens generated for this group (all rounds)
``candidate_tokens``        list<int64>            tokens of each candidate
``candidate_finished``      list<bool>             whether each ended (EOS / stop string), not cut at max_tokens
``truncated_samples``       int64                  samples of this group cut at max_tokens (all rounds)
``error``                   string | null          a per-prompt failure (prompt too long, engine error)
``chosen_index`` ...        int64                  the selected pair (RC filter); ``failure_reason`` otherwise
``reward__<objective>``     list<double>           one score per candidate, per objective (scorer stages)
``seconds__<stage>``        double                 actor-seconds spent on this row by a stage (for stats)
==========================  =====================  ==========================================================

The files a sampling step writes (pairs, failed, candidates) are :mod:`rcs_ray.data.sampling_files`.

**Training pairs** (:class:`PairSet`): from a pairs file (:func:`read_pairs`, parquet or JSON lines, validated with
the readers' checks of :mod:`rcs_ray.data.canonical`) or a stage's dataset (:func:`pairs_from_preferences`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

import pyarrow as pa

from rcs_ray.data.canonical import BadRow, Text, check_score, check_scores, check_text
from rcs_ray.errors import RcsInputError

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
TEXT_COLUMNS = ("prompt", "chosen", "rejected")
REWARD_COLUMNS = ("chosen_rewards", "rejected_rewards")
SCORE_COLUMNS = ("chosen_scores", "rejected_scores")  # a dataset's name for the same K numbers (docs/usage.md)
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
FINISHED_COLUMNS = ("chosen_finished", "rejected_finished")
METADATA_KEY = b"rcs_ray"  # schema metadata of the sampling files (rcs_ray.data.sampling_files)
_FLOATS = pa.list_(pa.float64())


def text_type(chat: bool) -> pa.DataType:
    """The Arrow type of a prompt or response: :data:`MESSAGES` for chat, ``string`` for plain."""
    return MESSAGES if chat else pa.string()


def is_chat(schema: pa.Schema, column: str = "prompt") -> bool:
    return schema.field(column).type == MESSAGES


def response_text(response: Any) -> Optional[str]:
    """A response as text: strings as they are, chat lists as their (last) assistant message's content."""
    if response is None or isinstance(response, str):
        return response
    if isinstance(response, dict):
        return response.get("content")
    if isinstance(response, (list, tuple)) and response:
        return response[-1].get("content") if isinstance(response[-1], dict) else None
    return None


def dataset_is_chat(prompts: Sequence[Text], source: str) -> bool:
    """Whether the prompts are chat; they must all be of one kind.

    Raises:
        RcsInputError: plain strings mixed with chat messages (naming the first row, 1-based, of the other kind).
    """
    chat = not isinstance(prompts[0], str) if prompts else False
    for i, p in enumerate(prompts, start=1):
        if (not isinstance(p, str)) != chat:
            kinds = ("chat messages", "a plain string") if chat else ("plain strings", "chat messages")
            raise RcsInputError(
                f"{source}: row {i}: the prompt is {kinds[1]} but the rows before it have "
                f"{kinds[0]}; a dataset is plain or chat throughout"
            )
    return chat


def file_metadata(schema: pa.Schema) -> dict:
    """``{"objectives": [...], "target": ..., ["selection": {...}]}`` recorded in a sampling file's schema (``{}``
    for other files)."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def require_columns(batch: pa.Table, columns: Sequence[str], stage: str) -> None:
    """A Ray Data stage's check of its input batch: every column it needs is there (else KeyError naming them)."""
    missing = [c for c in columns if c not in batch.column_names]
    if missing:
        raise KeyError(f"stage {stage}: input batch lacks column(s) {missing}; has {batch.column_names}")


# ----------------------------------------------------------------------------------------------- prompt groups
_GROUP_TYPES = {
    "prompt_id": pa.string(),
    "original_chosen": pa.string(),
    "original_rejected": pa.string(),
    "candidates": pa.list_(pa.string()),
    "sources": pa.list_(pa.string()),
    "generated_tokens": pa.int64(),
    "error": pa.string(),
    "chosen_index": pa.int64(),
    "rejected_index": pa.int64(),
    "failure_reason": pa.string(),
    "rounds": pa.int64(),
    "round": pa.int64(),
    "candidate_tokens": pa.list_(pa.int64()),
    "candidate_finished": pa.list_(pa.bool_()),
    "truncated_samples": pa.int64(),
    "generate_started": pa.float64(),
}  # wall clock (epoch s) its generation batch started: start-up vs steady


def reward_column(objective: str) -> str:
    return f"reward__{objective}"


def seconds_column(stage: str) -> str:
    return f"seconds__{stage}"


def group_type(column: str, chat: bool) -> pa.DataType:
    if column == "prompt":
        return text_type(chat)
    if column.startswith("reward__"):
        return _FLOATS
    if column.startswith("seconds__"):
        return pa.float64()
    try:
        return _GROUP_TYPES[column]
    except KeyError:
        raise KeyError(f"unknown prompt-group column {column!r}") from None


def group_table(rows: List[dict], chat: bool, columns: Optional[Sequence[str]] = None) -> pa.Table:
    """Prompt-group rows as a table with the schema's types (so all-null batches keep their type)."""
    names = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    return pa.table({c: pa.array([r.get(c) for r in rows], type=group_type(c, chat)) for c in names})


# ----------------------------------------------------------------------------------------------- training pairs
@dataclass
class PairSet:
    """Validated preference pairs for training.

    Attributes:
        rows: one dict per pair: ``prompt``, ``chosen``, ``rejected`` (strings, or message lists for a chat
            dataset), ``prompt_id`` when the file has one, ``chosen_finished`` / ``rejected_finished`` (False) for a
            side cut at the sampling token limit, plus ``chosen_rewards`` / ``rejected_rewards`` (K floats) when
            ``reward_names``, plus ``ref_chosen_logps`` / ``ref_rejected_logps`` (floats) when ``has_ref_logps``.
        reward_names: objective names of the K reward columns, ``[]`` when the pairs carry no rewards.
        target: the objective the pairs were selected for (their ``target`` column or the stage's objective).
        source: the path read (for messages).
        has_ref_logps: the pairs carry precomputed reference log-probs.
    """

    rows: List[dict]
    reward_names: List[str] = field(default_factory=list)
    target: Optional[str] = None
    source: str = ""
    has_ref_logps: bool = False

    @property
    def chat(self) -> bool:
        return bool(self.rows) and not isinstance(self.rows[0]["prompt"], str)

    def table(self, extra: Optional[Dict[str, pa.Array]] = None) -> pa.Table:
        """``index`` (int64), ``prompt``, ``chosen``, ``rejected`` with their Arrow types, ``chosen_finished`` /
        ``rejected_finished`` (bool; true unless the row says a side was cut), plus ``extra`` columns."""
        text = text_type(self.chat)
        cols = {"index": pa.array(range(len(self.rows)), type=pa.int64())}
        for key in TEXT_COLUMNS:
            cols[key] = pa.array([r[key] for r in self.rows], type=text)
        for key in FINISHED_COLUMNS:
            cols[key] = pa.array([r.get(key, True) for r in self.rows], type=pa.bool_())
        cols.update(extra or {})
        return pa.table(cols)


def _fail(path: str, row: int, problem: BadRow) -> RcsInputError:
    return RcsInputError(f"{path}: row {row}: {problem.describe()}")


def _read_rows(path: str) -> tuple:
    """(rows, schema metadata) of a parquet file / directory or a JSON lines file (:mod:`rcs_ray.data.file_rows`'s
    readers: one-line errors naming the file and the line)."""
    from rcs_ray import storage
    from rcs_ray.data.file_rows import read_parquet, read_table

    if not storage.exists(path):
        raise RcsInputError(f"pairs file not found: {path}")
    if path.split("?", 1)[0].endswith(".parquet") or storage.isdir(path):
        table = read_parquet(path)
        return table.to_pylist(), file_metadata(table.schema)
    return read_table(path, format="jsonl"), {}


def _check_text(value: Any, column: str, sampled: bool) -> Text:
    """A prompt or response of a pairs row. A response in a file the pipeline wrote (``sampled``) may be empty (a
    policy that ends at once sampled it); a dataset's empty response, and any empty prompt, is bad input."""
    try:
        return check_text(value, column, column)
    except BadRow as problem:
        if sampled and column != "prompt" and problem.reason == f"empty_{column}":
            return value if isinstance(value, str) else [dict(role=m["role"], content=m["content"]) for m in value]
        raise


def _check_rows(path: str, rows: List[dict], has_ref: bool, rewards: Sequence[str], sampled: bool) -> List[dict]:
    """Checked rows; ``rewards``: the file's two reward columns (read into :data:`REWARD_COLUMNS`), or none."""
    out, k = [], None
    for i, r in enumerate(rows, start=1):
        try:
            row = {c: _check_text(r.get(c), c, sampled) for c in TEXT_COLUMNS}
            if has_ref:
                for c in REF_COLUMNS:
                    row[c] = check_score(r.get(c), c)
            for c, read in zip(REWARD_COLUMNS, rewards):
                row[c] = check_scores(r.get(read), read, k)
                k = len(row[c])
        except BadRow as problem:
            raise _fail(path, i, problem) from None
        if r.get("prompt_id") not in (None, ""):
            row["prompt_id"] = str(r["prompt_id"])
        for c in FINISHED_COLUMNS:  # a side cut at the sampling token limit (pipeline files)
            if r.get(c) is False:
                row[c] = False
        out.append(row)
    return out


def read_pairs(path: str, reward_names: Optional[Sequence[str]] = None, target: Optional[str] = None) -> PairSet:
    """Read and validate a pairs file (parquet, or JSON lines).

    Args:
        path: the file (the sampling pipeline's ``pairs.parquet`` or any file with the columns below).
        reward_names: names of the K reward columns; default: the file's metadata, else ``objective_0..K-1``.
        target: the trained objective when the file names none (no ``target`` column or metadata).

    Returns:
        :class:`PairSet` in file order: ``prompt, chosen, rejected`` are required; ``chosen_rewards,
        rejected_rewards`` (or, as a dataset names them, ``chosen_scores, rejected_scores``), ``target`` and the
        precomputed reference log-probs ``ref_chosen_logps, ref_rejected_logps`` are optional (with the reference
        columns present the reference model never runs).

    Raises:
        RcsInputError: a missing file or column, an empty file, a text that is not a string or message list, an empty
            prompt or (but in the pipeline's own files) response, reward
            lists of a wrong length or with NaN / inf, a NaN / inf reference log-prob, more than one target, plain
            and chat rows mixed.
    """
    rows, meta = _read_rows(path)
    if not rows:
        raise RcsInputError(f"{path}: no pairs")
    columns = set(rows[0])
    missing = [c for c in TEXT_COLUMNS if c not in columns]
    if missing:
        raise RcsInputError(
            f"{path}: missing column(s) {missing}; a pairs file needs {list(TEXT_COLUMNS)} (has {sorted(columns)})"
        )
    rewards = next((g for g in (REWARD_COLUMNS, SCORE_COLUMNS) if any(c in columns for c in g)), ())
    for group in (REF_COLUMNS, rewards):
        present = [c for c in group if c in columns]
        if len(present) == 1:
            other = group[1 - group.index(present[0])]
            raise RcsInputError(f"{path}: column {present[0]!r} without {other!r}")
    targets = {r.get("target") for r in rows} - {None}
    if len(targets) > 1:
        raise RcsInputError(f"{path}: column 'target' holds several objectives {sorted(targets)}; train one at a time")
    has_ref = REF_COLUMNS[0] in columns
    out = _check_rows(path, rows, has_ref, rewards, sampled=bool(meta))
    dataset_is_chat([r["prompt"] for r in out], path)
    names: List[str] = []
    if rewards:
        k = len(out[0]["chosen_rewards"])
        names = list(reward_names or meta.get("objectives") or [f"objective_{j}" for j in range(k)])
        if len(names) != k:
            raise RcsInputError(f"{path}: reward lists hold {k} objectives but {len(names)} names are known {names}")
    return PairSet(
        rows=out,
        reward_names=names,
        target=next(iter(targets), None) or meta.get("target") or target,
        source=path,
        has_ref_logps=has_ref,
    )


def pairs_from_preferences(
    rows: Iterable[dict], objectives: Sequence[str], source: str, target: Optional[str] = None
) -> PairSet:
    """Canonical preference rows (:func:`rcs_ray.data.read_preferences`) as training pairs; their per-objective
    scores become the reward columns."""
    out = []
    for r in rows:
        row = {c: r[c] for c in TEXT_COLUMNS}
        if objectives:
            row["chosen_rewards"] = [float(x) for x in r["chosen_scores"]]
            row["rejected_rewards"] = [float(x) for x in r["rejected_scores"]]
        out.append(row)
    dataset_is_chat([r["prompt"] for r in out], source)
    return PairSet(rows=out, reward_names=list(objectives), target=target, source=source)


def suspicious(pairs: PairSet) -> dict:
    """Counts of rows that usually mean broken data: ``duplicate_pairs`` (a prompt id with a chosen and rejected
    seen before: several pairs of one prompt are fine, as ``rs_dpo`` writes them, the same pair twice is not) and
    ``identical_pairs`` (chosen equal to rejected: the loss cannot move from ln 2)."""
    seen, dups, same = set(), 0, 0
    for r in pairs.rows:
        pid = r.get("prompt_id")
        if pid is not None:
            key = (pid, str(r["chosen"]), str(r["rejected"]))
            dups += key in seen
            seen.add(key)
        same += r["chosen"] == r["rejected"]
    return {"duplicate_pairs": dups, "identical_pairs": same}
