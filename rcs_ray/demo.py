"""The tiny-world demo job (the README's main command), end to end on local Ray:

1. build (or reuse) the tiny world; analyse each stage's dataset for reward consistency (the paper's §3.1
   measurement: how many helpfulness pairs would teach the policy to be more harmful);
2. run the RCS workflow: stage 1 trains harmlessness on its data as it is; stage 2 samples n candidates per prompt
   from the stage-1 policy (Ray Data actor pools), scores them, keeps each prompt's RC pair with the largest
   helpfulness gap, and trains on those pairs (Ray Train + DeepSpeed);
3. train the last stage once more the vanilla way, from the same stage-1 policy: on its dataset's own pairs
   (``sample: false``), the same training settings (``<output_dir>/vanilla``; the earlier stages are shared, not
   retrained);
4. evaluate the base, stage-1 and both stage-2 policies on held-out prompts in one table (mean rewards, harmless
   rate, win rates) and one trade-off plot (each policy a point, arrows from stage 1 to each stage-2 policy), and
   print the measured difference between RCS and vanilla in one sentence.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

from rcs_ray import interrupts, storage
from rcs_ray.config import RunConfig
from rcs_ray.dataset_analysis import AnalyzeResult, analyze_dataset
from rcs_ray.run_layout import RunLayout

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    output_dir: str
    world_root: str
    analyses: list[AnalyzeResult] = field(default_factory=list)
    workflow: Optional[object] = None
    vanilla: Optional[object] = None  # the last stage trained on its dataset's pairs (a WorkflowResult)
    evaluation: Optional[object] = None
    seconds: float = 0.0


def describe_world(world) -> str:
    """A few lines on a built tiny world: where it is and what was measured when it was built."""
    with open(world.info, encoding="utf-8") as fh:
        info = json.load(fh)
    lines = [
        f"tiny world: {world.root}",
        f"  policy:       {world.policy}",
        f"  reward model: {world.reward_model}",
        f"  data:         {world.data_dir}",
    ]
    measured = info.get("policy_conflict") or {}
    if measured:
        lines.append(
            "  initial policy's samples: "
            + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in measured.items())
        )
    return "\n".join(lines)


def vanilla_twin(cfg: RunConfig) -> Optional[RunConfig]:
    """The config that trains ``cfg``'s last stage the vanilla way: on its dataset's own pairs (``sample: false``),
    with every other setting as it is, into ``<output_dir>/vanilla``. None when the last stage does not sample (or
    is the only stage): there is nothing to compare."""
    if len(cfg.stages) < 2 or not cfg.stages[-1].sample:
        return None
    twin = copy.deepcopy(cfg)
    twin.stages[-1].sample = False
    twin.output_dir = RunLayout(cfg.output_dir).vanilla_dir
    return twin


def share_earlier_stages(cfg: RunConfig, twin: RunConfig) -> None:
    """Give the twin run the earlier stages' manifests: their inputs are the same, so the twin's workflow skips them
    and starts its last stage from the very policy the RCS run's last stage started from."""
    ours, theirs = RunLayout(cfg.output_dir), RunLayout(twin.output_dir)
    for k in range(len(cfg.stages) - 1):
        storage.write_text(theirs.stage(k).manifest, storage.read_text(ours.stage(k).manifest))


def comparison(metrics: dict, start: str, rcs: str, vanilla: str, objectives: list, meta: str) -> str:
    """One sentence: the measured difference between the RCS and the vanilla policy on each objective (mean reward,
    and each threshold rate in points), both trained from ``start``; ``meta`` says on what it was measured."""
    r, v = metrics[rcs], metrics[vanilla]
    parts = []
    for name in objectives:
        parts.append(
            f"mean {name} {r['mean'][name]:.3f} vs {v['mean'][name]:.3f} ({r['mean'][name] - v['mean'][name]:+.3f})"
        )
        parts += [
            f"{key.split('>=')[0]} rate {100 * r['rate'][key]:.1f}% vs {100 * v['rate'][key]:.1f}% "
            f"({100 * (r['rate'][key] - v['rate'][key]):+.1f} points)"
            for key in r["rate"]
            if key.split(">=")[0] == name
        ]
    return f"RCS vs vanilla, both from the same {start} policy ({meta}): " + ", ".join(parts) + "."


