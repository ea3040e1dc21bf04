"""The canonical preference row, its validation, and the policy for bad rows.

A canonical row is a dict with

- ``prompt_id: str`` -- unique within a dataset (see :func:`assign_prompt_ids`);
- ``prompt: str | list[message]`` -- a plain string, or the chat messages before the answer;
- ``chosen``, ``rejected: str | list[message]`` -- a plain string, or the assistant message list
  (TRL's conversational convention); optional for prompt lists;
- ``chosen_scores``, ``rejected_scores: list[float]`` -- optional, K finite floats aligned with
  :attr:`PreferenceData.objectives`.

A message is ``{"role": str, "content": str}``. Validators raise :class:`BadRow`, a per-row problem with a
short reason key; :class:`BadRowPolicy` turns it into a one-line :class:`~rcs_ray.errors.RcsInputError` that
names file, row and field, or counts it as skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, TypeVar, Union

from rcs_ray.errors import RcsInputError

Message = Dict[str, str]
Text = Union[str, List[Message]]
T = TypeVar("T")

CANONICAL_COLUMNS = ("prompt_id", "prompt", "chosen", "rejected", "chosen_scores", "rejected_scores")
BAD_ROW_MODES = ("error", "skip")


@dataclass
class PreferenceData:
    """Canonical rows read from one source.

    Attributes:
        rows: canonical rows (see the module docstring), in file order.
        objectives: names of the K per-objective scores carried by the rows; ``[]`` when the rows carry none.
        source: the path read.
        skipped: reason -> number of rows skipped (``on_bad_row="skip"``, and HelpSteer2 ties); ``{}`` if none.
    """

    rows: List[dict]
    objectives: List[str]
    source: str
    skipped: Dict[str, int] = field(default_factory=dict)


class BadRow(Exception):
    """A problem confined to one row (the caller knows which row and decides: fail or skip).

    Args:
        reason: short key for the skip counts, e.g. ``"empty_prompt"``.
        message: what is wrong, e.g. ``"empty prompt"``.
        field: the column at fault, as named in the file; ``None`` when the whole row is at fault.
    """

    def __init__(self, reason: str, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field

    def describe(self) -> str:
        """``field 'x': message``, or just the message when no field is at fault."""
        return f"field '{self.field}': {self.message}" if self.field else self.message


class BadRowPolicy:
    """Applies ``on_bad_row``: raise a one-line RcsInputError, or count the row as skipped.

    Args:
        mode: ``"error"`` or ``"skip"``.
    """

    def __init__(self, mode: str = "error"):
        if mode not in BAD_ROW_MODES:
            raise RcsInputError(f"on_bad_row: {mode!r} is not one of {list(BAD_ROW_MODES)}")
        self.mode = mode
        self.skipped: Dict[str, int] = {}

    def handle(self, where: str, problem: BadRow) -> None:
        """Fail on ``problem`` found at ``where`` (``"data.jsonl:3"``), or count it when skipping."""
        if self.mode == "error":
            raise RcsInputError(f"{where}: {problem.describe()}")
        self.count(problem.reason)

    def count(self, reason: str) -> None:
        """Count one skipped row under ``reason`` (also for rows that are skipped in either mode)."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def attempt(self, where: str, convert: Callable[..., T], *args: Any) -> Optional[T]:
        """``convert(*args)``, or ``None`` when it raised :class:`BadRow` and the row is skipped."""
        try:
            return convert(*args)
        except BadRow as problem:
            self.handle(where, problem)
            return None


def _is_blank(text: Text) -> bool:
    if isinstance(text, str):
        return not text.strip()
    return not text or all(not m["content"].strip() for m in text)


def check_text(value: Any, field: str, what: str) -> Text:
    """Validate a prompt or response: a non-blank string, or a non-empty list of messages.

    Args:
        value: the cell as read.
        field: the file's column name, for messages.
        what: ``"prompt"``, ``"chosen"`` or ``"rejected"``: names the empty-value reason (``empty_chosen``).

    Returns:
        The string unchanged, or the messages as ``{"role", "content"}`` dicts (other keys dropped).

    Raises:
        BadRow: null, wrong type, a message without role/content, or blank.
    """
    if value is None:
        raise BadRow("missing_value", "missing value", field)
    if isinstance(value, str):
        text: Text = value
    elif isinstance(value, (list, tuple)):
        text = [check_message(m, field, i) for i, m in enumerate(value, start=1)]
    else:
        raise BadRow("bad_type", f"expected a string or a list of messages, got {type(value).__name__}", field)
    if _is_blank(text):
        raise BadRow(f"empty_{what}", f"empty {what}", field)
    return text


def check_message(value: Any, field: str, index: int) -> Message:
    """Validate one chat message (``index`` is 1-based, for the error message)."""
    if not isinstance(value, dict):
        raise BadRow("bad_message", f"message {index} is not a mapping", field)
    for key in ("role", "content"):
        if not isinstance(value.get(key), str):
            problem = "has no" if value.get(key) is None else "has a non-string"
            raise BadRow("bad_message", f"message {index} {problem} '{key}'", field)
    return {"role": value["role"], "content": value["content"]}


