"""A sampling job: everything one pass of generate -> score (-> RC filter) needs, resolved once from the run config.

The sampling pipeline and the evaluation consume the same :class:`SamplingJob`; neither reads the rest of the
:class:`~rcs_ray.config.RunConfig`. :func:`stage_job` builds the job of a sampled stage (the objectives scored at
stage k, its RC settings and target), :func:`eval_job` the job of a held-out evaluation (every objective and the
judge, no selection). Building a job resolves every model path (local, URI or Hub ID) and checks every model
before anything loads it (:func:`preflight`): a checkpoint that lacks weights, an output or head a reward model does
not have, or a causal LM given as a reward model stops here with one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from rcs_ray import registry
from rcs_ray.config import (
    ModelConfig,
    ObjectiveConfig,
    RCConfig,
    RunConfig,
    SamplingConfig,
    TinyWorldConfig,
    stage_objectives,
    stage_train,
)
from rcs_ray.user_paths import resolve_model_dir


@dataclass(frozen=True)
class ScorerSettings:
    """How one scorer loads its model and reads the text: the objective's own settings, not the policy's.

    Attributes:
        dtype, trust_remote_code, tokenizer, model_kwargs, engine_kwargs: the objective's loading settings.
        max_length: tokens of prompt + response the model reads (longer: the start of the prompt is cut); ``None``:
            the model's limit.
        chat_template: ``auto`` | ``own`` | ``policy`` | ``none`` | a Jinja template (see
            :func:`rcs_ray.sampling.scorers.chat_rule`).
        policy_chat_template, policy_system_prompt, policy_chat_template_kwargs: the policy's prompt rule
            (``policy.chat_template``, ``policy.system_prompt``, ``policy.chat_template_kwargs``; see
            :meth:`policy_rule`): how an implicit reward (``auto`` / ``policy``) or a model with ``chat_template:
            policy`` reads the policy's text.
        policy_tokenizer: where the policy's template lives (``chat_template: policy`` for a reward model).
    """

    dtype: str = "float32"
    trust_remote_code: bool = False
    tokenizer: Optional[str] = None
    max_length: Optional[int] = None
    chat_template: str = "auto"
    policy_chat_template: bool = True
    policy_tokenizer: Optional[str] = None
    model_kwargs: Dict = field(default_factory=dict)
    engine_kwargs: Dict = field(default_factory=dict)
    policy_system_prompt: Optional[str] = None
    policy_chat_template_kwargs: Dict = field(default_factory=dict)

    def policy_rule(self):
        """The policy's :class:`~rcs_ray.prompting.PromptRule`."""
        from rcs_ray.prompting import PromptRule

        return PromptRule(
            bool(self.policy_chat_template), self.policy_system_prompt, dict(self.policy_chat_template_kwargs)
        )


@dataclass(frozen=True)
class SamplingJob:
    """One sampling pass.

    Attributes:
        policy: the policy to sample from, paths resolved (local directories or URIs).
        objectives: the objectives to score, in order, model paths resolved.
        sampling: engine, n, temperature, batch sizes, actor pools, engine kwargs.
        scorers: objective name -> how its scorer loads and reads.
        target: the objective pairs are selected for; ``None``: no selection (evaluation).
        rc: the selection settings (with ``target``).
    """

    policy: ModelConfig
    objectives: Tuple[ObjectiveConfig, ...]
    sampling: SamplingConfig
    scorers: Dict[str, ScorerSettings] = field(default_factory=dict)
    target: Optional[str] = None
    rc: Optional[RCConfig] = None

    @property
    def objective_names(self) -> list:
        return [o.name for o in self.objectives]

    def settings(self, objective: ObjectiveConfig) -> ScorerSettings:
        return self.scorers.get(objective.name, ScorerSettings())


