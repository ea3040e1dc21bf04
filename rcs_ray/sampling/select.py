"""Offline re-selection: any selection strategy over a stage's stored candidates, without generating again.

``candidates.parquet`` (written by every sampled stage, ``sampling.store_candidates``) holds each prompt group as the
RC filter saw it: its candidates, their sources and the m x K reward matrix. :func:`select` runs the same
:class:`~rcs_ray.sampling.stages.RCFilterStage` and the same :class:`~rcs_ray.sampling.writer.OutputWriter` over it,
so with the pipeline's settings it writes byte-identical ``pairs.parquet`` / ``failed.parquet``, and with any other
strategy, margin or enforce set it gives that baseline on the very same candidates (``rcs-ray select``).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

from rcs_ray.config import RCConfig
from rcs_ray.data.pairs import file_metadata, is_chat, reward_column
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
        raise RcsInputError(f"{source}: a reward matrix row does not have {k} values (one per objective "
                            f"{list(objectives)})")
    values = pc.list_flatten(per_candidate).to_numpy(zero_copy_only=False).reshape(-1, k)
    counts = pc.list_value_length(rewards).to_numpy(zero_copy_only=False)
    table = table.drop_columns(["rewards"])
    for j, name in enumerate(objectives):
        table = table.append_column(reward_column(name), pa.ListArray.from_arrays(
            offsets_of(counts), pa.array(np.ascontiguousarray(values[:, j]), pa.float64())))
    return table


def select(candidates: str, out_dir: str, strategy: str = "rcs", margin: float = 0.0,
           enforce: Optional[Sequence[str]] = None, target: Optional[str] = None,
           weights: Optional[Sequence[float]] = None, seed: Optional[int] = None) -> dict:
    """Select one pair per stored group with ``strategy``; write pairs / failed / stats into the local ``out_dir``.

    Args:
        candidates: a ``candidates.parquet``.
        out_dir: where ``pairs.parquet``, ``failed.parquet`` and ``stats.json`` go.
        strategy, margin, enforce, weights: as in a stage's ``rc`` settings (``enforce``: objective names).
        target: the objective pairs are selected for (default: the stage's, from the file).
        seed: the ``rc_random`` seed (default: the sampling seed recorded in the file).

    Returns:
        The stats (as ``stats.json``).

    Raises:
        RcsInputError: an unreadable file, one without candidate metadata, an unknown objective or strategy.
    """
    import pyarrow.parquet as pq

    from rcs_ray import rc, storage
    from rcs_ray.sampling.stages import RCFilterStage
    from rcs_ray.sampling.writer import OutputWriter

    if not storage.isfile(candidates):
        raise RcsInputError(f"candidates file not found: {candidates}")
    fs, source = storage.resolve(candidates)
    try:
        table = pq.read_table(source, filesystem=fs)
    except Exception as exc:  # noqa: BLE001 - any parquet failure is bad input here
        raise RcsInputError(f"{candidates}: cannot read as parquet: {str(exc).splitlines()[0]}") from None
    meta = file_metadata(table.schema)
    objectives = meta.get("objectives")
    if not objectives or "rewards" not in table.column_names:
        raise RcsInputError(f"{candidates}: not a candidates.parquet (no reward matrix or objective names)")
    target = target or meta.get("target")
    for name in [target, *(enforce or [])]:
        if name not in objectives:
            raise RcsInputError(f"{candidates}: objective {name!r} is not among the stored ones {objectives}")
    if strategy not in rc.STRATEGIES:
        raise RcsInputError(f"--strategy {strategy!r} is not one of {sorted(rc.STRATEGIES)}")
    if weights is not None and len(weights) != len(objectives):
        raise RcsInputError(f"--weights: needs {len(objectives)} (one per stored objective {objectives})")
    cfg = RCConfig(strategy=strategy, margin=margin, enforce=list(enforce) if enforce else None,
                   weights=list(weights) if weights else None)
    stage = RCFilterStage(objectives, target, cfg, seed=int(meta.get("seed", 0) if seed is None else seed))
    chat = is_chat(table.schema)
    writer = OutputWriter(out_dir, objectives, target, chat=chat)
    start = time.time()
    try:
        for batch in table.to_batches(max_chunksize=1024):
            groups = _groups(batch, objectives, candidates)
            writer.write(stage(groups), groups.column("round").to_numpy(zero_copy_only=False))
        return writer.commit({"selected_from": candidates, "strategy": strategy, "margin": margin,
                              "enforce": cfg.enforce, "seconds": round(time.time() - start, 3)})
    except BaseException:
        writer.abort()
        raise
