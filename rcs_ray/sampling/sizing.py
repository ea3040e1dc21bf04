"""Scorer pools sized from measured rates: how many hosts each scorer needs to keep up with the engines.

Every batch records how long each model worked on it (``seconds__generate``, ``seconds__score:<scorer>``; an async
engine's overlapping batches share its busy time once, :mod:`rcs_ray.sampling.busy`). Over a pass, a scorer that
worked ``S`` host-seconds for work the engines did in ``G`` engine-seconds needs ``S / G`` hosts per engine to keep
up; with ``E`` engines and :data:`HEADROOM` for batch-to-batch spread::

    hosts to keep up = ceil(E * S / G * HEADROOM)

Fewer hosts leave the engines waiting on the scorer (the scale simulation's fixed pool at 64 engines, docs/cluster.md).
The sampling stats record these figures per pool (``stats.json`` ``pools``); a pass warns when a scorer falls short,
and ``rcs-ray plan`` sizes the pools of a later run from the last one (:mod:`rcs_ray.planning.measured`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Dict, List, Mapping, Optional

log = logging.getLogger(__name__)

HEADROOM = 1.1  # 10% spare: a scorer at exactly the engines' pace still makes them wait on its slow batches
GENERATE = "generate"


def scorer_kind(label: str) -> str:
    """A scorer's pool name: its hosts' kind (:func:`rcs_ray.sampling.passes.scorer_pool`) and the key of its busy
    seconds (``seconds__score:<scorer>``), so the stats tie each scorer's time to its hosts."""
    return f"score:{label}"


def pool_seconds(seconds: Mapping[str, float]) -> Dict[str, float]:
    """Busy seconds by pool (``generate`` and each scorer's), or ``{}`` where no scorer ran."""
    if not any(":" in k for k in seconds):
        return {}
    return {k: round(v, 3) for k, v in sorted(seconds.items()) if k == GENERATE or ":" in k}


def busy_figures(seconds: Mapping[str, float]) -> dict:
    """The stats' busy seconds: ``actor_seconds_by_stage`` (every scorer under ``score``) and, where scorers ran,
    ``actor_seconds_by_pool`` (:func:`pool_seconds`)."""
    by_stage: Counter = Counter()
    for key, value in seconds.items():
        by_stage[key.split(":", 1)[0]] += value
    out = {"actor_seconds_by_stage": {k: round(v, 3) for k, v in sorted(by_stage.items())}}
    by_pool = pool_seconds(seconds)
    return {**out, "actor_seconds_by_pool": by_pool} if by_pool else out


def hosts_to_keep_up(engines: int, scorer_per_engine_second: Optional[float]) -> Optional[int]:
    """The hosts a scorer needs beside ``engines`` engines, from its host-seconds per engine-second (None: unknown)."""
    if scorer_per_engine_second is None or engines < 1:
        return None
    return max(1, math.ceil(engines * scorer_per_engine_second * HEADROOM - 1e-9))


def pool_sizing(engines: int, scorers: List[dict], by_pool: Mapping[str, float]) -> List[dict]:
    """Per scorer pool of a pass: its hosts, busy seconds, host-seconds per engine-second and the hosts that keep up.

    Args:
        engines: the generation hosts (``sampling.num_actors``).
        scorers: ``{"pool": "score:<scorer>", "objectives": [names], "hosts": count}`` per scorer of the pass.
        by_pool: busy seconds by pool (``actor_seconds_by_pool``).
    """
    gen = float(by_pool.get(GENERATE, 0.0))
    out = []
    for s in scorers:
        busy = by_pool.get(s["pool"])
        ratio = round(busy / gen, 4) if busy is not None and gen > 0 else None
        need = hosts_to_keep_up(engines, ratio)
        out.append(
            {
                **s,
                "busy_seconds": None if busy is None else round(float(busy), 3),
                "engines": engines,
                "engine_seconds": round(gen, 3),
                "scorer_seconds_per_engine_second": ratio,
                "hosts_to_keep_up": need,
                "short": need is not None and need > s["hosts"],
            }
        )
    return out


def scorers_of(job) -> List[dict]:
    """The scorer pools of a sampling job: pool kind, the objectives it scores and its hosts."""
    from rcs_ray.sampling.scorers import plan_scorers

    return [
        {
            "pool": scorer_kind(spec.label),
            "objectives": [o.name for o in spec.objectives],
            "hosts": int(spec.objectives[0].num_actors),
        }
        for spec in plan_scorers(job.objectives)
    ]


def warn_short(pools: List[dict]) -> None:
    """One warning per scorer that kept the engines waiting, with the ``num_actors`` that keeps up."""
    for p in pools:
        if p["short"]:
            log.warning(
                "scorer %s kept the engines waiting: it worked %.2f host-seconds per engine-second, so %d engine(s) "
                "need %d host(s) of it and it had %d; set num_actors: %d on objective %r (`rcs-ray plan` reads "
                "these figures from stats.json)",
                p["pool"],
                p["scorer_seconds_per_engine_second"],
                p["engines"],
                p["hosts_to_keep_up"],
                p["hosts"],
                p["hosts_to_keep_up"],
                p["objectives"][0],
            )


def sizing_stats(job, seconds: Mapping[str, float]) -> Dict[str, list]:
    """The stats' ``pools`` entry of a pass (empty without scorers), warning about the scorers that fell short."""
    by_pool = pool_seconds(seconds)
    if not by_pool:
        return {}
    pools = pool_sizing(int(job.sampling.num_actors), scorers_of(job), by_pool)
    warn_short(pools)
    return {"pools": pools}
