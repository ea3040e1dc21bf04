"""The pluggable parts a config names, each declared by one entry, and where each is implemented.

One entry says everything the rest of the system needs to know about a part: the config checks take the names from
here (``train.loss``, ``sampling.engine``, ``objectives.N.kind``), the trainer and the sampling pipeline look the
entry up and call the implementation the same way for every part. The implementation is named by a
``"package.module:attr"`` string and imported only where it runs (as vLLM's model registry names its model classes),
so validating a config imports no torch, Ray or vLLM.

- :data:`LOSSES` -- preference losses: the loss function, the training settings its hyperparameters come from, the
  per-pair inputs it takes besides the log-probs, and the function that prepares both for a stage.
- :data:`ENGINES` -- generation engines; ``sampling.engine`` may also name any class as ``package.module:ClassName``.
- :data:`REWARD_SOURCES` -- reward sources: the scorer class per engine, the objective fields a source needs, which
  objectives share one scorer (one model load, one forward pass for all of them), the models it loads and how each is
  checked, its own config and plan checks, and what it takes from the policy (``from_stage``, the training length).

Selection strategies (``rc.strategy``) are plain numpy functions in :data:`rcs_ray.selection.STRATEGIES`.

Adding a part: write its implementation and add its entry here; nothing else changes.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
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
    "modpo": LossSpec(
        "rcs_ray.train.losses:modpo_loss",
        params=("modpo_weights",),
        inputs=("chosen_margin_rewards", "rejected_margin_rewards"),
        prepare="rcs_ray.train.margins:modpo_inputs",
    ),
    "spo": LossSpec(
        "rcs_ray.train.losses:spo_loss",
        params=("spo_alphas", "spo_reward_source", "spo_policies"),
        inputs=("prev_chosen_implicit", "prev_rejected_implicit"),
        prepare="rcs_ray.train.margins:spo_inputs",
    ),
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
    """A kind of reward source (``objectives.N.kind``): everything outside its scorer that depends on the kind.

    The hooks are ``"package.module:function"`` strings, imported only where they run (config checks import no
    torch: a ``check_config`` hook must not either). The entry is looked up in the process that builds the job (the
    driver: config checks, ``rcs-ray plan``, the job's preflight); each scorer's
    :class:`~rcs_ray.sampling.scorers.ScorerSpec` carries its entry to the scorer actors, which import ``scorers``
    by path and never look the registry up, so an entry added at runtime works on Ray as long as its modules are
    importable by the workers.

    Attributes:
        scorers: engine name -> scorer class, built as ``Class(objectives, settings)`` with the objectives it serves
            (:class:`rcs_ray.sampling.job.ScorerSettings`) and scoring with ``score(prompts, responses) -> (N, J)``;
            an objective's ``engine`` must be one of these keys. A source that loads no model has the one key
            ``None`` and ignores ``engine``.
        requires: objective fields that must be set.
        family: objectives of one family whose ``shared_by`` fields are equal share one scorer (``""``: the kind's
            own name).
        shared_by: the objective fields that identify one scorer instance (``()``: one scorer for the whole family).
        models: the objective fields naming the models it loads, in order: each is resolved (local, URI or Hub ID),
            fetched by the scorer actor, checked by ``check_model`` before any load, and makes the source a model
            one (the objective's loading settings are checked, its actors take ``num_gpus`` / ``num_cpus``, the plan
            counts its tokens). ``()``: a source that loads no model.
        check_model: ``(objective, path, key) -> None``: checks one local model of ``models`` without loading
            weights (the job's preflight and ``rcs-ray plan``); raises ``RcsInputError`` naming ``key``.
        check_config: ``(objective, checker, key) -> None``: the kind's own config checks, after the common ones
            (:meth:`rcs_ray.config.objectives.ObjectiveConfig.check`); fails with ``checker.fail(key.field, why)``.
        check_plan: ``(objective, key) -> None``: what ``rcs-ray plan`` checks besides the models (a rule's
            function imports); raises ``RcsInputError``.
        from_stage: the fields ``from_stage: j`` fills with the workflow's own policies (pi_j, pi_{j-1}), which are
            then not required; ``()``: the source takes no ``from_stage``.
        policy_text: it scores the policy's own text as training reads it: ``max_length`` defaults to
            ``train.max_length``.
        defaults: objective fields set to these values when left ``None`` (e.g. implicit ``beta``).
        cpus: CPUs per actor of a source that loads no model (it never takes a GPU).
        options: settings its implementation reads (classifier family: ``auto_output``, what ``output: auto`` reads
            from a multi-objective reward model).
    """

    scorers: Dict[Optional[str], str]
    requires: Tuple[str, ...] = ()
    family: str = ""
    shared_by: Tuple[str, ...] = ()
    models: Tuple[str, ...] = ()
    check_model: Optional[str] = None
    check_config: Optional[str] = None
    check_plan: Optional[str] = None
    from_stage: Tuple[str, ...] = ()
    policy_text: bool = False
    defaults: Dict[str, Any] = field(default_factory=dict)
    cpus: float = 0.25
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def loads_model(self) -> bool:
        return bool(self.models)

    def scorer(self, engine: str) -> str:
        """The scorer class's path for ``engine`` (``None``'s for a source that loads no model)."""
        return self.scorers[engine if self.loads_model else None]

    def group(self, objective) -> tuple:
        """The key of the scorer ``objective`` is served by: objectives with equal keys share one scorer."""
        return (self.family or objective.kind, *(getattr(objective, f) for f in self.shared_by))

    def actor_resources(self, objective) -> Tuple[float, float]:
        """``(num_cpus, num_gpus)`` of one scorer actor: the objective's own for a model source, else ``cpus`` and
        no GPU."""
        if self.loads_model:
            return objective.num_cpus, objective.num_gpus
        return self.cpus, 0.0

    def hook(self, name: str):
        """The hook ``name`` (``check_model``, ``check_config``, ``check_plan``) imported, or ``None``."""
        path = getattr(self, name)
        return resolve(path, name) if path else None


_CLASSIFIER = dict(
    scorers={
        "hf": "rcs_ray.sampling.scorers:ClassifierScorer",
        "vllm": "rcs_ray.sampling.scorers:VLLMClassifierScorer",
    },
    requires=("model",),
    family="classifier",
    shared_by=("model", "engine"),
    models=("model",),
    check_model="rcs_ray.modeling.preflight:check_reward_model_of",
    check_config="rcs_ray.config.objectives:check_classifier",
)

REWARD_SOURCES: Dict[str, RewardSourceSpec] = {
    "rule": RewardSourceSpec(
        scorers={None: "rcs_ray.sampling.scorers:RuleScorer"},
        requires=("function",),
        family="rule",
        check_config="rcs_ray.config.objectives:check_rule",
        check_plan="rcs_ray.planning.checks:check_rule_function",
    ),
    "classifier": RewardSourceSpec(**_CLASSIFIER),
    "multi_head": RewardSourceSpec(**_CLASSIFIER, options={"auto_output": "rewards"}),
    "implicit": RewardSourceSpec(
        scorers={"hf": "rcs_ray.sampling.scorers:ImplicitRewardScorer"},
        requires=("model", "reference"),
        family="implicit",
        shared_by=("model", "reference"),
        models=("model", "reference"),
        check_model="rcs_ray.modeling.preflight:check_causal_lm_of",
        from_stage=("model", "reference"),
        policy_text=True,
        defaults={"beta": 0.1},
    ),
    "judge": RewardSourceSpec(
        scorers={"hf": "rcs_ray.sampling.judges:JudgeScorer", "vllm": "rcs_ray.sampling.judges:VLLMJudgeScorer"},
        requires=("model",),
        family="judge",
        shared_by=("model", "engine"),
        models=("model",),
        check_model="rcs_ray.modeling.preflight:check_causal_lm_of",
        check_config="rcs_ray.config.objectives:check_judge",
    ),
}

__all__ = ["DOTTED", "ENGINES", "LOSSES", "LossSpec", "REWARD_SOURCES", "RewardSourceSpec", "is_engine_name", "resolve"]
