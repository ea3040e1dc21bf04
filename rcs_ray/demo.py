"""The tiny-world demo job (the README's main command): build the world, analyse its stage datasets.

Each stage's original data is analysed for reward consistency against the objectives of the earlier stages (the
paper's §3.1 measurement): how many helpfulness pairs would teach the policy to be more harmful.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

from rcs_ray.config import RunConfig
from rcs_ray.report import AnalyzeResult, analyze_dataset

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    output_dir: str
    world_root: str
    analyses: list[AnalyzeResult] = field(default_factory=list)
    seconds: float = 0.0


def describe_world(world) -> str:
    """A few lines on a built tiny world: where it is and what was measured when it was built."""
    with open(world.info, encoding="utf-8") as fh:
        info = json.load(fh)
    lines = [f"tiny world: {world.root}",
             f"  policy:       {world.policy}",
             f"  reward model: {world.reward_model}",
             f"  data:         {world.data_dir}"]
    measured = info.get("policy_conflict") or {}
    if measured:
        lines.append("  initial policy's samples: "
                     + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in measured.items()))
    return "\n".join(lines)


def run_demo(cfg: RunConfig) -> DemoResult:
    """Build (or reuse) the tiny world named by ``cfg.tinyworld`` and write an RC report per stage dataset."""
    from rcs_ray.tinyworld import ensure_world

    start = time.time()
    world = ensure_world(cfg.tinyworld)
    print(describe_world(world))
    result = DemoResult(output_dir=cfg.output_dir, world_root=world.root)
    names = cfg.objective_names
    for k, stage in enumerate(cfg.stages):
        enforce = stage.rc.enforce or names[: k + 1]
        out = os.path.join(cfg.output_dir, "analysis", f"stage{k + 1}_{stage.objective}")
        res = analyze_dataset(stage.data, out_dir=out, target=stage.objective, enforce=enforce,
                              title=f"Stage {k + 1} data ({stage.objective}): RC on {', '.join(enforce)}",
                              tinyworld_cfg=cfg.tinyworld)
        print(f"\nstage {k + 1} ({stage.objective}):")
        print(res.summary())
        result.analyses.append(res)
    result.seconds = time.time() - start
    print(f"\ndemo finished in {result.seconds:.0f}s; outputs under {os.path.abspath(cfg.output_dir)}")
    return result