def _from_stage(obj: ObjectiveConfig, cfg: RunConfig, chain) -> ObjectiveConfig:
    """An objective's models from the workflow's policy chain: its source's ``from_stage`` fields (an implicit
    reward's ``model`` and ``reference``) get pi_j (after stage j) and pi_{j-1}, scaled by stage j's own beta unless
    the objective sets one."""
    j = obj.from_stage
    beta = obj.beta if obj.beta is not None else stage_train(cfg, j - 1).beta
    fields = registry.REWARD_SOURCES[obj.kind].from_stage
    return dataclasses.replace(obj, **dict(zip(fields, (chain[j], chain[j - 1]))), beta=beta)


def policy_chain(cfg: RunConfig, upto: int) -> list:
    """pi_0 .. pi_upto from the run layout: ``policy.path``, then each stage's trained model (for a command run
    outside the workflow, which passes the policies it trained)."""
    from rcs_ray import storage
    from rcs_ray.errors import RcsInputError
    from rcs_ray.run_layout import RunLayout

    chain = [resolve_model_dir(cfg.policy.path, "policy.path", cfg.tinyworld)]
    for j in range(1, upto + 1):
        path = RunLayout(cfg.output_dir).stage(j - 1).train.model
        if not storage.isdir(path):
            raise RcsInputError(
                f"an implicit reward from stage {j} needs its trained policy {path} (missing): train stage {j} first"
            )
        chain.append(storage.absolute(path))
    return chain


def _resolve_objective(obj: ObjectiveConfig, key: str, tinyworld: TinyWorldConfig) -> ObjectiveConfig:
    """``obj`` with its source's ``defaults`` filled in and the paths of its ``models`` and tokenizer resolved."""
    source = registry.REWARD_SOURCES[obj.kind]
    unset = {name: value for name, value in source.defaults.items() if getattr(obj, name) is None}
    obj = dataclasses.replace(obj, **unset)
    for name in source.models:
        obj = dataclasses.replace(obj, **{name: resolve_model_dir(getattr(obj, name), f"{key}.{name}", tinyworld)})
    if obj.tokenizer:
        obj = dataclasses.replace(obj, tokenizer=resolve_model_dir(obj.tokenizer, f"{key}.tokenizer", tinyworld))
    return obj


def _policy_tokenizer(obj: ObjectiveConfig, policy: ModelConfig, policy_text: bool) -> Optional[str]:
    """Where a reward model reads the policy's template from, only where it does (``chat_template: policy`` on a
    model that does not score the policy's own text): otherwise each stage's new policy would make the stage's reward
    models look new to the hosts that keep them (:mod:`rcs_ray.sampling.hosts`)."""
    return (policy.tokenizer or policy.path) if obj.chat_template == "policy" and not policy_text else None


def scorer_settings(obj: ObjectiveConfig, policy: ModelConfig, train_max_length: int) -> ScorerSettings:
    """The settings of ``obj``'s scorer; a source that scores the policy's text as training reads it (``policy_text``:
    an implicit reward) reads up to ``train_max_length`` tokens by default, as training does."""
    policy_text = registry.REWARD_SOURCES[obj.kind].policy_text
    max_length = obj.max_length if obj.max_length is not None else (train_max_length if policy_text else None)
    return ScorerSettings(
        dtype=obj.dtype,
        trust_remote_code=obj.trust_remote_code,
        tokenizer=obj.tokenizer,
        max_length=max_length,
        chat_template=obj.chat_template,
        policy_chat_template=policy.chat_template,
        policy_tokenizer=_policy_tokenizer(obj, policy, policy_text),
        model_kwargs=dict(obj.model_kwargs),
        engine_kwargs=dict(obj.engine_kwargs),
        policy_system_prompt=policy.system_prompt,
        policy_chat_template_kwargs=dict(policy.chat_template_kwargs),
    )