def run_demo(cfg: RunConfig) -> DemoResult:
    """Build (or reuse) the tiny world named by ``cfg.tinyworld`` and write an RC report per stage dataset."""
    from rcs_ray.tinyworld import ensure_world

    start = time.time()
    with interrupts.phase("world build"):
        world = ensure_world(cfg.tinyworld)
    print(describe_world(world))
    result = DemoResult(output_dir=cfg.output_dir, world_root=world.root)
    result.analyses = analyze_stages(cfg)
    from rcs_ray.evaluate import evaluate
    from rcs_ray.sampling import hosts
    from rcs_ray.workflow import run_workflow

    print(
        f"\nRCS workflow on local Ray: {len(cfg.stages)} stages "
        f"({', '.join(st.objective for st in cfg.stages)}), n={cfg.sampling.n}, engine={cfg.sampling.engine}, "
        f"loss={cfg.train.loss}"
    )
    with hosts.scope(cfg.ray.keep_models):  # the workflow's reward models serve the eval too, where they fit
        result.workflow = run_workflow(cfg)
        for st in result.workflow.stages:
            print(stage_line(st))
        policies = {"base": world.policy, **{f"stage{st.stage}": st.policy for st in result.workflow.stages}}
        arrows = [(a, b) for a, b in zip(policies, list(policies)[1:])]
        twin = vanilla_twin(cfg)
        if twin is not None:
            last, before = f"stage{len(cfg.stages)}", f"stage{len(cfg.stages) - 1}"
            print(
                f"\nvanilla {last} ({cfg.stages[-1].objective}) from the same {before} policy: its dataset's own "
                f"pairs, the same training settings"
            )
            share_earlier_stages(cfg, twin)
            with interrupts.phase(f"vanilla {last}"):
                result.vanilla = run_workflow(twin)
            rcs_name, vanilla_name = f"{last}-{cfg.stages[-1].rc.strategy}", f"{last}-vanilla"
            policies[rcs_name] = policies.pop(last)
            policies[vanilla_name] = result.vanilla.stages[-1].policy
            arrows = arrows[:-1] + [(before, rcs_name), (before, vanilla_name)]
        result.evaluation = evaluate(cfg, policies, reference="base", arrows=arrows)
    print("\n" + storage.read_text(result.evaluation.markdown))
    if twin is not None:
        prompts = json.loads(storage.read_text(result.evaluation.json))["prompts"]
        meta = f"{prompts} held-out prompts x {cfg.eval.n} samples, one seed"
        print(comparison(result.evaluation.metrics, before, rcs_name, vanilla_name, cfg.objective_names, meta) + "\n")
    print_outputs(cfg, result)
    result.seconds = time.time() - start
    print(f"\ndemo finished in {result.seconds:.0f}s; outputs under {storage.absolute(cfg.output_dir)}")
    return result


def analyze_stages(cfg: RunConfig) -> list[AnalyzeResult]:
    """Step 1: an RC report of each stage's dataset (RC on the stage's ``rc.enforce``, default its objective and
    the earlier ones), each summary printed."""
    names = cfg.objective_names
    layout = RunLayout(cfg.output_dir)
    analyses = []
    for k, stage in enumerate(cfg.stages):
        enforce = stage.rc.enforce or names[: k + 1]
        out = layout.analysis_dir(k, stage.objective)
        with interrupts.phase(f"analysis of stage {k + 1}'s data"):
            res = analyze_dataset(
                stage.data,
                out_dir=out,
                target=stage.objective,
                enforce=enforce,
                title=f"Stage {k + 1} data ({stage.objective}): RC on {', '.join(enforce)}",
                tinyworld_cfg=cfg.tinyworld,
            )
        print(f"\nstage {k + 1} ({stage.objective}):")
        print(res.summary())
        analyses.append(res)
    return analyses


def stage_line(st) -> str:
    """One workflow stage's outcome (a :class:`~rcs_ray.workflow.StageOutcome`) in a line: its sampling (prompts,
    RC pairs, failures) and its training (loss, steps, final loss), marked when it was reused."""
    sampled = st.stats.get("sample")
    line = f"  stage {st.stage} ({st.objective}): "
    if sampled:
        line += (
            f"{sampled['prompts']} prompts -> {sampled['pairs']} RC pairs, {sampled['failed']} failed "
            f"({100 * sampled['failure_rate']:.1f}%); "
        )
    tr = st.stats["train"]
    line += f"{tr['loss']} {tr['steps']} steps, final loss {tr['final_loss']:.3f}"
    return line + ("  [unchanged: reused]" if st.skipped else "")


def print_outputs(cfg: RunConfig, result: DemoResult) -> None:
    """Where the demo wrote what: each stage's policy and pairs, the vanilla twin's policy, the eval report and
    plot."""
    layout = RunLayout(cfg.output_dir)
    print("outputs:")
    for st in result.workflow.stages:
        pairs = layout.stage(st.stage - 1).sampling.pairs
        print(
            f"  stage {st.stage}: policy {st.policy}"
            + (f"\n           pairs  {pairs}" if storage.exists(pairs) else "")
        )
    if result.vanilla is not None:
        print(f"  stage {len(cfg.stages)} vanilla: policy {result.vanilla.stages[-1].policy}")
    print(f"  eval report: {result.evaluation.markdown}\n  eval plot:   {result.evaluation.plot}")