def check_scores(value: Any, field: str, k: Optional[int]) -> List[float]:
    """Validate a per-objective score list.

    Args:
        value: the cell as read: a list of numbers.
        field: the file's column name, for messages.
        k: the expected length K, or ``None`` to accept any non-empty length.

    Returns:
        The scores as floats, shape (K,).

    Raises:
        BadRow: null, not a list of numbers, NaN/inf, or the wrong length.
    """
    if value is None:
        raise BadRow("missing_value", "missing value", field)
    if not isinstance(value, (list, tuple)) or not value:
        raise BadRow("bad_score", "expected a non-empty list of numbers", field)
    scores = [check_score(v, field) for v in value]
    if k is not None and len(scores) != k:
        raise BadRow("wrong_num_scores", f"expected {k} scores, got {len(scores)}", field)
    return scores


def check_score(value: Any, field: str) -> float:
    """One finite number as a float. Raises BadRow on null, a non-number (bools included) or NaN/inf."""
    if value is None:
        raise BadRow("missing_value", "missing value", field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRow("bad_score", f"expected a number, got {value!r}", field)
    if not math.isfinite(value):
        raise BadRow("nan_score", f"score is {value} (must be finite)", field)
    return float(value)


def check_pair(prompt: Text, chosen: Text, rejected: Text, fields: tuple) -> None:
    """Check that a pair is consistent: one format throughout, and chosen differs from rejected.

    Args:
        prompt, chosen, rejected: validated values (see :func:`check_text`).
        fields: the file's column names of (prompt, chosen, rejected), for messages.

    Raises:
        BadRow: ``mixed_formats`` (strings mixed with message lists) or ``identical_pair``.
    """
    kinds = {name: isinstance(v, str) for name, v in zip(fields, (prompt, chosen, rejected))}
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"{n} is {'a string' if s else 'chat'}" for n, s in kinds.items())
        raise BadRow("mixed_formats", f"strings mixed with chat messages ({desc})")
    if chosen == rejected:
        raise BadRow("identical_pair", f"chosen ('{fields[1]}') and rejected are identical", fields[2])


def prompt_hash(prompt: Text) -> str:
    """First 12 hex digits of sha1 of ``json.dumps(prompt, sort_keys=True)``: a stable id for a prompt."""
    return hashlib.sha1(json.dumps(prompt, sort_keys=True).encode("utf-8")).hexdigest()[:12]


def assign_prompt_ids(rows: Iterable[dict]) -> None:
    """Give every row a unique ``prompt_id``, in place, in row order.

    A row's base id is its ``prompt_id`` when present and non-empty (as a string), else :func:`prompt_hash` of
    its prompt. The first row with a base id keeps it; later ones get ``-1``, ``-2``, ... (skipping any id
    already taken), so ids are unique and stable for a given file order.
    """
    used: set = set()
    repeats: Dict[str, int] = {}
    for row in rows:
        given = row.get("prompt_id")
        base = str(given) if given not in (None, "") else prompt_hash(row["prompt"])
        pid = base
        while pid in used:
            repeats[base] = repeats.get(base, 0) + 1
            pid = f"{base}-{repeats[base]}"
        used.add(pid)
        row["prompt_id"] = pid


class ColumnMap:
    """Maps the names a reader expects (canonical or a preset's) to the file's column names.

    Args:
        names: the names the reader knows, e.g. :data:`CANONICAL_COLUMNS`.
        mapping: ``DataConfig.columns``: name -> the file's column; unmapped names map to themselves.
        what: describes ``names`` in errors, e.g. ``"canonical"`` or ``"pku_saferlhf"``.

    Raises:
        RcsInputError: ``mapping`` has a key that is not in ``names``.
    """

    def __init__(self, names: Sequence[str], mapping: Optional[Dict[str, str]], what: str):
        mapping = dict(mapping or {})
        unknown = [k for k in mapping if k not in names]
        if unknown:
            raise RcsInputError(f"columns: unknown name {unknown[0]!r}; {what} column names are: {', '.join(names)}")
        self.explicit = frozenset(mapping)
        self._map = {name: str(mapping.get(name, name)) for name in names}

    def __getitem__(self, name: str) -> str:
        return self._map[name]

    def has(self, columns: Sequence[str], name: str) -> bool:
        """Whether the file with ``columns`` has the column for ``name``."""
        return self._map[name] in columns

    def checker(self, names: Sequence[str]) -> Callable[[Any], None]:
        """A per-file check for :func:`~rcs_ray.data.file_rows.check_each_file`: ``names`` must be columns."""
        return lambda record: self.require(record.file, record.columns, names)

    def require(self, file: str, columns: Sequence[str], names: Iterable[str]) -> None:
        """Fail unless the file has a column for each of ``names`` (a missing column is always fatal).

        Raises:
            RcsInputError: ``data.parquet: missing column 'chosen' (columns: a, b, c)``.
        """
        for name in names:
            col = self._map[name]
            if col not in columns:
                mapped = f" (mapped from '{name}')" if col != name else ""
                listed = ", ".join(str(c) for c in columns) or "none"
                raise RcsInputError(f"{file}: missing column '{col}'{mapped} (columns: {listed})")
