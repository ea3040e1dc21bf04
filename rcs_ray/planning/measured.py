"""``rcs-ray plan``'s scorer pools sized from measured rates: the ``pools`` figures a sampled stage recorded in its
``stats.json`` (:mod:`rcs_ray.sampling.sizing`), applied to the engines this config starts.

A scorer's host-seconds per engine-second do not depend on how many engines ran, so a short run (say 1 engine, a few
hundred prompts) sizes the pools of the full one: ``hosts = ceil(engines * ratio * headroom)``. Stages not sampled
yet, or sampled before these figures were recorded, give nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import List

from rcs_ray.config import RunConfig
from rcs_ray.run_layout import RunLayout
from rcs_ray.sampling.sizing import hosts_to_keep_up


@dataclass
class MeasuredPool:
    stage: int  # 1-based
    pool: str  # score:<scorer>
    key: str  # the config key of its hosts: objectives.<i>.num_actors
    ratio: float  # scorer host-seconds per engine-second, measured
    measured_engines: int
    hosts: int  # in this config
    engines: int  # in this config
    needed: int  # hosts that keep up with ``engines``
    source: str  # the stats file

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def line(self) -> str:
        verdict = "keeps up" if self.hosts >= self.needed else f"too few: set {self.key}={self.needed}"
        return (
            f"  stage {self.stage:<3} {self.pool:<34} {self.ratio:>8.3f} {self.hosts:>6} {self.needed:>6}   {verdict}"
        )


def _read(path: str):
    from rcs_ray import storage

    try:
        return json.loads(storage.read_text(path))
    except (OSError, ValueError):  # absent, or damaged (a rerun sets it aside): nothing measured there
        return None


def measured_pools(cfg: RunConfig) -> List[MeasuredPool]:
    """Every scorer pool of the config's sampled stages with recorded rates under ``cfg.output_dir``."""
    layout, names, engines = RunLayout(cfg.output_dir), cfg.objective_names, int(cfg.sampling.num_actors)
    out = []
    for k, st in enumerate(cfg.stages):
        path = layout.stage(k).sampling.stats
        stats = _read(path) if st.sample else None
        for p in (stats or {}).get("pools", []):
            name, ratio = p["objectives"][0], p.get("scorer_seconds_per_engine_second")
            if ratio is None or name not in names:
                continue
            i = names.index(name)
            out.append(
                MeasuredPool(
                    stage=k + 1,
                    pool=p["pool"],
                    key=f"objectives.{i}.num_actors",
                    ratio=float(ratio),
                    measured_engines=int(p["engines"]),
                    hosts=int(cfg.objectives[i].num_actors),
                    engines=engines,
                    needed=hosts_to_keep_up(engines, float(ratio)),
                    source=path,
                )
            )
    return out


def report_lines(pools: List[MeasuredPool]) -> List[str]:
    if not pools:
        return []
    engines = pools[0].engines
    lines = [
        "",
        f"scorer pools sized from measured rates (the last sampling of each stage under output_dir; "
        f"{engines} engine(s) in this config):",
        f"  {'stage':<9} {'pool':<34} {'ratio':>8} {'hosts':>6} {'needed':>6}",
    ]
    return lines + [p.line() for p in pools]
