"""Reward sources: each scorer maps N (prompt, response) pairs to an (N, J) array for the J objectives it serves.

- :class:`RuleScorer`: ``package.module:function(prompt, response) -> float`` per objective.
- :class:`ClassifierScorer`: an ``AutoModelForSequenceClassification`` reward model; one forward pass gives every
  head it serves (a multi-head RM such as ArmoRM scores several objectives at once), each ``sign * logits[:, head]``.
- :class:`VLLMClassifierScorer`: the same through vLLM's pooling runner (``LLM.classify``, raw logits).
- :class:`ImplicitRewardScorer`: ``beta * (log pi(y|x) - log pi_ref(y|x))`` from two local causal LMs.

Which scorer serves a kind of objective, what it requires and which objectives share one scorer is declared by the
kind's entry in :data:`rcs_ray.registry.REWARD_SOURCES`; :func:`plan_scorers` groups the objectives by those
entries (one actor pool per scorer, each model loaded once) and :func:`make_scorer` builds one. Every scorer is
built as ``Scorer(objectives, settings)`` (:class:`rcs_ray.sampling.job.ScorerSettings`). What a model reads is
:mod:`rcs_ray.prompting`'s rule: a reward model the conversation through its own template, the implicit reward the
policy's own prompt text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from rcs_ray import registry
from rcs_ray.config import ObjectiveConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.modeling.loading import device_for, load_causal_lm, load_tokenizer, torch_dtype
from rcs_ray.prompting import conversation_ids


@dataclass
class ScorerSpec:
    """One scorer (one actor pool): its kind, the objectives it serves, and the engine it runs on."""
    kind: str                                      # the reward-source family: rule | classifier | implicit
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    engine: str = "hf"

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def label(self) -> str:
        return f"{self.kind}[{','.join(self.names)}]"


def plan_scorers(objectives: Sequence[ObjectiveConfig]) -> list[ScorerSpec]:
    """Group objectives into scorers: objectives of one reward-source family whose ``shared_by`` fields agree share
    one (all rules one scorer; classifier / multi-head objectives one per (model, engine); implicit rewards one per
    (policy, reference))."""
    specs: dict[tuple, ScorerSpec] = {}
    for obj in objectives:
        source = registry.REWARD_SOURCES[obj.kind]
        key = (source.family, *(getattr(obj, f) for f in source.shared_by))
        specs.setdefault(key, ScorerSpec(kind=source.family, engine=obj.engine if source.loads_model else "hf"))
        specs[key].objectives.append(obj)
    return list(specs.values())


def make_scorer(spec: ScorerSpec, settings):
    """The scorer of ``spec``: its reward source's scorer class for its engine, built with ``settings``."""
    kind = spec.objectives[0].kind
    path = registry.REWARD_SOURCES[kind].scorer(spec.engine)
    return registry.resolve(path, f"objective kind {kind!r}")(spec.objectives, settings)


def load_function(path: str, what: str) -> Callable:
    """Import ``package.module:function``; RcsInputError naming ``what`` when it cannot be found."""
    try:
        fn = registry.resolve(path, what)
    except ImportError as exc:
        raise RcsInputError(f"{what}: cannot import {path!r}: {str(exc).split(': ', 1)[-1]}") from None
    if not callable(fn):
        raise RcsInputError(f"{what}: {path!r} is not callable")
    return fn


class RuleScorer:
    def __init__(self, objectives: Sequence[ObjectiveConfig], settings=None):
        self.functions = [load_function(o.function, f"objective {o.name!r}") for o in objectives]
        self.signs = [o.sign for o in objectives]

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        out = np.empty((len(responses), len(self.functions)))
        for j, (fn, sign) in enumerate(zip(self.functions, self.signs)):
            out[:, j] = [sign * float(fn(p, r)) for p, r in zip(prompts, responses)]
        return out


def _heads(objectives: Sequence[ObjectiveConfig], num_labels: int, path: str) -> tuple[list[int], np.ndarray]:
    heads = [o.head for o in objectives]
    for o in objectives:
        if o.head >= num_labels:
            raise RcsInputError(f"objective {o.name!r}: head {o.head} out of range; {path} has {num_labels} outputs")
    return heads, np.array([o.sign for o in objectives])


