"""The reference log-probs computed by the training workers, when the reference is the policy they start from.

Most stages train against the policy they start from (DPO and MODPO, and stage k against stage k-1's policy). The
workers already hold that model, so before step 1 they compute ``ref_chosen_logps`` / ``ref_rejected_logps`` with
their own engine in eval mode (no grad) instead of a separate pass loading it again (:mod:`rcs_ray.train.refs`):

- worker ``r`` of ``W`` takes the ``r``-th of ``W`` equal slices of the pairs, ``train.batch_size`` pairs per forward
  (a size the training step already fits); every worker runs the same number of forwards (ZeRO-3 gathers each
  layer's weights from every rank in every forward), one that has run out repeats a pair and drops the result;
- the results are gathered on every worker (``all_gather_object``), checked finite, and added to the table;
- rank 0 writes the table as the stage's feature cache (``features.parquet`` under the key the driver gave), before
  step 1: a rerun of the command reads it, and a worker group that Ray Train restarts from a step-``s`` checkpoint
  (its weights are no longer the reference) reads it back instead of computing.

Step 1 of DPO then compares the policy with exactly the weights and precision it trains in: the loss is ln 2 up to
the rounding of different padding.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Dict, List

import numpy as np

from rcs_ray.data.pairs import REF_COLUMNS

log = logging.getLogger(__name__)


def add_reference_logps(
    forward, table: Dict[str, list], features, spec: Dict[str, Any], step: int, rank: int, world: int
) -> None:
    """Add the reference log-prob columns to ``table`` (the worker's columns, :func:`rcs_ray.train.batches.
    load_features`), computed at step 0, else read from the cache rank 0 wrote then.

    Args:
        forward: ``rows -> (chosen (B,), rejected (B,))`` log-prob tensors of those rows under the engine's current
            weights, no grad, in eval mode (:func:`rcs_ray.train.batches.reference_forward`); the starting weights when
            ``step`` is 0.
        table: the feature columns (tokens, margins), in ``index`` order; changed in place.
        features: the same table as a ``pyarrow.Table`` (rank 0 writes it with the new columns).
        spec: ``key`` (the cache key), ``cache_dir`` (the stage's home: a directory or a URI), ``batch_size``,
            ``model`` (for messages).
        step: the step the run resumes from (0: a fresh start).

    Raises:
        RcsInputError: a non-finite log-prob (the policy's weights or inputs are broken).
        RuntimeError: a restarted worker finds no cache of this run.
    """
    if step > 0:
        chosen, rejected = _read_back(spec)
    else:
        t0 = time.perf_counter()
        chosen, rejected = _compute(forward, len(table["index"]), spec, rank, world)
        if rank == 0:
            _write(features, chosen, rejected, spec)
            seconds = time.perf_counter() - t0
            log.info("reference log-probs of %d pairs in the training workers: %.1f s", len(chosen), seconds)
    table[REF_COLUMNS[0]], table[REF_COLUMNS[1]] = chosen.tolist(), rejected.tolist()


def forward_rows(n: int, world: int, rank: int, size: int) -> List[np.ndarray]:
    """The rows of each forward of worker ``rank``: its slice of ``n`` pairs (``np.array_split`` over ``world``) in
    pieces of ``size``, as many pieces on every rank (an empty piece: this rank has run out)."""
    mine = np.array_split(np.arange(n), world)[rank]
    forwards = math.ceil(math.ceil(n / world) / size)
    return [mine[f * size : (f + 1) * size] for f in range(forwards)]


def _compute(forward, n: int, spec: Dict[str, Any], rank: int, world: int):
    """``(chosen (N,), rejected (N,))`` float64 over every worker's slice, on every worker."""
    import torch.distributed as dist

    from rcs_ray.train.ref_stages import check_finite_logps

    parts = []
    for rows in forward_rows(n, world, rank, int(spec["batch_size"])):
        chosen, rejected = forward(rows if len(rows) else np.zeros(1, dtype=int))  # run out: pair 0, dropped
        if len(rows):
            parts.append((rows, chosen.double().cpu().numpy(), rejected.double().cpu().numpy()))
    gathered = [parts]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, parts)
    out = np.full((2, n), np.nan)
    for rows, chosen, rejected in (p for worker in gathered for p in worker):
        out[0, rows], out[1, rows] = chosen, rejected
    for values, column in zip(out, REF_COLUMNS):
        check_finite_logps(values, column, f"{spec['model']} (reference log-probs in the training workers)")
    return out[0], out[1]


def _write(features, chosen: np.ndarray, rejected: np.ndarray, spec: Dict[str, Any]) -> None:
    """Rank 0: the table with the reference columns as the stage's feature cache."""
    import pyarrow as pa

    from rcs_ray.train.refs import write_cache

    features = features.sort_by("index")
    for column, values in zip(REF_COLUMNS, (chosen, rejected)):
        features = features.append_column(column, pa.array(values, type=pa.float64()))
    write_cache(spec["cache_dir"], features, spec["key"], {"ref": spec["model"]})


def _read_back(spec: Dict[str, Any]):
    """The reference columns rank 0 cached before step 1 (a restarted worker group's weights have moved on)."""
    import json

    import pyarrow.parquet as pq

    from rcs_ray import storage
    from rcs_ray.run_layout import FEATURES_FILE, FEATURES_KEY

    path = storage.join(spec["cache_dir"], FEATURES_FILE)
    try:
        key = json.loads(storage.read_text(storage.join(spec["cache_dir"], FEATURES_KEY)))["key"]
        with storage.open_binary(path) as fh:
            cached = pq.read_table(fh).sort_by("index")
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is the same problem
        raise RuntimeError(f"{path}: the reference log-probs of this run cannot be read back ({exc})") from exc
    if key != spec["key"]:
        raise RuntimeError(f"{path} holds the reference log-probs of other inputs than this run's")
    return tuple(cached.column(c).to_numpy() for c in REF_COLUMNS)
