"""The dry run's resource plan: what each phase of a config asks Ray for, and whether the capacity holds it.

Phases run one after another, so each must fit alone: a stage's **sampling** (generation actors, each a
tensor-parallel group of ``tensor_parallel_size`` x ``num_gpus`` GPUs, beside one pool per scorer), its **reference
pass** when it runs apart from the training workers (:meth:`rcs_ray.config.TrainConfig.separate_reference_pass`)
and its **training** (``num_workers`` workers), and the **eval** (generation and every objective's scorer).
Capacity is the attached cluster's (``ray.address``: ``ray.cluster_resources()``, and each node's GPUs for a
tensor-parallel group that must sit on one node), else ``--gpus`` / ``--cpus``, else this machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from rcs_ray.config import RunConfig, stage_objectives, stage_train


@dataclass
class Pool:
    """``actors`` actors that each ask for ``gpus``, ``cpus`` and custom ``resources``."""

    what: str
    actors: int
    gpus: float
    cpus: float
    resources: Dict[str, float] = field(default_factory=dict)
    one_node_gpus: float = 0.0  # GPUs one actor needs on a single node (a STRICT_PACK TP group)

    def total(self, name: str) -> float:
        per = {"GPU": self.gpus, "CPU": self.cpus}.get(name, self.resources.get(name, 0.0))
        return self.actors * per


@dataclass
class Phase:
    name: str
    pools: List[Pool]

    def total(self, name: str) -> float:
        return sum(p.total(name) for p in self.pools)

    def names(self) -> List[str]:
        return sorted({"GPU", "CPU", *(k for p in self.pools for k in p.resources)})


@dataclass
class Capacity:
    source: str  # "cluster <address>" | "the capacity given ..." | "this machine"
    resources: Dict[str, float]
    node_gpus: List[float] = field(default_factory=list)  # GPUs per node (cluster only)


def _generation(cfg: RunConfig) -> Pool:
    s = cfg.sampling
    tp = max(1, s.tensor_parallel_size)
    return Pool(
        f"generation ({s.engine}, TP {tp})",
        s.num_actors,
        s.num_gpus * tp,
        s.num_cpus,
        dict(s.resources),
        one_node_gpus=s.num_gpus * tp if tp > 1 and s.placement_strategy == "STRICT_PACK" else 0.0,
    )


def _scorers(objectives) -> List[Pool]:
    from rcs_ray.sampling.scorers import plan_scorers

    pools = []
    for spec in plan_scorers(objectives):
        first = spec.objectives[0]
        cpus, gpus = spec.source.actor_resources(first)
        pools.append(Pool(f"scorer {spec.label}", first.num_actors, gpus, cpus, dict(first.resources)))
    return pools


def phases(cfg: RunConfig) -> List[Phase]:
    """Every phase of the workflow (and the eval), in order, with the pools each starts."""
    out = []
    for k, st in enumerate(cfg.stages):
        if st.sample:
            out.append(Phase(f"stage {k + 1} sampling", [_generation(cfg), *_scorers(stage_objectives(cfg, k))]))
        t = stage_train(cfg, k)
        gpu = 1.0 if t.use_gpu else 0.0
        if t.separate_reference_pass(k):  # else the training workers compute the reference log-probs
            out.append(
                Phase(f"stage {k + 1} reference pass", [Pool("reference log-probs", t.ref_num_actors, gpu, 1.0)])
            )
        out.append(
            Phase(
                f"stage {k + 1} training",
                [Pool(f"train workers (ZeRO-{t.zero_stage})", t.num_workers, gpu, 1.0, dict(t.resources_per_worker))],
            )
        )
    if cfg.eval.prompts.path:
        judge = [cfg.eval.judge] if cfg.eval.judge is not None else []
        out.append(Phase("eval", [_generation(cfg), *_scorers(list(cfg.objectives) + judge)]))
    return out


def capacity(cfg: RunConfig, gpus: Optional[float] = None, cpus: Optional[float] = None) -> Capacity:
    """The cluster's resources when ``ray.address`` is set (it is attached for this), else the given or local ones.

    Raises:
        RcsInputError: ``ray.address`` cannot be reached.
    """
    if cfg.ray.address and gpus is None and cpus is None:
        import ray

        from rcs_ray.errors import RcsInputError

        try:
            if not ray.is_initialized():
                ray.init(address=cfg.ray.address, log_to_driver=False)
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            return Capacity(
                f"cluster {cfg.ray.address}",
                dict(ray.cluster_resources()),
                [float(n.get("Resources", {}).get("GPU", 0)) for n in nodes],
            )
        except Exception as exc:  # noqa: BLE001 - any connection failure is one line
            raise RcsInputError(
                f"ray.address: cannot attach to {cfg.ray.address} to read its resources "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); pass --gpus / "
                f"--cpus to plan without it"
            ) from None
    if gpus is not None or cpus is not None:
        return Capacity(
            "the capacity given (--gpus / --cpus)", {"GPU": float(gpus or 0), "CPU": float(cpus or os.cpu_count() or 1)}
        )
    import torch

    local_gpus = float(torch.cuda.device_count()) if torch.cuda.is_available() else 0.0
    return Capacity(
        "this machine", {"GPU": local_gpus, "CPU": float(cfg.ray.num_cpus or os.cpu_count() or 1)}, [local_gpus]
    )


def check(plan: List[Phase], cap: Capacity) -> List[str]:
    """One line per phase and resource the capacity cannot hold."""
    problems = []
    for phase in plan:
        for name in phase.names():
            need, have = phase.total(name), cap.resources.get(name, 0.0)
            if need > have + 1e-9:
                parts = " + ".join(
                    f"{p.actors} x {p.total(name) / p.actors:g} ({p.what})"
                    for p in phase.pools
                    if p.actors and p.total(name)
                )
                hint = "" if name in ("GPU", "CPU") else " (a custom resource: declare it on the nodes)"
                problems.append(f"{phase.name} needs {need:g} {name} ({parts}); {cap.source} has {have:g}{hint}")
        for pool in phase.pools:
            if pool.one_node_gpus and cap.node_gpus and max(cap.node_gpus) < pool.one_node_gpus:
                problems.append(
                    f"{phase.name}: each {pool.what} actor needs {pool.one_node_gpus:g} GPUs on one node "
                    f"(STRICT_PACK) but the largest node of {cap.source} has {max(cap.node_gpus):g}"
                )
    return problems