def _job(
    cfg: RunConfig, objectives, policy: Optional[str], keys: Dict[str, str], chain=None, **selection
) -> SamplingJob:
    tw = cfg.tinyworld
    if any(o.from_stage for o in objectives):
        chain = list(chain) if chain else policy_chain(cfg, max(o.from_stage or 0 for o in objectives))
        objectives = [_from_stage(o, cfg, chain) if o.from_stage else o for o in objectives]
    model = dataclasses.replace(cfg.policy, path=resolve_model_dir(policy or cfg.policy.path, "policy.path", tw))
    if model.tokenizer:
        model = dataclasses.replace(model, tokenizer=resolve_model_dir(model.tokenizer, "policy.tokenizer", tw))
    resolved = tuple(_resolve_objective(o, keys[o.name], tw) for o in objectives)
    scorers = {o.name: scorer_settings(o, model, cfg.train.max_length) for o in resolved}
    job = SamplingJob(policy=model, objectives=resolved, sampling=cfg.sampling, scorers=scorers, **selection)
    preflight(job, keys)
    return job


def _keys(cfg: RunConfig) -> Dict[str, str]:
    return {o.name: f"objectives.{i}" for i, o in enumerate(cfg.objectives)}


def stage_job(cfg: RunConfig, stage: int, policy: Optional[str] = None, chain=None) -> SamplingJob:
    """The job of sampled stage ``stage`` (0-based): its scored objectives, RC settings and target.

    Args:
        cfg: the run config.
        stage: 0-based stage index.
        policy: the policy to sample from (default ``policy.path``), e.g. the previous stage's model.
        chain: the workflow's policies pi_0 .. pi_k (for implicit rewards ``from_stage``; default: the run layout).

    Raises:
        RcsInputError: a model path that does not exist, a model that fails :func:`preflight`.
    """
    st = cfg.stages[stage]
    return _job(cfg, stage_objectives(cfg, stage), policy, _keys(cfg), chain, target=st.objective, rc=st.rc)


def eval_job(cfg: RunConfig, policy: str) -> SamplingJob:
    """The job of a held-out evaluation of ``policy``: every objective and ``eval.judge``, no selection."""
    objectives, keys = list(cfg.objectives), _keys(cfg)
    if cfg.eval.judge is not None:
        objectives.append(cfg.eval.judge)
        keys[cfg.eval.judge.name] = "eval.judge"
    return _job(cfg, objectives, policy, keys)


def preflight(job: SamplingJob, keys: Dict[str, str]) -> None:
    """Check every model of ``job`` without loading weights (local directories; a URI is checked by the actor that
    fetches it): the policy holds every weight, and each model an objective's source loads passes the source's
    ``check_model`` (a causal LM holds every weight; a reward model has the output and heads its objectives read).

    Raises:
        RcsInputError: one line naming the config key and what to set.
    """
    from rcs_ray import storage
    from rcs_ray.modeling.checkpoints import check_causal_lm

    def local(path):
        return path and not storage.is_uri(path)

    if local(job.policy.path) and job.sampling.engine in ("hf", "vllm"):
        check_causal_lm(job.policy.path, "policy.path", job.policy.trust_remote_code)
        check_prompt_rule(job.policy)
    for obj in job.objectives:
        source = registry.REWARD_SOURCES[obj.kind]
        check_model = source.hook("check_model")
        for name in source.models if check_model is not None else ():
            if local(getattr(obj, name)):
                check_model(obj, getattr(obj, name), f"{keys[obj.name]}.{name}")


def check_prompt_rule(policy: ModelConfig) -> None:
    """A system prompt or template variables need the policy's tokenizer to have a chat template (else they would
    be silently ignored, or fail every prompt).

    Raises:
        RcsInputError: naming ``policy.system_prompt`` / ``policy.chat_template_kwargs``.
    """
    from rcs_ray import storage
    from rcs_ray.errors import RcsInputError
    from rcs_ray.modeling.loading import load_tokenizer
    from rcs_ray.prompting import has_template

    key = (
        "policy.system_prompt"
        if policy.system_prompt is not None
        else "policy.chat_template_kwargs"
        if policy.chat_template_kwargs
        else None
    )
    path = policy.tokenizer or policy.path
    if key is None or storage.is_uri(path):  # a URI is checked where it is fetched (the engine's actor)
        return
    if not has_template(load_tokenizer(path, policy.trust_remote_code)):
        raise RcsInputError(
            f"{key}: the policy's tokenizer ({path}) has no chat template to apply it with: set "
            f"policy.tokenizer to one that has, or drop {key}"
        )
