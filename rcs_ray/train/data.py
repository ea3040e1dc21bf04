"""Preference pairs for training: reading, validation, and the per-pair margin columns of MODPO and SPO.

Everything here runs in the driver before any model is loaded or any Ray job starts, so bad input stops early with
one :class:`~rcs_ray.errors.RcsInputError` line that names the file, row and column.

Two sources give the same :class:`TrainingPairs`:

- a pairs file (parquet / jsonl; the sampling pipeline's ``pairs.parquet``): ``prompt, chosen, rejected`` are
  required; ``chosen_rewards, rejected_rewards`` (K floats, objectives in order), ``target`` and the precomputed
  reference log-probs ``ref_chosen_logps, ref_rejected_logps`` are optional (with the reference columns present
  the reference model is never run);
- a stage's dataset read by :func:`rcs_ray.data.read_preferences` (stage 1 trains on D1 as it is); its
  ``chosen_scores`` / ``rejected_scores`` become the reward columns.

Margins (pure numpy; ``N`` pairs):

- MODPO: the rewards of every objective except the target, ``(N, K-1)`` per side, and the weights ``(K,)`` with the
  target's weight first (:func:`modpo_margins`);
- SPO: the earlier stages' implicit rewards ``beta * (log pi_j - log pi_{j-1})``, ``(N, k)`` per side, from
  sequence log-probs of the policy chain (:func:`implicit_margins`), or the recorded rewards of the earlier
  stages' objectives as a stand-in (:func:`recorded_margins`).

Imports numpy and pyarrow only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rcs_ray.config import DataConfig
from rcs_ray.errors import RcsInputError

TEXT_COLUMNS = ("prompt", "chosen", "rejected")
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
REWARD_COLUMNS = ("chosen_rewards", "rejected_rewards")
Margins = Tuple[np.ndarray, np.ndarray]


@dataclass
class TrainingPairs:
    """Validated preference pairs.

    Attributes:
        rows: one dict per pair: ``prompt``, ``chosen``, ``rejected`` (strings or chat-message lists), plus
            ``chosen_rewards`` / ``rejected_rewards`` (K floats) when ``reward_names``, plus
            ``ref_chosen_logps`` / ``ref_rejected_logps`` (floats) when ``has_ref_logps``.
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


# ----------------------------------------------------------------------------------------------- reading
def _read_rows(path: str) -> List[dict]:
    import pyarrow.parquet as pq

    from rcs_ray import storage

    if not storage.exists(path):
        raise RcsInputError(f"pairs file not found: {path}")
    if path.split("?", 1)[0].endswith(".parquet") or storage.isdir(path):
        fs, source = storage.resolve(path)
        try:
            return pq.read_table(source, filesystem=fs).to_pylist()
        except Exception as exc:  # noqa: BLE001 - any parquet failure is bad input here
            raise RcsInputError(f"{path}: cannot read as parquet: {str(exc).splitlines()[0]}") from None
    rows = []
    with storage.open_text(path) as fh:
        for i, line in enumerate(fh):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise RcsInputError(f"{path}: line {i + 1}: invalid JSON: {exc.msg}") from None
    return rows


