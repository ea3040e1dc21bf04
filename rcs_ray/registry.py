"""The pluggable parts a config names, each declared by one entry, and where each is implemented.

One entry says everything the rest of the system needs to know about a part: the config checks take the names from
here (``train.loss``, ``sampling.engine``, ``objectives.N.kind``), the trainer and the sampling pipeline look the
entry up and call the implementation the same way for every part. The implementation is named by a
``"package.module:attr"`` string and imported only where it runs (as vLLM's model registry names its model classes),
so validating a config imports no torch, Ray or vLLM.

- :data:`LOSSES` -- preference losses: the loss function, the training settings its hyperparameters come from, the
  per-pair inputs it takes besides the log-probs, and the function that prepares both for a stage.
- :data:`ENGINES` -- generation engines; ``sampling.engine`` may also name any class as ``package.module:ClassName``.
- :data:`REWARD_SOURCES` -- reward sources: the scorer class per engine, the objective fields a source needs, and
  which objectives share one scorer (one model load, one forward pass for all of them).

Selection strategies (``rc.strategy``) are plain numpy functions in :data:`rcs_ray.selection.STRATEGIES`.

Adding a part: write its implementation and add its entry here; nothing else changes.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

# "package.module:attr" -- a custom engine, a rule reward function, an implementation named by an entry below.
DOTTED = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def resolve(path: str, what: str) -> Any:
    """Import ``package.module:attr``.

    Raises:
        ImportError: the module cannot be imported or has no such attribute (the message names ``what``).
    """
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"{what}: cannot import module {module_name!r} of {path!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{what}: module {module_name!r} has no attribute {attr!r}") from None


# ----------------------------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class LossSpec:
    """A preference loss.

    Attributes:
        function: ``(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=...,
            **params, **inputs) -> (loss, metrics)`` (see :mod:`rcs_ray.train.losses`).
        params: the ``train`` settings (besides ``beta``) that set its hyperparameters.
        inputs: its keyword arguments for the per-pair ``(B, M)`` chosen / rejected margin columns; ``None``: it
            takes none.
        prepare: ``(LossContext) -> LossInputs``: the hyperparameters and margin columns of one stage
            (:mod:`rcs_ray.train.margins`); ``None``: the loss needs nothing beyond ``beta``.
    """
    function: str
    params: Tuple[str, ...] = ()
    inputs: Optional[Tuple[str, str]] = None
    prepare: Optional[str] = None

    def load(self):
        return resolve(self.function, "loss")


LOSSES: Dict[str, LossSpec] = {
    "dpo": LossSpec("rcs_ray.train.losses:dpo_loss"),
    "modpo": LossSpec("rcs_ray.train.losses:modpo_loss", params=("modpo_weights",),
                      inputs=("chosen_margin_rewards", "rejected_margin_rewards"),
                      prepare="rcs_ray.train.margins:modpo_inputs"),
    "spo": LossSpec("rcs_ray.train.losses:spo_loss", params=("spo_alphas", "spo_reward_source", "spo_policies"),
                    inputs=("prev_chosen_implicit", "prev_rejected_implicit"),
                    prepare="rcs_ray.train.margins:spo_inputs"),
}


# ----------------------------------------------------------------------------------------------- engines
ENGINES: Dict[str, str] = {
    "hf": "rcs_ray.sampling.engines:HFEngine",
    "vllm": "rcs_ray.sampling.engines:VLLMEngine",
}


def is_engine_name(name: Any) -> bool:
    """A built-in engine name, or a custom engine class ``package.module:ClassName``."""
    return name in ENGINES or (isinstance(name, str) and DOTTED.fullmatch(name) is not None)


# ----------------------------------------------------------------------------------------------- reward sources
@dataclass(frozen=True)
class RewardSourceSpec:
    """A kind of reward source (``objectives.N.kind``).

    Attributes:
        scorers: engine name -> scorer class, built as ``Class(objectives, **settings)`` with the objectives it
            serves; an objective's ``engine`` must be one of these keys (``None``: the source loads no model and
            ignores ``engine``).
        requires: objective fields that must be set.
        family: objectives of one family whose ``shared_by`` fields are equal share one scorer.
        shared_by: the objective fields that identify one scorer instance (``()``: one scorer for the whole family).
    """
    scorers: Dict[Optional[str], str]
    requires: Tuple[str, ...] = ()
    family: str = ""
    shared_by: Tuple[str, ...] = ()
    loads_model: bool = True

    def scorer(self, engine: str) -> str:
        return self.scorers[engine if self.loads_model else None]


_CLASSIFIER = RewardSourceSpec(
    scorers={"hf": "rcs_ray.sampling.scorers:ClassifierScorer", "vllm": "rcs_ray.sampling.scorers:VLLMClassifierScorer"},
    requires=("model",), family="classifier", shared_by=("model", "engine"))

REWARD_SOURCES: Dict[str, RewardSourceSpec] = {
    "rule": RewardSourceSpec(scorers={None: "rcs_ray.sampling.scorers:RuleScorer"}, requires=("function",),
                             family="rule", loads_model=False),
    "classifier": _CLASSIFIER,
    "multi_head": _CLASSIFIER,
    "implicit": RewardSourceSpec(scorers={"hf": "rcs_ray.sampling.scorers:ImplicitRewardScorer"},
                                 requires=("model", "reference"), family="implicit", shared_by=("model", "reference")),
    "judge": RewardSourceSpec(scorers={"hf": "rcs_ray.sampling.judges:JudgeScorer",
                                       "vllm": "rcs_ray.sampling.judges:VLLMJudgeScorer"},
                              requires=("model",), family="judge", shared_by=("model", "engine")),
}

__all__ = ["DOTTED", "ENGINES", "LOSSES", "LossSpec", "REWARD_SOURCES", "RewardSourceSpec", "is_engine_name", "resolve"]
