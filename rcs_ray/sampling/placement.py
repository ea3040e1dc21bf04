"""Where the generation and scorer hosts run (:mod:`rcs_ray.sampling.hosts`): Ray resources per host actor, and
placement groups for tensor parallelism.

- One GPU engine (``tensor_parallel_size == 1``): each generation host asks for ``sampling.num_gpus`` GPUs,
  ``sampling.num_cpus`` CPUs and the custom ``sampling.resources``; Ray places it on a node that has them.
- A tensor-parallel engine (``tensor_parallel_size = T > 1``): each generation actor gets its own placement group of
  T bundles, ``{"GPU": num_gpus}`` each (bundle 0 also holds the actor's CPUs and custom resources), packed by
  ``sampling.placement_strategy`` (``STRICT_PACK``: all T GPUs on one node, what TP over NVLink wants). The actor
  itself takes no GPU: it is scheduled into bundle 0 and captures its child tasks, so vLLM's Ray executor
  (``distributed_executor_backend="ray"``) starts its T workers inside the same group — the pattern of
  ``ray.data.llm``. A group is created with its host and removed with it (at the end of the stage's sampling), so
  the GPUs are free for the trainer that follows.
- Scorer hosts: ``objectives[i].num_gpus`` / ``num_cpus`` / ``resources`` of the first objective a scorer serves
  (a source that loads no model: its entry's ``cpus`` and no GPU).

Logical resources work the same way: ``ray start --num-gpus 2 --resources '{"gen": 1}'`` on a CPU machine places
the actors exactly as on a GPU cluster (the engines fall back to CPU), which is how the local cluster test checks it.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Callable, Dict, Optional

from rcs_ray.config import ObjectiveConfig, SamplingConfig
from rcs_ray.registry import RewardSourceSpec

_SERIAL = itertools.count()  # placement-group names must be unique


def _ray_resources(num_cpus: float, num_gpus: float, resources: Dict[str, float]) -> dict:
    args = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if resources:
        args["resources"] = dict(resources)
    return args


class _TensorParallelGroup:
    """A fresh placement group for one tensor-parallel generation host."""

    def __init__(self, sampling: SamplingConfig, key: str):
        self.bundles = [
            {
                "GPU": float(sampling.num_gpus),
                "CPU": float(sampling.num_cpus),
                **{k: float(v) for k, v in sampling.resources.items()},
            }
        ]
        self.bundles += [{"GPU": float(sampling.num_gpus)} for _ in range(sampling.tensor_parallel_size - 1)]
        self.strategy = sampling.placement_strategy
        self.key = key

    def __call__(self) -> dict:
        from ray.util import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        pg = placement_group(self.bundles, strategy=self.strategy, name=f"rcs-generate-{self.key}-{next(_SERIAL)}")
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            ),
            "_group": pg,
        }


def generation_remote_args(sampling: SamplingConfig) -> dict:
    """A generation host's Ray resources (with tensor parallelism: none of the GPUs, which its group's bundles hold;
    see the module docstring)."""
    gpus = 0 if sampling.tensor_parallel_size > 1 else sampling.num_gpus
    return _ray_resources(sampling.num_cpus, gpus, sampling.resources)


def tensor_parallel_group(sampling: SamplingConfig) -> Optional[_TensorParallelGroup]:
    """The placement-group maker of a tensor-parallel engine's hosts, else ``None``."""
    if sampling.tensor_parallel_size > 1:
        return _TensorParallelGroup(sampling, uuid.uuid4().hex[:8])
    return None


def generation_host_options(sampling: SamplingConfig) -> Callable[[], dict]:
    """A function giving each generation host's actor options; with tensor parallelism each call creates the host's
    placement group (under ``"_group"``, removed with the host)."""
    group = tensor_parallel_group(sampling)
    return lambda: {**generation_remote_args(sampling), **(group() if group is not None else {})}


def scorer_remote_args(objective: ObjectiveConfig, source: RewardSourceSpec) -> dict:
    """A scorer host's Ray resources: ``objective``'s, and the CPUs and GPUs its reward source's entry gives
    (:meth:`~rcs_ray.registry.RewardSourceSpec.actor_resources`: a source that loads no model, such as a rule, takes a
    quarter CPU and no GPU)."""
    return _ray_resources(*source.actor_resources(objective), objective.resources)


def scorer_host_options(objective: ObjectiveConfig, source: RewardSourceSpec) -> Callable[[], dict]:
    """A function giving each scorer host's actor options (:func:`scorer_remote_args`)."""
    return lambda: scorer_remote_args(objective, source)


def demand(args: dict) -> Dict[str, float]:
    """The Ray resources one host with actor options ``args`` holds."""
    out = {"CPU": float(args.get("num_cpus") or 0.0), "GPU": float(args.get("num_gpus") or 0.0)}
    out.update({k: float(v) for k, v in (args.get("resources") or {}).items()})
    return out