def _stats_objectives(path: str) -> Optional[List[str]]:
    """The ``objectives`` recorded in a ``stats.json`` beside a sampled ``pairs.parquet``, if any."""
    from rcs_ray import storage

    stats = storage.join(storage.parent(path), "stats.json")
    if not storage.isfile(stats):
        return None
    try:
        names = json.loads(storage.read_text(stats)).get("objectives")
    except (OSError, ValueError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def read_pairs_file(path: str, reward_names: Optional[Sequence[str]] = None,
                    target: Optional[str] = None) -> TrainingPairs:
    """Read and validate a pairs file (parquet, or jsonl).

    Args:
        path: the file (the sampling pipeline's ``pairs.parquet`` or any file with the columns below).
        reward_names: names of the K reward columns when the file carries rewards; default: the ``objectives`` of a
            ``stats.json`` beside the file, else ``objective_0..K-1``.
        target: the trained objective when the file has no ``target`` column.

    Returns:
        :class:`TrainingPairs` in file order.

    Raises:
        RcsInputError: a missing file or column, an empty file, a text that is not a string or message list, reward
            lists of a wrong length or with NaN / inf, a NaN / inf reference log-prob, more than one target.
    """
    rows = _read_rows(path)
    if not rows:
        raise RcsInputError(f"{path}: no pairs")
    columns = set(rows[0])
    missing = [c for c in TEXT_COLUMNS if c not in columns]
    if missing:
        raise RcsInputError(f"{path}: missing column(s) {missing}; a pairs file needs {list(TEXT_COLUMNS)} "
                            f"(has {sorted(columns)})")
    for group in (REF_COLUMNS, REWARD_COLUMNS):
        present = [c for c in group if c in columns]
        if len(present) == 1:
            other = group[1 - group.index(present[0])]
            raise RcsInputError(f"{path}: column {present[0]!r} without {other!r}")
    has_ref = REF_COLUMNS[0] in columns
    has_rewards = REWARD_COLUMNS[0] in columns
    targets = {r.get("target") for r in rows} - {None}
    if len(targets) > 1:
        raise RcsInputError(f"{path}: column 'target' holds several objectives {sorted(targets)}; train one at a time")
    out = []
    k = None
    for i, r in enumerate(rows):
        row = {c: _check_text(path, i, c, r.get(c)) for c in TEXT_COLUMNS}
        if has_ref:
            for c in REF_COLUMNS:
                row[c] = _check_float(path, i, c, r.get(c))
        if has_rewards:
            for c in REWARD_COLUMNS:
                row[c] = _check_rewards(path, i, c, r.get(c), k)
                k = len(row[c])
        out.append(row)
    names: List[str] = []
    if has_rewards:
        names = list(reward_names or _stats_objectives(path) or [f"objective_{j}" for j in range(k)])
        if len(names) != k:
            raise RcsInputError(f"{path}: reward lists hold {k} objectives but {len(names)} names are known {names}")
    return TrainingPairs(rows=out, reward_names=names, target=next(iter(targets), None) or target, source=path,
                         has_ref_logps=has_ref)


def read_stage_pairs(data: DataConfig, target: Optional[str] = None) -> TrainingPairs:
    """A stage's dataset through :func:`rcs_ray.data.read_preferences` (its scores become the reward columns).

    Raises:
        RcsInputError: as :func:`rcs_ray.data.read_preferences` does.
    """
    from rcs_ray.data import read_preferences

    pref = read_preferences(data)
    rows, has_rewards = [], bool(pref.objectives)
    for r in pref.rows:
        row = {c: r[c] for c in TEXT_COLUMNS}
        if has_rewards:
            row["chosen_rewards"] = [float(x) for x in r["chosen_scores"]]
            row["rejected_rewards"] = [float(x) for x in r["rejected_scores"]]
        rows.append(row)
    return TrainingPairs(rows=rows, reward_names=list(pref.objectives), target=target, source=pref.source)


def _check_text(path: str, i: int, column: str, value: Any):
    if isinstance(value, str):
        if not value.strip():
            raise RcsInputError(f"{path}: row {i}: {column!r} is empty")
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(m, dict) and "role" in m and "content" in m
                                                          for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise RcsInputError(f"{path}: row {i}: {column!r} must be a string or a list of chat messages, "
                        f"got {type(value).__name__}")


def _check_float(path: str, i: int, column: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RcsInputError(f"{path}: row {i}: {column!r} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise RcsInputError(f"{path}: row {i}: {column!r} is {x} (reference log-probs must be finite)")
    return x


def _check_rewards(path: str, i: int, column: str, value: Any, k: Optional[int]) -> List[float]:
    if not isinstance(value, (list, tuple)) or not value:
        raise RcsInputError(f"{path}: row {i}: {column!r} must be a non-empty list of numbers, got {value!r}")
    try:
        out = [float(x) for x in value]
    except (TypeError, ValueError):
        raise RcsInputError(f"{path}: row {i}: {column!r} must hold numbers, got {value!r}") from None
    if not all(math.isfinite(x) for x in out):
        raise RcsInputError(f"{path}: row {i}: {column!r} has a non-finite value {out}")
    if k is not None and len(out) != k:
        raise RcsInputError(f"{path}: row {i}: {column!r} has {len(out)} values, earlier rows have {k}")
    return out


# ----------------------------------------------------------------------------------------------- checks
def check_vocab(tokenizer, vocab_size: int, model: str) -> None:
    """The tokenizer's ids must fit the model's embedding (``len(tokenizer) <= vocab_size``).

    A model may have more embedding rows than the tokenizer has tokens (padded vocabularies); never fewer.

    Raises:
        RcsInputError: a tokenizer with more tokens than the model's ``vocab_size``.
    """
    n = len(tokenizer)
    if n > int(vocab_size):
        raise RcsInputError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has {n} tokens but model "
                            f"{model} has vocab_size {vocab_size}: they do not belong together (set policy.tokenizer)")


def check_finite_logps(values: np.ndarray, column: str, what: str) -> None:
    """Raise one line naming the first row whose log-prob is NaN / inf.

    Args:
        values: (N,) log-probs.
        column: the column name for the message.
        what: where they came from (a model path) for the message.
    """
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RcsInputError(f"{what}: row {i}: {column} is {values[i]} ({int(bad.sum())} non-finite of "
                            f"{len(values)}); the reference model's weights or inputs are broken")


# ----------------------------------------------------------------------------------------------- margins
def _rewards(pairs: TrainingPairs, names: Sequence[str], loss: str) -> Margins:
    """(N, len(names)) chosen and rejected rewards of the named objectives."""
    if not pairs.reward_names:
        raise RcsInputError(f"{pairs.source}: train.loss={loss} needs per-objective rewards "
                            f"({list(REWARD_COLUMNS)} or chosen_scores / rejected_scores)")
    unknown = [n for n in names if n not in pairs.reward_names]
    if unknown:
        raise RcsInputError(f"{pairs.source}: train.loss={loss}: objective(s) {unknown} not among the pairs' "
                            f"rewards {pairs.reward_names}")
    idx = [pairs.reward_names.index(n) for n in names]
    chosen = np.array([r["chosen_rewards"] for r in pairs.rows], dtype=np.float64).reshape(len(pairs.rows), -1)
    rejected = np.array([r["rejected_rewards"] for r in pairs.rows], dtype=np.float64).reshape(len(pairs.rows), -1)
    return chosen[:, idx], rejected[:, idx]


def modpo_margins(pairs: TrainingPairs, objective_names: Sequence[str],
                  weights: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, np.ndarray, List[float], List[str]]:
    """MODPO's margin rewards: every reward column except the target's.

    Args:
        pairs: pairs with rewards and a ``target``.
        objective_names: the config's objectives (``weights`` are given in this order).
        weights: ``train.modpo_weights`` (one per configured objective); default equal weights ``1/K``.

    Returns:
        ``(chosen (N, K-1), rejected (N, K-1), weights (K,) with the target's first, margin objective names)``.

    Raises:
        RcsInputError: no rewards or no target in the pairs, a weight missing for an objective of the pairs.
    """
    if pairs.target is None or pairs.target not in pairs.reward_names:
        raise RcsInputError(f"{pairs.source}: train.loss=modpo needs the target objective among the rewards "
                            f"{pairs.reward_names}, got target {pairs.target!r}")
    others = [n for n in pairs.reward_names if n != pairs.target]
    chosen, rejected = _rewards(pairs, others, "modpo")
    names = [pairs.target] + others
    if weights is None:
        w = [1.0 / len(names)] * len(names)
    else:
        by_name = dict(zip(objective_names, weights))
        missing = [n for n in names if n not in by_name]
        if missing:
            raise RcsInputError(f"train.modpo_weights: no weight for objective(s) {missing} of {pairs.source}")
        w = [float(by_name[n]) for n in names]
        if not w[0] > 0:
            raise RcsInputError(f"train.modpo_weights: the target {pairs.target!r} needs a weight > 0, got {w[0]}")
    return chosen, rejected, w, others


def recorded_margins(pairs: TrainingPairs, earlier: Sequence[str]) -> Margins:
    """SPO stand-in: the pairs' recorded rewards of the earlier stages' objectives, ``(N, k)`` per side."""
    return _rewards(pairs, earlier, "spo")


def implicit_margins(chosen_logps: Sequence[np.ndarray], rejected_logps: Sequence[np.ndarray],
                     beta: float) -> Margins:
    """SPO's earlier-stage implicit rewards ``r_j = beta * (log pi_j - log pi_{j-1})``, j = 1..k.

    Args:
        chosen_logps: k+1 arrays (N,): log pi_0(y_w|x) .. log pi_k(y_w|x) of the policy chain.
        rejected_logps: the same for y_l.
        beta: the implicit-reward scale (``train.beta``).

    Returns:
        ``(chosen (N, k), rejected (N, k))``.
    """
    c = np.stack([np.asarray(x, dtype=np.float64) for x in chosen_logps], axis=1)
    r = np.stack([np.asarray(x, dtype=np.float64) for x in rejected_logps], axis=1)
    return beta * np.diff(c, axis=1), beta * np.diff(r, axis=1)


def margin_summary(names: Sequence[str], chosen: np.ndarray, rejected: np.ndarray) -> Dict[str, float]:
    """Mean chosen-minus-rejected margin per column, for logs and the run summary."""
    diff = np.asarray(chosen) - np.asarray(rejected)
    return {str(n): round(float(diff[:, j].mean()), 6) for j, n in enumerate(names)} if diff.size else {}
