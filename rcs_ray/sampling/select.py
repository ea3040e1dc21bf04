"""Offline re-selection: any selection strategy over a stage's stored candidates, without generating again.

``candidates.parquet`` (written by every sampled stage, ``sampling.store_candidates``) holds each prompt group as the
RC filter saw it: its candidates, their sources and the m x K reward matrix. :func:`select` runs the same
:class:`~rcs_ray.sampling.rc_step.RCFilterStage` and the same :class:`~rcs_ray.sampling.writer.OutputWriter` over it,
so with the pipeline's settings it writes byte-identical ``pairs.parquet`` / ``failed.parquet``, and with any other
strategy, margin or enforce set it gives that baseline on the very same candidates (``rcs-ray select``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

from rcs_ray.config import RCConfig
from rcs_ray.data.file_rows import read_parquet
from rcs_ray.data.pairs import is_chat, reward_column
from rcs_ray.data.sampling_files import file_metadata
from rcs_ray.errors import RcsInputError


def _groups(batch, objectives: Sequence[str], source: str):
    """A stored batch as prompt-group columns: the m x K ``rewards`` matrix back into one ``reward__<name>`` list
    column per objective (an empty matrix: empty lists), columnar."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from rcs_ray.sampling.columns import no_null_lists, offsets_of

    table = pa.Table.from_batches([batch])
    rewards = no_null_lists(table, "rewards", pa.list_(pa.list_(pa.float64())))
    per_candidate = pc.list_flatten(rewards)
    k = len(objectives)
    if not np.all(pc.fill_null(pc.list_value_length(per_candidate), -1).to_numpy(zero_copy_only=False) == k):
        raise RcsInputError(
            f"{source}: a reward matrix row does not have {k} values (one per objective {list(objectives)})"
        )
    values = pc.list_flatten(per_candidate).to_numpy(zero_copy_only=False).reshape(-1, k)
    counts = pc.list_value_length(rewards).to_numpy(zero_copy_only=False)
    table = table.drop_columns(["rewards"])
    for j, name in enumerate(objectives):
        table = table.append_column(
            reward_column(name),
            pa.ListArray.from_arrays(offsets_of(counts), pa.array(np.ascontiguousarray(values[:, j]), pa.float64())),
        )
    return table


def select(
    candidates: str,
    out_dir: str,
    strategy: Optional[str] = None,
    margin: Optional[float] = None,
    enforce: Optional[Sequence[str]] = None,
    target: Optional[str] = None,
    weights: Optional[Sequence[float]] = None,
    seed: Optional[int] = None,
    truncated: Optional[str] = None,
    rs_tau: Optional[float] = None,
    rs_eta: Optional[float] = None,
) -> dict:
    """Select each stored group's pair (``rs_dpo``: pairs); write pairs / failed / stats into the local ``out_dir``.
    Every setting left None is the stage's own, recorded in the file: with none given, the stage's pairs and failures
    come back.

    Args:
        candidates: a ``candidates.parquet``.
        out_dir: where ``pairs.parquet``, ``failed.parquet`` and ``stats.json`` go.
        strategy, margin, enforce, weights: as in a stage's ``rc`` settings (``enforce``: objective names).
        target: the objective pairs are selected for (default: the stage's, from the file).
        seed: the ``rc_random`` seed (default: the stage's sampling seed).
        truncated: ``sampling.truncated`` (default: the stage's).
        rs_tau, rs_eta: ``rs_dpo``'s threshold (default: the stage's, else 1.0 and 0.85).

    Returns:
        The stats (as ``stats.json``).

    Raises:
        RcsInputError: an unreadable file, one without candidate metadata, an unknown objective or strategy.
    """
    from rcs_ray import selection
    from rcs_ray.sampling.rc_step import RCFilterStage
    from rcs_ray.sampling.writer import OutputWriter

    table, meta, objectives = _read_candidates(candidates)
    given = _Settings(strategy, margin, enforce, weights, target, truncated, rs_tau, rs_eta)
    st = _settings(candidates, meta, objectives, given)
    cfg = st.rc_config()
    step = RCFilterStage(
        objectives, st.target, cfg, seed=int(st.seed if seed is None else seed), truncated=st.truncated
    )
    chat = is_chat(table.schema)
    writer = OutputWriter(out_dir, objectives, st.target, chat=chat)
    stats = {
        "selected_from": candidates,
        "strategy": st.strategy,
        "margin": st.margin,
        "enforce": cfg.enforce,
        "truncated": st.truncated,
        **({"rs_tau": st.rs_tau, "rs_eta": st.rs_eta} if st.strategy in selection.MULTI_PAIR else {}),
    }
    return _write_selected(table, step, writer, objectives, candidates, stats)


