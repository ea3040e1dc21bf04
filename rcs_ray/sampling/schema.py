"""The prompt-group row that travels through the sampling pipeline, and small helpers on it.

One row = one prompt group (no groupby, no shuffle anywhere):

==========================  =====================  ==========================================================
column                      type                   meaning
==========================  =====================  ==========================================================
``prompt_id``               string                 unique id from the reader
``prompt_json``             string                 the prompt as JSON (a string or a chat-message list)
``original_chosen``         string | null          the dataset's chosen response text, if any
``original_rejected``       string | null          the dataset's rejected response text, if any
``candidates``              list<string>           candidate responses (originals first, then samples)
``sources``                 list<string>           "original_chosen" | "original_rejected" | "sampled"
``generated_tokens``        int64                  tokens generated for this group (all rounds)
``error``                   string | null          a per-prompt failure (prompt too long, engine error)
``reward__<objective>``     list<double>           one score per candidate, per objective (scorer stages)
``seconds__<stage>``        double                 actor-seconds spent on this row by a stage (for stats)
==========================  =====================  ==========================================================
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

import pyarrow as pa

ORIGINAL_CHOSEN = "original_chosen"
ORIGINAL_REJECTED = "original_rejected"
SAMPLED = "sampled"


def reward_column(objective: str) -> str:
    return f"reward__{objective}"


def seconds_column(stage: str) -> str:
    return f"seconds__{stage}"


def encode_prompt(prompt: Any) -> str:
    return json.dumps(prompt, ensure_ascii=False)


def decode_prompt(prompt_json: str) -> Any:
    return json.loads(prompt_json)


def response_text(response: Any) -> str | None:
    """A response as text: strings as they are, chat lists as their (last) assistant message's content."""
    if response is None or isinstance(response, str):
        return response
    if isinstance(response, dict):
        return response.get("content")
    if isinstance(response, list) and response:
        return response[-1].get("content") if isinstance(response[-1], dict) else None
    return None


def sample_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    """A 31-bit seed for sample ``sample_index`` of a prompt: independent of batch size, actor count, prompt order
    and resampling round (adaptive resampling's first m samples are those of a fixed run with n = m)."""
    digest = hashlib.sha256(f"{seed}\x1f{prompt_id}\x1f{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


COLUMN_TYPES = {
    "prompt_id": pa.string(), "prompt_json": pa.string(), "original_chosen": pa.string(),
    "original_rejected": pa.string(), "candidates": pa.list_(pa.string()), "sources": pa.list_(pa.string()),
    "generated_tokens": pa.int64(), "error": pa.string(), "chosen_index": pa.int64(), "rejected_index": pa.int64(),
    "failure_reason": pa.string(), "rounds": pa.int64(),
}


def arrow_type(column: str) -> pa.DataType:
    if column.startswith("reward__"):
        return pa.list_(pa.float64())
    if column.startswith("seconds__"):
        return pa.float64()
    try:
        return COLUMN_TYPES[column]
    except KeyError:
        raise KeyError(f"unknown pipeline column {column!r}") from None


def rows_to_table(rows: list[dict], columns: Sequence[str] | None = None):
    """A pyarrow table of pipeline rows with the schema's types (so all-null batches keep their type)."""
    names = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    return pa.table({c: pa.array([r.get(c) for r in rows], type=arrow_type(c)) for c in names})
