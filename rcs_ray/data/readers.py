"""Read preference pairs and prompt lists into canonical rows (see :mod:`rcs_ray.data.canonical`).

``read_preferences(cfg)`` reads pairs (prompt, chosen, rejected, optional per-objective scores);
``read_prompts(cfg)`` reads prompt lists, keeping chosen/rejected where the data has them. Both take a
:class:`~rcs_ray.config.DataConfig`: the path and format, a preset (:mod:`rcs_ray.data.presets`) or a column
map for generic data, ``limit`` and ``on_bad_row``. Local files and URIs are read by :mod:`rcs_ray.data.file_rows`; a
Hub dataset (``hf://org/name``, or a bare ``org/name`` that is not a local path) by ``datasets.load_dataset`` with
``config_name``, ``split`` and ``data_files`` (:mod:`rcs_ray.data.hub_tables`).

Generic data has the canonical columns (renamed through ``cfg.columns``): ``prompt``, ``chosen``, ``rejected``,
optional ``prompt_id`` and ``chosen_scores``/``rejected_scores`` (lists of K numbers, named by
``cfg.score_names``, else ``objective_0..K-1``). ``cfg.objective`` is used by presets only
(see :func:`~rcs_ray.data.presets.default_objective`); ``cfg.score_names`` by generic data only.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Sequence

from rcs_ray.config import DataConfig
from rcs_ray.data.canonical import (
    CANONICAL_COLUMNS,
    BadRowPolicy,
    ColumnMap,
    PreferenceData,
    assign_prompt_ids,
    check_pair,
    check_scores,
    check_text,
)
from rcs_ray.data.file_rows import Record, iter_records
from rcs_ray.data.hub_tables import hub_records, is_hub_dataset
from rcs_ray.data.presets import RowConverter, make_preset, one_row_each
from rcs_ray.errors import RcsInputError
from rcs_ray.storage import hub

_PAIR = ("chosen", "rejected")
_SCORES = ("chosen_scores", "rejected_scores")


def read_preferences(cfg: DataConfig) -> PreferenceData:
    """Read preference pairs.

    Args:
        cfg: where and how to read (path, format, preset or columns, split, limit, on_bad_row).

    Returns:
        Canonical rows, each with ``prompt_id, prompt, chosen, rejected`` (+ ``chosen_scores, rejected_scores``
        when the data has scores, K floats aligned with ``objectives``); at most ``cfg.limit`` rows.

    Raises:
        RcsInputError: one line naming file, row and field: a missing file or column, a malformed row (unless
            ``on_bad_row="skip"``, which counts it in ``skipped``), or no rows at all.
    """
    return _read(cfg, pairs=True)


def read_prompts(cfg: DataConfig) -> PreferenceData:
    """Read a prompt list; chosen/rejected (and scores) are kept where the data has them.

    Generic data needs only a ``prompt`` column; a row whose chosen and rejected are both null has no pair.
    Presets give their pairs (HelpSteer2: one row per prompt, with its largest-gap pair when not all tied).

    Args:
        cfg: as for :func:`read_preferences`.

    Returns:
        Canonical rows with ``prompt_id, prompt`` and, where present, ``chosen, rejected`` (+ scores).

    Raises:
        RcsInputError: as for :func:`read_preferences`.
    """
    return _read(cfg, pairs=False)


def _read(cfg: DataConfig, pairs: bool) -> PreferenceData:
    if cfg.limit is not None and cfg.limit < 1:
        raise RcsInputError(f"{cfg.path}: limit must be >= 1, got {cfg.limit}")
    policy = BadRowPolicy(cfg.on_bad_row)
    if cfg.preset is not None and cfg.score_names is not None:
        raise RcsInputError(f"score_names: only for generic data; preset {cfg.preset} names its own objectives")
    converter: RowConverter = make_preset(cfg) if cfg.preset is not None else GenericRows(cfg)
    records = _records(cfg, policy)
    rows: List[dict] = []
    for row in converter.convert(records, policy, pairs):
        rows.append(row)
        if cfg.limit is not None and len(rows) >= cfg.limit:
            break
    if not rows:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(policy.skipped.items()))
        raise RcsInputError(f"{cfg.path}: no rows" + (f" left (skipped: {skipped})" if skipped else ""))
    assign_prompt_ids(rows)
    rows = [_ordered(row) for row in rows]
    objectives = converter.objectives if any("chosen_scores" in row for row in rows) else []
    return PreferenceData(rows=rows, objectives=objectives, source=cfg.path, skipped=dict(policy.skipped))


def _records(cfg: DataConfig, policy: BadRowPolicy) -> Iterator[Record]:
    """The raw rows of ``cfg``: a Hub dataset (``hf://org/name``, a bare ``org/name`` that is not a local path, or
    its resolved snapshot) through ``datasets.load_dataset`` (:mod:`rcs_ray.data.hub_tables`); local files and
    URIs through :mod:`rcs_ray.data.file_rows`."""
    if hub.is_hf(cfg.path) or hub.is_hub_id(cfg.path):
        from rcs_ray.user_paths import resolve_data

        cfg = resolve_data(cfg)
    if is_hub_dataset(cfg.path):
        return hub_records(cfg)
    given = [name for name in ("config_name", "data_files") if getattr(cfg, name) is not None]
    if given:
        raise RcsInputError(f"{cfg.path}: {given[0]} is only for a Hub dataset (hf://org/name[@revision])")
    return iter_records(cfg.path, cfg.format, cfg.split, policy)


def _ordered(row: dict) -> dict:
    """The row with its keys in canonical order (``prompt_id`` first)."""
    return {k: row[k] for k in CANONICAL_COLUMNS if k in row}


class GenericRows:
    """Canonical columns, renamed through ``cfg.columns``; per-objective scores as list columns.

    Which optional columns (``prompt_id``, the pair for prompt lists, the scores) a dataset has is decided by
    its first file; later files must have the same. A column named in ``cfg.columns`` (or scores when
    ``cfg.score_names`` is given) is required.

    Args:
        cfg: the data config (``columns``, ``score_names``).
    """

    def __init__(self, cfg: DataConfig):
        self.cols = ColumnMap(CANONICAL_COLUMNS, cfg.columns, "canonical")
        self.names = list(cfg.score_names) if cfg.score_names is not None else None
        if self.names is not None and not self.names:
            raise RcsInputError("score_names: needs at least one name")
        self.k: Optional[int] = len(self.names) if self.names is not None else None
        self.used: Optional[List[str]] = None

    @property
    def objectives(self) -> List[str]:
        """The score names: ``cfg.score_names``, else ``objective_0..K-1`` (``[]`` before any scores)."""
        if self.names is not None:
            return list(self.names)
        return [f"objective_{i}" for i in range(self.k or 0)]

    def convert(self, records: Iterable[Record], policy: BadRowPolicy, pairs: bool) -> Iterator[dict]:
        """Yield canonical rows; ``pairs=False`` makes chosen/rejected optional."""

        def check(rec: Record) -> None:
            if self.used is None:
                self.used = self._columns(rec.columns, pairs)
            self.cols.require(rec.file, rec.columns, self.used)

        return one_row_each(records, policy, check, lambda data: self._row(data, pairs))

    def _columns(self, columns: Sequence[str], pairs: bool) -> List[str]:
        """The canonical columns to read, given the first file's columns."""

        def wanted(names: Sequence[str]) -> bool:
            return any(self.cols.has(columns, n) or n in self.cols.explicit for n in names)

        used = ["prompt"]
        if wanted(["prompt_id"]):
            used.append("prompt_id")
        if pairs or wanted(_PAIR):
            used += _PAIR
            if self.names is not None or wanted(_SCORES):
                used += _SCORES
        return used

    def _row(self, data: dict, pairs: bool) -> dict:
        c, used = self.cols, self.used
        prompt = check_text(data.get(c["prompt"]), c["prompt"], "prompt")
        row = {"prompt": prompt}
        if "prompt_id" in used and data.get(c["prompt_id"]) not in (None, ""):
            row["prompt_id"] = str(data[c["prompt_id"]])
        if "chosen" not in used or (not pairs and all(data.get(c[n]) is None for n in _PAIR)):
            return row
        row["chosen"] = check_text(data.get(c["chosen"]), c["chosen"], "chosen")
        row["rejected"] = check_text(data.get(c["rejected"]), c["rejected"], "rejected")
        check_pair(prompt, row["chosen"], row["rejected"], (c["prompt"], c["chosen"], c["rejected"]))
        if "chosen_scores" in used:
            chosen = check_scores(data.get(c["chosen_scores"]), c["chosen_scores"], self.k)
            rejected = check_scores(data.get(c["rejected_scores"]), c["rejected_scores"], len(chosen))
            self.k = len(chosen)
            row["chosen_scores"], row["rejected_scores"] = chosen, rejected
        return row
