"""The tiny-world demo job (the README's main command), end to end on local Ray:

1. build (or reuse) the tiny world; analyse each stage's dataset for reward consistency (the paper's §3.1
   measurement: how many helpfulness pairs would teach the policy to be more harmful);
2. run the RCS workflow: stage 1 trains harmlessness on its data as it is; stage 2 samples n candidates per prompt
   from the stage-1 policy (Ray Data actor pools), scores them, keeps each prompt's RC pair with the largest
   helpfulness gap, and trains on those pairs (Ray Train + DeepSpeed);
3. evaluate the base, stage-1 and stage-2 policies on held-out prompts (mean rewards, harmless rate, win rates).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

from rcs_ray import interrupts, storage
from rcs_ray.config import RunConfig
from rcs_ray.layout import RunLayout
from rcs_ray.report import AnalyzeResult, analyze_dataset

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    output_dir: str
    world_root: str
    analyses: list[AnalyzeResult] = field(default_factory=list)
    workflow: Optional[object] = None
    evaluation: Optional[object] = None
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
    with interrupts.phase("world build"):
        world = ensure_world(cfg.tinyworld)
    print(describe_world(world))
    result = DemoResult(output_dir=cfg.output_dir, world_root=world.root)
    names = cfg.objective_names
    layout = RunLayout(cfg.output_dir)
    for k, stage in enumerate(cfg.stages):
        enforce = stage.rc.enforce or names[: k + 1]
        out = layout.analysis_dir(k, stage.objective)
        with interrupts.phase(f"analysis of stage {k + 1}'s data"):
            res = analyze_dataset(stage.data, out_dir=out, target=stage.objective, enforce=enforce,
                                  title=f"Stage {k + 1} data ({stage.objective}): RC on {', '.join(enforce)}",
                                  tinyworld_cfg=cfg.tinyworld)
        print(f"\nstage {k + 1} ({stage.objective}):")
        print(res.summary())
        result.analyses.append(res)
    from rcs_ray.evaluate import evaluate
    from rcs_ray.workflow import run_workflow

    print(f"\nRCS workflow on local Ray: {len(cfg.stages)} stages "
          f"({', '.join(st.objective for st in cfg.stages)}), n={cfg.sampling.n}, engine={cfg.sampling.engine}, "
          f"loss={cfg.train.loss}")
    result.workflow = run_workflow(cfg)
    for st in result.workflow.stages:
        sampled = st.stats.get("sample")
        line = f"  stage {st.stage} ({st.objective}): "
        if sampled:
            line += (f"{sampled['prompts']} prompts -> {sampled['pairs']} RC pairs, {sampled['failed']} failed "
                     f"({100 * sampled['failure_rate']:.1f}%); ")
        tr = st.stats["train"]
        line += f"{tr['loss']} {tr['steps']} steps, final loss {tr['final_loss']:.3f}"
        print(line + ("  [unchanged: reused]" if st.skipped else ""))
    policies = {"base": world.policy, **{f"stage{st.stage}": st.policy for st in result.workflow.stages}}
    result.evaluation = evaluate(cfg, policies, reference="base")
    print("\n" + storage.read_text(result.evaluation.markdown))
    print("outputs:")
    for st in result.workflow.stages:
        pairs = layout.stage(st.stage - 1).sampling.pairs
        print(f"  stage {st.stage}: policy {st.policy}" + (f"\n           pairs  {pairs}" if storage.exists(pairs) else ""))
    print(f"  eval report: {result.evaluation.markdown}\n  eval plot:   {result.evaluation.plot}")
    result.seconds = time.time() - start
    print(f"\ndemo finished in {result.seconds:.0f}s; outputs under {storage.absolute(cfg.output_dir)}")
    return result
