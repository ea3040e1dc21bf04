"""Where the generation and scorer actors run: Ray resources per actor, and placement groups for tensor parallelism.

- One GPU engine (``tensor_parallel_size == 1``): each generation actor asks for ``sampling.num_gpus`` GPUs,
  ``sampling.num_cpus`` CPUs and the custom ``sampling.resources``; Ray places it on a node that has them.
- A tensor-parallel engine (``tensor_parallel_size = T > 1``): each generation actor gets its own placement group of
  T bundles, ``{"GPU": num_gpus}`` each (bundle 0 also holds the actor's CPUs and custom resources), packed by
  ``sampling.placement_strategy`` (``STRICT_PACK``: all T GPUs on one node, what TP over NVLink wants). The actor
  itself takes no GPU: it is scheduled into bundle 0 and captures its child tasks, so vLLM's Ray executor
  (``distributed_executor_backend="ray"``) starts its T workers inside the same group — the pattern of
  ``ray.data.llm``. The groups are created by Ray Data when it starts an actor (``ray_remote_args_fn``, on the
  driver) and removed by :func:`release_placement_groups` once the dataset has been consumed, so the GPUs are free
  for the trainer that follows.
- Scorer actors: ``objectives[i].num_gpus`` / ``num_cpus`` / ``resources`` of the first objective a scorer serves
  (a source that loads no model: its entry's ``cpus`` and no GPU).

Logical resources work the same way: ``ray start --num-gpus 2 --resources '{"gen": 1}'`` on a CPU machine places
the actors exactly as on a GPU cluster (the engines fall back to CPU), which is how the local cluster test checks it.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Dict, List

from rcs_ray.config import ObjectiveConfig, SamplingConfig
from rcs_ray.registry import RewardSourceSpec

_LOCK = threading.Lock()
_GROUPS: list = []  # placement groups created in this (driver) process, not yet removed
_SERIAL = itertools.count()  # placement-group names must be unique


def _ray_resources(num_cpus: float, num_gpus: float, resources: Dict[str, float]) -> dict:
    args = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if resources:
        args["resources"] = dict(resources)
    return args


class _TensorParallelGroup:
    """``ray_remote_args_fn`` of the generation pool with TP > 1: a fresh placement group per actor."""

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

        with _LOCK:
            pg = placement_group(self.bundles, strategy=self.strategy, name=f"rcs-generate-{self.key}-{next(_SERIAL)}")
            _GROUPS.append(pg)
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
            )
        }


def generation_remote_args(sampling: SamplingConfig) -> dict:
    """``map_batches`` keyword arguments that place the generation actors (see the module docstring)."""
    if sampling.tensor_parallel_size > 1:
        args = _ray_resources(sampling.num_cpus, 0, sampling.resources)
        args["ray_remote_args_fn"] = _TensorParallelGroup(sampling, uuid.uuid4().hex[:8])
        return args
    return _ray_resources(sampling.num_cpus, sampling.num_gpus, sampling.resources)


def scorer_remote_args(objective: ObjectiveConfig, source: RewardSourceSpec) -> dict:
    """``map_batches`` keyword arguments that place a scorer's actors: ``objective``'s resources, and the CPUs and
    GPUs its reward source's entry gives (:meth:`~rcs_ray.registry.RewardSourceSpec.actor_resources`: a source that
    loads no model, such as a rule, takes a quarter CPU and no GPU)."""
    return _ray_resources(*source.actor_resources(objective), objective.resources)


def release_placement_groups() -> List[str]:
    """Remove every placement group this process created for generation actors; returns their ids."""
    import ray
    from ray.util import remove_placement_group

    with _LOCK:
        groups = list(_GROUPS)
        _GROUPS.clear()
    if groups and ray.is_initialized():
        for pg in groups:
            try:
                remove_placement_group(pg)
            except Exception:  # noqa: BLE001 - already gone with its job
                pass
    return [pg.id.hex() for pg in groups]
