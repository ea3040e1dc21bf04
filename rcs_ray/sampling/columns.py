"""Columnar helpers over Arrow prompt-group batches, shared by the stages and the writer.

A prompt group's candidates, sources and rewards are list columns; these helpers read and build them through their
flat values and offsets (numpy index arithmetic), so no batch is turned into Python rows on the hot path.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rcs_ray.data.pairs import MESSAGES, seconds_column


def lengths(column) -> np.ndarray:
    """Per-row lengths of a list column (0 for a null list)."""
    return pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)


def begins(counts: np.ndarray) -> np.ndarray:
    """Where each of consecutive runs of ``counts`` elements begins (the exclusive cumulative sum)."""
    return (
        np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else np.zeros(0, dtype=np.int64)
    )


def positions(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every element of consecutive runs of ``counts`` elements: its run, and its place within the run."""
    run = np.repeat(np.arange(len(counts)), counts)
    return run, np.arange(run.size) - begins(counts)[run]


def starts(column) -> np.ndarray:
    """Where each row's elements begin in ``pc.list_flatten(column)``."""
    return begins(lengths(column))


def flat(column) -> np.ndarray:
    """The flat values of a numeric list column as float64."""
    return pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float64)


def pick(column, rows: np.ndarray, index: np.ndarray):
    """Element ``index[j]`` of row ``rows[j]`` of a list column, for every j (one array)."""
    return pc.list_flatten(column).take(pa.array(starts(column)[rows] + index, pa.int64()))


def offsets_of(counts: np.ndarray) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32), pa.int32())


def rows_of(values: np.ndarray, width: int, type: Optional[pa.DataType] = None) -> pa.ListArray:
    """An (n, width) array as n lists of ``width`` values (float64 unless ``type`` is given)."""
    flat = pa.array(values.reshape(-1), type or pa.float64())
    return pa.ListArray.from_arrays(offsets_of(np.full(values.shape[0], width)), flat)


def append_lists(column, new: Sequence[list], type: pa.DataType) -> pa.ListArray:
    """Each row's list (null: empty) followed by ``new[row]``: the old flat values and the new ones interleaved by
    index, never row by row."""
    n = len(new)
    old_len = lengths(column) if column is not None else np.zeros(n, dtype=np.int64)
    new_len = np.fromiter((len(x) for x in new), dtype=np.int64, count=n)
    old_values = pc.list_flatten(column) if column is not None else pa.array([], type.value_type)
    if isinstance(old_values, pa.ChunkedArray):
        old_values = old_values.combine_chunks()
    values = pa.concat_arrays(
        [old_values.cast(type.value_type), pa.array([x for row in new for x in row], type.value_type)]
    )
    total = old_len + new_len
    parent, at = positions(total)
    is_old = at < old_len[parent]
    src = np.where(
        is_old, begins(old_len)[parent] + at, len(old_values) + begins(new_len)[parent] + at - old_len[parent]
    )
    return pa.ListArray.from_arrays(offsets_of(total), values.take(pa.array(src, pa.int64())))


def no_null_lists(table: pa.Table, name: str, type: pa.DataType) -> pa.Array:
    """Column ``name`` of ``table`` with null lists as empty ones (all empty if the column is absent)."""
    if name not in table.column_names:
        return pa.ListArray.from_arrays(
            offsets_of(np.zeros(table.num_rows, dtype=np.int64)), pa.array([], type.value_type)
        )
    column = table.column(name).combine_chunks()
    if column.null_count == 0:
        return column
    values = pc.list_flatten(column)
    return pa.ListArray.from_arrays(offsets_of(lengths(column)), values.cast(type.value_type))


def messages(texts, role: str) -> pa.ListArray:
    """Each text as a one-message chat list ``[{"role": role, "content": text}]`` (TRL's conversational form, the
    :data:`~rcs_ray.data.pairs.MESSAGES` type): how a plain prompt or a response goes into a chat pairs file."""
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    structs = pa.StructArray.from_arrays(
        [pa.array([role] * len(texts), pa.string()), texts.cast(pa.string())], fields=list(MESSAGES.value_type)
    )
    return pa.ListArray.from_arrays(offsets_of(np.ones(len(texts), dtype=np.int64)), structs)


def with_system(prompts, system) -> pa.Array:
    """Chat prompts (the :data:`~rcs_ray.data.pairs.MESSAGES` type) with a ``system`` message first in each that does
    not start with one, as the prompt rule reads them (:func:`rcs_ray.prompting.as_chat`): how a system prompt goes
    into a conversational pairs file. ``None``: the prompts as they are."""
    prompts = prompts.combine_chunks() if isinstance(prompts, pa.ChunkedArray) else prompts
    if system is None:
        return prompts
    old_len = lengths(prompts)
    values = pc.list_flatten(prompts).cast(MESSAGES.value_type)
    own = np.zeros(len(old_len), dtype=bool)
    some = np.flatnonzero(old_len > 0)
    first_roles = values.field("role").take(pa.array(begins(old_len)[some], pa.int64()))
    own[some] = pc.fill_null(pc.equal(first_roles, "system"), False).to_numpy(zero_copy_only=False)
    add = (~own).astype(np.int64)
    parent, at = positions(old_len + add)
    src = np.where(at < add[parent], len(values), begins(old_len)[parent] + at - add[parent])
    extra = pa.array([{"role": "system", "content": system}], MESSAGES.value_type)
    return pa.ListArray.from_arrays(
        offsets_of(old_len + add), pa.concat_arrays([values, extra]).take(pa.array(src, pa.int64()))
    )


def column_sum(table: pa.Table, name: str) -> float:
    """The sum of a numeric column (0 if absent or all null)."""
    return (pc.sum(table.column(name)).as_py() or 0) if name in table.column_names else 0


def put(table: pa.Table, name: str, values) -> pa.Table:
    """``table`` with column ``name`` set to ``values`` (replaced in place, or appended)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def add_seconds(table: pa.Table, stage: str, start: float) -> pa.Table:
    """``table`` with the time since ``start`` shared out over its rows, added to their ``seconds__<stage>``."""
    return share_seconds(table, stage, time.perf_counter() - start)


def share_seconds(table: pa.Table, stage: str, seconds: float) -> pa.Table:
    """``table`` with ``seconds`` shared out over its rows, added to their ``seconds__<stage>``."""
    col = seconds_column(stage)
    spent = np.full(table.num_rows, seconds / max(1, table.num_rows))
    if col in table.column_names:
        spent += table.column(col).fill_null(0.0).to_numpy(zero_copy_only=False)
    return put(table, col, pa.array(spent, pa.float64()))
