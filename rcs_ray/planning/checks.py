"""The dry run's input checks: every model and dataset a config names, resolved and checked without loading weights,
every problem collected (not only the first).

Models are resolved by the one path rule (:func:`rcs_ray.user_paths.resolve_model_dir`: local, URI, HF cache) and
checked on the meta device: a causal LM (policy, reference, implicit reward, judge) must hold every weight its
architecture needs; a reward model must have the output and heads its objectives read (a head missing from the
checkpoint would be random). Datasets are resolved and read to count their prompts (``limit`` applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from rcs_ray.config import DataConfig, RunConfig
from rcs_ray.errors import RcsInputError


@dataclass
class Found:
    """What the checks found: resolved models and datasets, and every problem (one line each)."""

    models: Dict[str, str] = field(default_factory=dict)  # config key -> resolved path
    prompts: Dict[str, int] = field(default_factory=dict)  # data key -> prompts after ``limit``
    prompt_tokens: Dict[str, float] = field(default_factory=dict)  # data key -> mean prompt tokens (policy's rule)
    problems: List[str] = field(default_factory=list)

    def attempt(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)``, or None with its one-line problem recorded (bad input, not a crash)."""
        try:
            return fn(*args, **kwargs)
        except RcsInputError as exc:
            if str(exc) not in self.problems:
                self.problems.append(str(exc))
            return None


def _model(found: Found, path: Optional[str], key: str, cfg: RunConfig) -> Optional[str]:
    from rcs_ray.user_paths import resolve_model_dir

    resolved = found.attempt(resolve_model_dir, path, key, cfg.tinyworld)
    if resolved is not None:
        found.models[key] = resolved
    return resolved


def check_models(cfg: RunConfig, found: Found) -> None:
    """The policy (and tokenizer), every objective's models and the eval judge."""
    from rcs_ray import storage
    from rcs_ray.modeling.checkpoints import check_causal_lm
    from rcs_ray.sampling.job import check_prompt_rule

    def local(path):
        return path is not None and not storage.is_uri(path)

    policy = _model(found, cfg.policy.path, "policy.path", cfg)
    if local(policy):
        found.attempt(check_causal_lm, policy, "policy.path", cfg.policy.trust_remote_code)
    if cfg.policy.tokenizer:
        _model(found, cfg.policy.tokenizer, "policy.tokenizer", cfg)
    if local(policy):
        import dataclasses

        found.attempt(
            check_prompt_rule,
            dataclasses.replace(cfg.policy, path=policy, tokenizer=found.models.get("policy.tokenizer")),
        )
    objectives = [(f"objectives.{i}", o) for i, o in enumerate(cfg.objectives)]
    if cfg.eval.judge is not None:
        objectives.append(("eval.judge", cfg.eval.judge))
    for key, obj in objectives:
        _check_objective(cfg, found, key, obj, local)
        if obj.tokenizer:
            _model(found, obj.tokenizer, f"{key}.tokenizer", cfg)


def _check_objective(cfg: RunConfig, found: Found, key: str, obj, local: Callable) -> None:
    """One objective by its reward source's entry: the source's ``check_plan``, then each model it loads resolved and
    checked by its ``check_model`` (the ``from_stage`` ones come from the workflow's own policies: not checked)."""
    from rcs_ray import registry

    source = registry.REWARD_SOURCES[obj.kind]
    check_plan, check_model = source.hook("check_plan"), source.hook("check_model")
    if check_plan is not None:
        found.attempt(check_plan, obj, key)
    for name in source.models:
        if obj.from_stage is not None and name in source.from_stage:
            continue
        path = _model(found, getattr(obj, name), f"{key}.{name}", cfg)
        if local(path) and check_model is not None:
            found.attempt(check_model, obj, path, f"{key}.{name}")


def check_rule_function(obj, key: str) -> None:
    """A rule's ``function`` imports and is callable (the rule source's ``check_plan``).

    Raises:
        RcsInputError: naming ``<key>.function``.
    """
    from rcs_ray.sampling.scorers import load_function

    _rule(load_function, obj.function, f"{key}.function")


def _rule(load, function: Optional[str], key: str):
    if not function:
        raise RcsInputError(f"{key}: a rule objective needs a function (package.module:function)")
    try:
        return load(function, key)
    except RcsInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - an import error of the user's module: one line
        raise RcsInputError(f"{key}: cannot import {function}: {type(exc).__name__}: {exc}") from None


def check_data(cfg: RunConfig, found: Found) -> None:
    """Every stage's data (and ``mix``), the eval prompts: resolved, read, counted."""
    sources = [(f"stages.{k}.data", st.data) for k, st in enumerate(cfg.stages)]
    sources += [(f"stages.{k}.mix.{j}", m) for k, st in enumerate(cfg.stages) for j, m in enumerate(st.mix or [])]
    if cfg.eval.prompts.path:
        sources.append(("eval.prompts", cfg.eval.prompts))
    tokenizer = _policy_tokenizer(cfg, found)
    for key, data in sources:
        if not data.path:
            found.problems.append(f"{key}.path: a dataset path is required")
            continue
        rows = found.attempt(_read, data, cfg, key)
        if rows is not None:
            found.prompts[key] = len(rows)
            if tokenizer is not None and rows:
                found.prompt_tokens[key] = _mean_prompt_tokens(tokenizer, cfg, rows[:256])


def _read(data: DataConfig, cfg: RunConfig, key: str) -> list:
    from rcs_ray.data import read_prompts
    from rcs_ray.user_paths import resolve_data

    return read_prompts(resolve_data(data, cfg.tinyworld, key=f"{key}.path")).rows


def _policy_tokenizer(cfg: RunConfig, found: Found):
    from rcs_ray import storage
    from rcs_ray.modeling.loading import load_tokenizer

    path = found.models.get("policy.tokenizer") or found.models.get("policy.path")
    if path is None or storage.is_uri(path):
        return None
    return found.attempt(load_tokenizer, path, cfg.policy.trust_remote_code)


def _mean_prompt_tokens(tokenizer, cfg: RunConfig, rows: list) -> float:
    from rcs_ray.prompting import PromptRule, prompt_ids_batch

    ids = [
        x
        for x in prompt_ids_batch(tokenizer, [r["prompt"] for r in rows], PromptRule.of(cfg.policy))
        if not isinstance(x, Exception)
    ]
    return sum(len(x) for x in ids) / len(ids) if ids else 0.0