def _write_selected(table, step, writer, objectives: Sequence[str], candidates: str, stats: dict) -> dict:
    """Run the RC ``step`` over the stored groups (1024 a batch) into ``writer`` and commit it with ``stats`` and the
    seconds taken; on any failure the writer is aborted. Returns the committed stats."""
    start = time.time()
    try:
        for batch in table.to_batches(max_chunksize=1024):
            groups = _groups(batch, objectives, candidates)
            writer.write(step(groups), groups.column("round").to_numpy(zero_copy_only=False))
        return writer.commit({**stats, "seconds": round(time.time() - start, 3)})
    except BaseException:
        writer.abort()
        raise


@dataclass
class _Settings:
    """A re-selection's settings (None: not given); ``seed`` is the stage's ``rc_random`` seed."""

    strategy: Optional[str]
    margin: Optional[float]
    enforce: Optional[Sequence[str]]
    weights: Optional[Sequence[float]]
    target: Optional[str]
    truncated: Optional[str]
    rs_tau: Optional[float]
    rs_eta: Optional[float]
    seed: Optional[int] = None

    def rc_config(self) -> RCConfig:
        """The RC step's settings."""
        return RCConfig(
            strategy=self.strategy,
            margin=self.margin,
            enforce=list(self.enforce) if self.enforce else None,
            weights=list(self.weights) if self.weights else None,
            rs_tau=self.rs_tau,
            rs_eta=self.rs_eta,
        )


def _read_candidates(candidates: str):
    """The ``candidates.parquet`` table, its file metadata and its objective names.

    Raises:
        RcsInputError: a missing or unreadable file, or one without a reward matrix or objective names.
    """
    from rcs_ray import storage

    if not storage.isfile(candidates):
        raise RcsInputError(f"candidates file not found: {candidates}")
    table = read_parquet(candidates)
    meta = file_metadata(table.schema)
    objectives = meta.get("objectives")
    if not objectives or "rewards" not in table.column_names:
        raise RcsInputError(f"{candidates}: not a candidates.parquet (no reward matrix or objective names)")
    return table, meta, objectives


def _settings(candidates: str, meta: dict, objectives: Sequence[str], given: _Settings) -> _Settings:
    """Each ``given`` setting, else the stage's own recorded in the file's metadata, checked.

    Raises:
        RcsInputError: an unknown objective, strategy or truncation rule, weights not one per objective, or an
            ``rs_dpo`` threshold out of range.
    """
    from rcs_ray import selection

    stage = dict(meta.get("selection") or {})  # older files: the sampling seed only
    stage.setdefault("seed", meta.get("seed", 0))
    strategy = given.strategy if given.strategy is not None else stage.get("strategy", "rcs")
    margin = float(given.margin if given.margin is not None else stage.get("margin", 0.0))
    enforce = given.enforce if given.enforce is not None else stage.get("enforce")
    weights = given.weights if given.weights is not None else stage.get("weights")
    truncated = given.truncated if given.truncated is not None else stage.get("truncated", "keep")
    rs_tau = float(given.rs_tau if given.rs_tau is not None else stage.get("rs_tau", 1.0))
    rs_eta = float(given.rs_eta if given.rs_eta is not None else stage.get("rs_eta", 0.85))
    target = given.target or meta.get("target")
    for name in [target, *(enforce or [])]:
        if name not in objectives:
            raise RcsInputError(f"{candidates}: objective {name!r} is not among the stored ones {objectives}")
    if strategy not in selection.STRATEGIES:
        raise RcsInputError(f"--strategy {strategy!r} is not one of {sorted(selection.STRATEGIES)}")
    if weights is not None and len(weights) != len(objectives):
        raise RcsInputError(f"--weights: needs {len(objectives)} (one per stored objective {objectives})")
    if truncated not in selection.TRUNCATION_RULES:
        raise RcsInputError(f"--truncated {truncated!r} is not one of {list(selection.TRUNCATION_RULES)}")
    if not (rs_tau > 0 and 0.5 <= rs_eta < 1):
        raise RcsInputError(f"--rs-tau must be > 0 and --rs-eta in [0.5, 1), got {rs_tau} and {rs_eta}")
    return _Settings(strategy, margin, enforce, weights, target, truncated, rs_tau, rs_eta, seed=stage["seed"])
