"""Reward sources: each scorer maps N (prompt, response) pairs to an (N, J) array for the J objectives it serves.

- :class:`RuleScorer`: ``package.module:function(prompt, response) -> float`` per objective.
- :class:`ClassifierScorer`: an ``AutoModelForSequenceClassification`` reward model; one forward pass gives every
  head it serves (a multi-head RM such as ArmoRM scores several objectives at once), each ``sign * logits[:, head]``.
- :class:`VLLMClassifierScorer`: the same through vLLM's pooling runner (``LLM.classify``, raw logits).
- :class:`ImplicitRewardScorer`: ``beta * (log pi(y|x) - log pi_ref(y|x))`` from two local causal LMs.

:func:`plan_scorers` groups objectives so that each model is loaded once (one actor pool per model).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from rcs_ray.config import ModelConfig, ObjectiveConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.sampling.engines import _torch_dtype, load_tokenizer


@dataclass
class ScorerSpec:
    """One scorer (one actor pool): its kind, the objectives it serves, and what it needs to load."""
    kind: str                                      # rule | classifier | implicit
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    engine: str = "hf"

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def label(self) -> str:
        return f"{self.kind}[{','.join(self.names)}]"


def plan_scorers(objectives: Sequence[ObjectiveConfig]) -> list[ScorerSpec]:
    """Group objectives: all rules in one scorer; classifier / multi-head objectives by (model, engine); implicit
    rewards by (policy, reference, beta)."""
    specs: dict[tuple, ScorerSpec] = {}
    for obj in objectives:
        if obj.kind == "rule":
            key, kind = ("rule",), "rule"
        elif obj.kind in ("classifier", "multi_head"):
            key, kind = ("classifier", obj.model, obj.engine), "classifier"
        else:
            key, kind = ("implicit", obj.model, obj.reference, obj.beta), "implicit"
        specs.setdefault(key, ScorerSpec(kind=kind, engine=obj.engine if kind == "classifier" else "hf"))
        specs[key].objectives.append(obj)
    return list(specs.values())


def load_function(path: str, what: str) -> Callable:
    """Import ``package.module:function``; RcsInputError naming ``what`` when it cannot be found."""
    module_name, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RcsInputError(f"{what}: cannot import {path!r}: {exc}") from None
    if not callable(fn):
        raise RcsInputError(f"{what}: {path!r} is not callable")
    return fn


class RuleScorer:
    def __init__(self, objectives: Sequence[ObjectiveConfig]):
        self.functions = [load_function(o.function, f"objective {o.name!r}") for o in objectives]
        self.signs = [o.sign for o in objectives]

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        out = np.empty((len(responses), len(self.functions)))
        for j, (fn, sign) in enumerate(zip(self.functions, self.signs)):
            out[:, j] = [sign * float(fn(p, r)) for p, r in zip(prompts, responses)]
        return out


def reward_model_texts(tokenizer, prompts: Sequence[Any], responses: Sequence[str]) -> list[str]:
    """What a reward model reads: the whole conversation through its chat template when it has one, else the
    prompt text followed by the response."""
    if getattr(tokenizer, "chat_template", None):
        texts = []
        for p, r in zip(prompts, responses):
            messages = list(p) if isinstance(p, list) else [{"role": "user", "content": p}]
            texts.append(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": r}],
                                                       tokenize=False))
        return texts
    return [(p if isinstance(p, str) else "\n".join(m["content"] for m in p)) + r for p, r in zip(prompts, responses)]


def _heads(objectives: Sequence[ObjectiveConfig], num_labels: int, path: str) -> tuple[list[int], np.ndarray]:
    heads = [o.head for o in objectives]
    for o in objectives:
        if o.head >= num_labels:
            raise RcsInputError(f"objective {o.name!r}: head {o.head} out of range; {path} has {num_labels} outputs")
    return heads, np.array([o.sign for o in objectives])


class ClassifierScorer:
    def __init__(self, objectives: Sequence[ObjectiveConfig], dtype: str = "float32", trust_remote_code=False):
        import torch
        from transformers import AutoModelForSequenceClassification

        first = objectives[0]
        self.batch_size = first.batch_size
        self.tokenizer = load_tokenizer(ModelConfig(path=first.model, trust_remote_code=trust_remote_code))
        self.device = "cuda" if torch.cuda.is_available() and first.num_gpus > 0 else "cpu"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            first.model, dtype=_torch_dtype(dtype), trust_remote_code=trust_remote_code).to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.heads, self.signs = _heads(objectives, self.model.config.num_labels, first.model)

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        import torch

        texts = reward_model_texts(self.tokenizer, prompts, responses)
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                     add_special_tokens=not templated, return_tensors="pt").to(self.device)
                logits = self.model(**enc).logits.float().cpu().numpy()
                out.append(logits[:, self.heads] * self.signs)
        return np.concatenate(out) if out else np.zeros((0, len(self.heads)))


class VLLMClassifierScorer:
    def __init__(self, objectives: Sequence[ObjectiveConfig], dtype: str = "float32", trust_remote_code=False):
        from vllm import LLM

        first = objectives[0]
        self.llm = LLM(model=first.model, runner="pooling", dtype=dtype, trust_remote_code=trust_remote_code,
                       enforce_eager=True)
        self.tokenizer = self.llm.get_tokenizer()
        num_labels = int(getattr(self.llm.llm_engine.model_config.hf_config, "num_labels", 1))
        self.heads, self.signs = _heads(objectives, num_labels, first.model)

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        texts = reward_model_texts(self.tokenizer, prompts, responses)
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        requests = [TokensPrompt(prompt_token_ids=self.tokenizer(t, add_special_tokens=not templated)["input_ids"])
                    for t in texts]
        outputs = self.llm.classify(requests, pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        logits = np.array([o.outputs.probs for o in outputs], dtype=np.float64).reshape(len(texts), -1)
        return logits[:, self.heads] * self.signs


class ImplicitRewardScorer:
    """beta * (log pi(y|x) - log pi_ref(y|x)) summed over the response tokens (prompt and padding masked)."""

    def __init__(self, objectives: Sequence[ObjectiveConfig], dtype: str = "float32", trust_remote_code=False,
                 max_length: int = 1024):
        import torch
        from transformers import AutoModelForCausalLM

        first = objectives[0]
        self.objectives = objectives
        self.batch_size = first.batch_size
        self.max_length = max_length
        self.tokenizer = load_tokenizer(ModelConfig(path=first.model, trust_remote_code=trust_remote_code))
        self.device = "cuda" if torch.cuda.is_available() and first.num_gpus > 0 else "cpu"
        load = dict(dtype=_torch_dtype(dtype), trust_remote_code=trust_remote_code)
        self.policy = AutoModelForCausalLM.from_pretrained(first.model, **load).to(self.device).eval()
        self.reference = AutoModelForCausalLM.from_pretrained(first.reference, **load).to(self.device).eval()

    def _logps(self, model, batch) -> np.ndarray:
        import torch

        from rcs_ray.train.logprobs import sequence_logps

        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return sequence_logps(logits, batch["labels"]).float().cpu().numpy()

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        import torch

        from rcs_ray.train.logprobs import tokenize_example

        pad = self.tokenizer.pad_token_id
        if getattr(self.tokenizer, "chat_template", None):   # as the policy saw them when sampling
            prompts = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
        deltas = []
        for start in range(0, len(responses), self.batch_size):
            feats = [tokenize_example(self.tokenizer, p, r, self.max_length)
                     for p, r in zip(prompts[start:start + self.batch_size], responses[start:start + self.batch_size])]
            width = max(len(f["input_ids"]) for f in feats)

            def padded(key, value):
                return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in feats], device=self.device)

            batch = {"input_ids": padded("input_ids", pad), "attention_mask": padded("attention_mask", 0),
                     "labels": padded("labels", -100)}
            deltas.append(self._logps(self.policy, batch) - self._logps(self.reference, batch))
        delta = np.concatenate(deltas) if deltas else np.zeros(0)
        return np.stack([o.sign * o.beta * delta for o in self.objectives], axis=1)


def make_scorer(spec: ScorerSpec, dtype: str = "float32", trust_remote_code: bool = False, max_length: int = 1024):
    if spec.kind == "rule":
        return RuleScorer(spec.objectives)
    if spec.kind == "classifier":
        cls = VLLMClassifierScorer if spec.engine == "vllm" else ClassifierScorer
        return cls(spec.objectives, dtype=dtype, trust_remote_code=trust_remote_code)
    return ImplicitRewardScorer(spec.objectives, dtype=dtype, trust_remote_code=trust_remote_code,
                                max_length=max_length)
