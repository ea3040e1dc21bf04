"""``rcs-ray plan CONFIG``: a dry run that proves a config before any GPU is spent. It loads no weights.

1. every model and dataset resolved (local, URI, HF cache) and every checkpoint checked on the meta device
   (:mod:`rcs_ray.planning.checks`); every stage's prompts counted;
2. the resource plan: pools, actors, GPUs per actor, tensor-parallel groups, train workers, checked against the
   attached cluster (``ray.cluster_resources()``) or the given / local capacity (:mod:`rcs_ray.planning.resources`);
3. the cost model of docs/cluster.md per stage, with the rates it assumed (:mod:`rcs_ray.planning.cost`);
4. where an earlier run under ``output_dir`` recorded them, the scorer hosts that keep up with this config's engines
   (:mod:`rcs_ray.planning.measured`).

Every problem found is listed (one line each); the CLI exits 2 when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from rcs_ray.config import RunConfig
from rcs_ray.planning.checks import Found, check_data, check_models
from rcs_ray.planning.cost import DEFAULT_RATES, StageCost, stage_costs
from rcs_ray.planning.measured import MeasuredPool, measured_pools, report_lines
from rcs_ray.planning.resources import Capacity, Phase, capacity, check, phases

__all__ = ["PlanResult", "plan"]


@dataclass
class PlanResult:
    name: str
    found: Found
    phases: List[Phase]
    capacity: Optional[Capacity]
    costs: List[StageCost]
    rates: Dict[str, float]
    problems: List[str] = field(default_factory=list)
    measured: List[MeasuredPool] = field(default_factory=list)  # scorer pools sized from a run's rates

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "models": self.found.models,
            "prompts": self.found.prompts,
            "mean_prompt_tokens": {k: round(v, 1) for k, v in self.found.prompt_tokens.items()},
            "capacity": None
            if self.capacity is None
            else {"source": self.capacity.source, "resources": self.capacity.resources},
            "phases": [
                {
                    "phase": p.name,
                    "needs": {n: p.total(n) for n in p.names()},
                    "pools": [
                        {
                            "what": q.what,
                            "actors": q.actors,
                            "gpus_each": q.gpus,
                            "cpus_each": q.cpus,
                            "resources_each": q.resources,
                        }
                        for q in p.pools
                    ],
                }
                for p in self.phases
            ],
            "costs": [c.as_dict() for c in self.costs],
            "rates": self.rates,
            "measured_pools": [p.as_dict() for p in self.measured],
            "problems": self.problems,
        }

    def report(self) -> str:
        lines = [f"plan of {self.name}", "", "models:"]
        lines += [f"  {k:<28} {v}" for k, v in self.found.models.items()]
        lines += ["", "data:"]
        for k, n in self.found.prompts.items():
            mean = self.found.prompt_tokens.get(k)
            lines.append(f"  {k:<28} {n} prompts" + (f" (prompt {mean:.0f} tokens on average)" if mean else ""))
        cap = self.capacity
        lines += [
            "",
            "resources"
            + (
                f" ({cap.source}: "
                + ", ".join(
                    f"{v:g} {k}"
                    for k, v in sorted(cap.resources.items())
                    if k in ("GPU", "CPU") or any(k in p.names() for p in self.phases)
                )
                + ")"
                if cap
                else ""
            )
            + ":",
        ]
        for p in self.phases:
            needs = ", ".join(f"{p.total(n):g} {n}" for n in p.names())
            pools = "; ".join(f"{q.actors} x {q.what} ({q.gpus:g} GPU, {q.cpus:g} CPU each)" for q in p.pools)
            lines.append(f"  {p.name:<26} {needs:<22} {pools}")
        r = self.rates
        lines += [
            "",
            f"cost (assumed rates, not measured: generation {r['gen']:g} tokens/s per engine, reward "
            f"model {r['rm']:g} tokens/s per replica, training {r['train']:g} pairs/s; samples "
            f"{r['fill']:g} x max_tokens on average; --rates to change):",
        ]
        lines.append(
            f"  {'stage':<6} {'prompts':>8} {'generated':>12} {'scored':>12} {'gen GPU-h':>10} "
            f"{'score GPU-h':>11} {'train GPU-h':>11} {'total':>8}"
        )
        for c in self.costs:
            lines.append(
                f"  {c.stage:<6} {c.prompts:>8} {c.generated_tokens:>12.3g} {c.scored_tokens:>12.3g} "
                f"{c.generation_gpu_hours:>10.3f} {c.scoring_gpu_hours:>11.3f} "
                f"{c.training_gpu_hours:>11.3f} {c.gpu_hours:>8.3f}"
            )
        lines += report_lines(self.measured)
        lines += [
            "",
            f"{len(self.problems)} problem(s)" + (":" if self.problems else ": the config can run as planned"),
        ]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def plan(
    cfg: RunConfig, gpus: Optional[float] = None, cpus: Optional[float] = None, rates: Optional[Dict[str, float]] = None
) -> PlanResult:
    """Check ``cfg`` without loading weights or starting work; see the module docstring."""
    found = Found()
    check_models(cfg, found)
    check_data(cfg, found)
    planned = phases(cfg)
    cap = found.attempt(capacity, cfg, gpus, cpus)
    rates = dict(rates or DEFAULT_RATES)
    costs = stage_costs(cfg, found.prompts, found.prompt_tokens, rates)
    problems = list(found.problems) + _schedules(cfg, found) + (check(planned, cap) if cap is not None else [])
    return PlanResult(cfg.name, found, planned, cap, costs, rates, problems, measured_pools(cfg))


def _schedules(cfg: RunConfig, found: Found) -> List[str]:
    """A stage whose data holds fewer pairs than one global batch cannot train (sampled stages: at most one pair per
    prompt)."""
    from rcs_ray.config import stage_train
    from rcs_ray.train.batches import schedule

    out = []
    for k in range(len(cfg.stages)):
        n = found.prompts.get(f"stages.{k}.data")
        t = stage_train(cfg, k)
        try:
            if n is not None:
                schedule(n, t, t.num_workers)
        except ValueError as exc:
            out.append(f"stages.{k}: {exc}")
    return out