def _truncated(tokenizer, ids: list[int]) -> list[int]:
    """``ids`` cut to the tokenizer's ``model_max_length`` on its truncation side (as ``truncation=True`` does)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if not limit or limit >= 1 << 30 or len(ids) <= limit:
        return ids
    return ids[-limit:] if getattr(tokenizer, "truncation_side", "right") == "left" else ids[:limit]


def _padded(ids: list[list[int]], tokenizer) -> dict:
    """``input_ids`` / ``attention_mask`` (B, T) tensors padded on the tokenizer's padding side."""
    import torch

    width = max(len(x) for x in ids)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    out_ids = torch.full((len(ids), width), int(tokenizer.pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for b, x in enumerate(ids):
        cols = slice(width - len(x), width) if left else slice(0, len(x))
        out_ids[b, cols], mask[b, cols] = torch.as_tensor(x, dtype=torch.long), 1
    return {"input_ids": out_ids, "attention_mask": mask}


class ClassifierScorer:
    def __init__(self, objectives: Sequence[ObjectiveConfig], settings):
        from transformers import AutoModelForSequenceClassification

        first = objectives[0]
        self.batch_size = first.batch_size
        self.tokenizer = load_tokenizer(first.model, settings.trust_remote_code)
        self.device = device_for(first.num_gpus > 0)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            first.model, dtype=torch_dtype(settings.dtype),
            trust_remote_code=settings.trust_remote_code).to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.heads, self.signs = _heads(objectives, self.model.config.num_labels, first.model)

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        import torch

        ids = [_truncated(self.tokenizer, conversation_ids(self.tokenizer, p, r)) for p, r in zip(prompts, responses)]
        out = []
        with torch.no_grad():
            for start in range(0, len(ids), self.batch_size):
                enc = _padded(ids[start:start + self.batch_size], self.tokenizer)
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float().cpu().numpy()
                out.append(logits[:, self.heads] * self.signs)
        return np.concatenate(out) if out else np.zeros((0, len(self.heads)))


class VLLMClassifierScorer:
    def __init__(self, objectives: Sequence[ObjectiveConfig], settings):
        from vllm import LLM

        first = objectives[0]
        self.llm = LLM(model=first.model, runner="pooling", dtype=settings.dtype,
                       trust_remote_code=settings.trust_remote_code, enforce_eager=True)
        self.tokenizer = self.llm.get_tokenizer()
        num_labels = int(getattr(self.llm.llm_engine.model_config.hf_config, "num_labels", 1))
        self.heads, self.signs = _heads(objectives, num_labels, first.model)

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        requests = [TokensPrompt(prompt_token_ids=conversation_ids(self.tokenizer, p, r))
                    for p, r in zip(prompts, responses)]
        outputs = self.llm.classify(requests, pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        logits = np.array([o.outputs.probs for o in outputs], dtype=np.float64).reshape(len(requests), -1)
        return logits[:, self.heads] * self.signs


class ImplicitRewardScorer:
    """beta * (log pi(y|x) - log pi_ref(y|x)) summed over the response tokens (prompt and padding masked).

    The (prompt, response) pairs are tokenized as the policy read them when sampling and as training reads them
    (:func:`rcs_ray.modeling.logprobs.tokenize_example` with the policy's ``chat_template`` setting).
    """

    def __init__(self, objectives: Sequence[ObjectiveConfig], settings):
        from rcs_ray.modeling.logprobs import ResponseLogps

        first = objectives[0]
        self.objectives = objectives
        self.max_length = settings.max_length
        self.use_chat_template = settings.use_chat_template
        self.tokenizer = load_tokenizer(first.model, settings.trust_remote_code)
        device = device_for(first.num_gpus > 0)
        models = [load_causal_lm(path, settings.dtype, settings.trust_remote_code, device)
                  for path in (first.model, first.reference)]
        self.policy, self.reference = (ResponseLogps(m, self.tokenizer.pad_token_id, first.batch_size, device)
                                       for m in models)

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        from rcs_ray.modeling.logprobs import tokenize_example

        examples = [tokenize_example(self.tokenizer, p, r, self.max_length, use_chat_template=self.use_chat_template)
                    for p, r in zip(prompts, responses)]
        delta = self.policy(examples) - self.reference(examples) if examples else np.zeros(0)
        return np.stack([o.sign * o.beta * delta for o in self.objectives], axis=1)
