"""What fits where: the resources a pass's model hosts ask for together, what a cluster lacks for them, and how a
pass whose models do not fit side by side runs in phases (:mod:`rcs_ray.sampling.hosts` starts and keeps the hosts).
"""

from __future__ import annotations

import logging
from typing import Dict, List

log = logging.getLogger(__name__)


def need(pools: list) -> Dict[str, float]:
    """The resources ``pools`` ask for together: each pool's per-host demand times its host count."""
    out: Dict[str, float] = {}
    for pool in pools:
        for k, v in pool.demand.items():
            if v:
                out[k] = out.get(k, 0.0) + pool.count * float(v)
    return out


def short(need: Dict[str, float], have: Dict[str, float]) -> str:
    """What ``need`` lacks in ``have``, in words ('' when it fits)."""
    return ", ".join(
        f"{v:g} {k} (the cluster has {have.get(k, 0.0):g})" for k, v in need.items() if v > have.get(k, 0.0) + 1e-9
    )


def phases(wanted: list) -> List[int]:
    """How many consecutive pools of ``wanted`` run together in each phase of a pass: all of them when they fit the
    cluster side by side (one streaming phase), else as many as fit at a time (each phase's output materialized
    before the next phase's models start, as Ray Data runs pools that cannot start together)."""
    import ray

    cap, sizes, group = ray.cluster_resources(), [], []
    for want in wanted:
        if group and short(need(group + [want]), cap):
            sizes.append(len(group))
            group = []
        group.append(want)
    sizes.append(len(group))
    if len(sizes) > 1:
        log.info("the pass's models do not fit side by side: they run in %d phases of %s pools", len(sizes), sizes)
    return sizes
