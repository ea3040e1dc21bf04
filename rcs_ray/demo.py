"""The tiny-world demo job (the README's main command): build the world, analyse its stage datasets, then run the
RCS sampling pipeline for stage 2 on local Ray.

Each stage's original data is analysed for reward consistency against the objectives of the earlier stages (the
paper's §3.1 measurement): how many helpfulness pairs would teach the policy to be more harmful. The sampling step
draws n candidates per stage-2 prompt from the policy (Ray Data actor pools), scores them, and keeps for each prompt
the RC pair with the largest helpfulness gap; its pairs are analysed the same way, side by side.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from rcs_ray.config import RunConfig
from rcs_ray.report import AnalyzeResult, analyze_dataset

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    output_dir: str
    world_root: str
    analyses: list[AnalyzeResult] = field(default_factory=list)
    sampling: Optional[object] = None
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
    stage = next((i for i, s in enumerate(cfg.stages) if s.sample), None)
    if stage is not None:
        from rcs_ray.config import DataConfig
        from rcs_ray.sampling import run as sample

        print(f"\nsampling stage {stage + 1} ({cfg.stages[stage].objective}) on local Ray: "
              f"n={cfg.sampling.n}, engine={cfg.sampling.engine}, margin={cfg.stages[stage].rc.margin}")
        result.sampling = sample(cfg, stage=stage)
        s = result.sampling.stats
        print(f"  {s['prompts']} prompts -> {s['pairs']} RC pairs, {s['failed']} failed "
              f"({100 * s['failure_rate']:.1f}%), {s['tokens_generated']} tokens, {s['seconds']:.0f}s")
        names = cfg.objective_names[: cfg.objective_names.index(cfg.stages[stage].objective) + 1]
        pairs = DataConfig(path=result.sampling.pairs, columns={"chosen_scores": "chosen_rewards",
                                                                "rejected_scores": "rejected_rewards"},
                           score_names=names)
        res = analyze_dataset(pairs, out_dir=os.path.join(cfg.output_dir, "analysis", f"stage{stage + 1}_rcs_pairs"),
                              target=cfg.stages[stage].objective,
                              title=f"Stage {stage + 1} RCS pairs sampled from the policy")
        print(res.summary())
        result.analyses.append(res)
        print(f"  pairs:  {result.sampling.pairs}\n  failed: {result.sampling.failed}\n"
              f"  stats:  {result.sampling.stats_path}")
    result.seconds = time.time() - start
    print(f"\ndemo finished in {result.seconds:.0f}s; outputs under {os.path.abspath(cfg.output_dir)}")
    return result
