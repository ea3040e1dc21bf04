"""A sampling job: everything one pass of generate -> score (-> RC filter) needs, resolved once from the run config.

The sampling pipeline and the evaluation consume the same :class:`SamplingJob`; neither reads the rest of the
:class:`~rcs_ray.config.RunConfig`. :func:`stage_job` builds the job of a sampled stage (the objectives scored at
stage k, its RC settings and target), :func:`eval_job` the job of a held-out evaluation (every objective, no
selection).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from rcs_ray.config import (ModelConfig, ObjectiveConfig, RCConfig, RunConfig, SamplingConfig, TinyWorldConfig,
                            stage_objectives)
from rcs_ray.paths import resolve_model_dir


@dataclass(frozen=True)
class ScorerSettings:
    """How the scorers load and read: the policy's dtype, remote-code setting and prompt rule, and a token limit."""
    dtype: str = "float32"
    trust_remote_code: bool = False
    max_length: int = 1024                 # tokens of prompt + response an implicit-reward scorer reads
    use_chat_template: bool = True         # the policy's prompt rule (implicit rewards score the policy's text)


@dataclass(frozen=True)
class SamplingJob:
    """One sampling pass.

    Attributes:
        policy: the policy to sample from, paths resolved (local directories or URIs).
        objectives: the objectives to score, in order, model paths resolved.
        sampling: engine, n, temperature, batch sizes, actor pools.
        scorers: how the scorers load and tokenize.
        target: the objective pairs are selected for; ``None``: no selection (evaluation).
        rc: the selection settings (with ``target``).
    """
    policy: ModelConfig
    objectives: Tuple[ObjectiveConfig, ...]
    sampling: SamplingConfig
    scorers: ScorerSettings = ScorerSettings()
    target: Optional[str] = None
    rc: Optional[RCConfig] = None

    @property
    def objective_names(self) -> list:
        return [o.name for o in self.objectives]


def _resolve_objective(obj: ObjectiveConfig, key: str, tinyworld: TinyWorldConfig) -> ObjectiveConfig:
    if obj.kind != "rule":
        obj = dataclasses.replace(obj, model=resolve_model_dir(obj.model, f"{key}.model", tinyworld))
    if obj.kind == "implicit":
        obj = dataclasses.replace(obj, reference=resolve_model_dir(obj.reference, f"{key}.reference", tinyworld))
    return obj


def _job(cfg: RunConfig, objectives, policy: Optional[str], **selection) -> SamplingJob:
    tw = cfg.tinyworld
    model = dataclasses.replace(cfg.policy, path=resolve_model_dir(policy or cfg.policy.path, "policy.path", tw))
    if model.tokenizer:
        model = dataclasses.replace(model, tokenizer=resolve_model_dir(model.tokenizer, "policy.tokenizer", tw))
    names = cfg.objective_names
    resolved = tuple(_resolve_objective(o, f"objectives.{names.index(o.name)}", tw) for o in objectives)
    scorers = ScorerSettings(dtype=cfg.policy.dtype, trust_remote_code=cfg.policy.trust_remote_code,
                             max_length=cfg.train.max_length, use_chat_template=cfg.policy.chat_template)
    return SamplingJob(policy=model, objectives=resolved, sampling=cfg.sampling, scorers=scorers, **selection)


def stage_job(cfg: RunConfig, stage: int, policy: Optional[str] = None) -> SamplingJob:
    """The job of sampled stage ``stage`` (0-based): its scored objectives, RC settings and target.

    Args:
        cfg: the run config.
        stage: 0-based stage index.
        policy: the policy to sample from (default ``policy.path``), e.g. the previous stage's model.

    Raises:
        RcsInputError: a model path that does not exist.
    """
    st = cfg.stages[stage]
    return _job(cfg, stage_objectives(cfg, stage), policy, target=st.objective, rc=st.rc)


def eval_job(cfg: RunConfig, policy: str) -> SamplingJob:
    """The job of a held-out evaluation of ``policy``: every objective, no selection."""
    return _job(cfg, list(cfg.objectives), policy)
