"""A simulated reward *model*: the rewards of :mod:`benchmarks.sim` served by a source that loads a model.

A rule reward loads nothing, so it cannot show what a reward model's start-up costs. ``kind: sim_rm`` is a reward
source registered at runtime (:func:`register`, in the driver before the config is read; the scorer actors import
this module by path, so ``benchmarks`` must be importable by the workers): it is a *model* source like
``classifier`` (``models: ("model",)``: the objective's ``model`` is resolved and fetched, its actors take the
objective's ``num_gpus`` / ``num_cpus``, one pool per model), and its scorer sleeps ``RCS_SIM_RM_LOAD_S`` once when
its actor starts (logged as a ``load`` event of pool ``rm:<model dir name>``, :func:`benchmarks.sim.simulate_load`),
then scores with the objective's ``function`` (e.g. ``benchmarks.sim:reward_a``, which costs the time of one
forward pass, ``RCS_SIM_SCORE_TOKENS_PER_S``). ``model`` may name any existing directory: nothing is read from it.

    objectives:
      - {name: a, kind: sim_rm, model: /tmp/rm_a, function: "benchmarks.sim:reward_a"}
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

from rcs_ray import registry
from rcs_ray.registry import RewardSourceSpec

KIND = "sim_rm"
SIM_RM = RewardSourceSpec(
    scorers={"hf": "benchmarks.sim_rm:SimRewardModel", "vllm": "benchmarks.sim_rm:SimRewardModel"},
    requires=("model", "function"),
    family=KIND,
    shared_by=("model",),
    models=("model",),
    check_config="benchmarks.sim_rm:check_sim_rm",
)


def register() -> None:
    """Add ``kind: sim_rm`` to this process's registry (before any config naming it is read)."""
    registry.REWARD_SOURCES[KIND] = SIM_RM


def check_sim_rm(objective, checker, key: str) -> None:
    """Its own config check: the reward function is ``package.module:function``."""
    if not registry.DOTTED.fullmatch(objective.function or ""):
        checker.fail(f"{key}.function", f"needs 'package.module:function', got {objective.function!r}")


def pool_name(model: str) -> str:
    """The pool's name in the load log: ``rm:<the model dir's name>``."""
    return "rm:" + os.path.basename(os.path.normpath(model))


class SimRewardModel:
    """``Scorer(objectives, settings)``: loads (sleeps ``RCS_SIM_RM_LOAD_S``, logged) once per actor, then scores
    each objective with its ``function``, ``sign`` applied."""

    def __init__(self, objectives: Sequence, settings=None):
        from benchmarks.sim import _env_float, log_event, simulate_load
        from rcs_ray.sampling.scorers import load_function

        self.pool = pool_name(objectives[0].model)
        self.log_event = log_event
        simulate_load(self.pool, _env_float("RCS_SIM_RM_LOAD_S", 0.0), objectives=[o.name for o in objectives])
        self.functions = [load_function(o.function, f"objective {o.name!r}") for o in objectives]
        self.signs = np.array([o.sign for o in objectives], dtype=np.float64)

    def score(self, prompts: Sequence[Any], responses: Sequence[Any]) -> np.ndarray:
        t0 = time.time()
        texts = [r if isinstance(r, str) else r[-1]["content"] for r in responses]
        out = np.array([[f(p, r) for f in self.functions] for p, r in zip(prompts, texts)], dtype=np.float64)
        self.log_event({"event": "score", "pool": self.pool, "t0": t0, "t1": time.time(), "n": len(texts)})
        return out.reshape(len(texts), len(self.functions)) * self.signs[None, :]
