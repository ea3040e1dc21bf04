"""Reward sources: each scorer maps N (prompt, response) pairs to an (N, J) array for the J objectives it serves.

- :class:`RuleScorer`: ``package.module:function(prompt, response) -> float`` per objective.
- :class:`ClassifierScorer`: a reward model (a sequence classifier, a multi-objective RM such as ArmoRM, a safe-rlhf
  score model); one forward pass gives every objective it serves, each ``sign * <output>[:, head]``
  (:mod:`rcs_ray.modeling.reward_models`).
- :class:`VLLMClassifierScorer`: a sequence classifier through vLLM's pooling runner (``LLM.classify``, raw logits).
- :class:`ImplicitRewardScorer`: ``beta * (log pi(y|x) - log pi_ref(y|x))`` from two causal LMs.
- judges (``kind: judge``): :mod:`rcs_ray.sampling.judges`.

Which scorer serves a kind of objective, what it requires and which objectives share one scorer is declared by the
kind's entry in :data:`rcs_ray.registry.REWARD_SOURCES`; :func:`plan_scorers` groups the objectives by those
entries (one actor pool per scorer, each model loaded once) and :func:`make_scorer` builds one from the entry its
:class:`ScorerSpec` carries. Every scorer is built as ``Scorer(objectives, settings)`` with the objectives' own
settings (:class:`rcs_ray.sampling.job.ScorerSettings`).
What a model reads is :mod:`rcs_ray.prompting`'s rule under the objective's ``chat_template`` (:func:`chat_rule`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from rcs_ray import registry
from rcs_ray.config import ObjectiveConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.modeling.devices import device_for
from rcs_ray.modeling.loading import load_causal_lm, load_tokenizer, torch_dtype
from rcs_ray.prompting import conversation_ids


@dataclass
class ScorerSpec:
    """One scorer (one actor pool): its family, the objectives it serves, the engine it runs on, and the registry
    entry of its reward source, which travels with it to the scorer actors (they never look the registry up, so an
    entry registered at runtime in the driver serves as well as a built-in one)."""

    kind: str  # the reward-source family: rule | classifier | implicit | judge
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    engine: str = "hf"
    source: Optional[registry.RewardSourceSpec] = None  # None: the first objective's entry, looked up

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def label(self) -> str:
        return f"{self.kind}[{','.join(self.names)}]"


def plan_scorers(objectives: Sequence[ObjectiveConfig]) -> list[ScorerSpec]:
    """Group objectives into scorers: objectives of one reward-source family whose ``shared_by`` fields agree share
    one (all rules one scorer; classifier / multi-head objectives one per (model, engine); implicit rewards one per
    (policy, reference); judges one per (model, engine))."""
    specs: dict[tuple, ScorerSpec] = {}
    for obj in objectives:
        source = registry.REWARD_SOURCES[obj.kind]
        key = source.group(obj)
        specs.setdefault(key, ScorerSpec(kind=key[0], engine=obj.engine if source.loads_model else "hf", source=source))
        specs[key].objectives.append(obj)
    return list(specs.values())


def make_scorer(spec: ScorerSpec, settings):
    """The scorer of ``spec``: its reward source's scorer class for its engine, built with ``settings``."""
    kind = spec.objectives[0].kind
    source = spec.source if spec.source is not None else registry.REWARD_SOURCES[kind]
    return registry.resolve(source.scorer(spec.engine), f"objective kind {kind!r}")(spec.objectives, settings)


def load_function(path: str, what: str) -> Callable:
    """Import ``package.module:function``; RcsInputError naming ``what`` when it cannot be found."""
    try:
        fn = registry.resolve(path, what)
    except ImportError as exc:
        raise RcsInputError(f"{what}: cannot import {path!r}: {str(exc).split(': ', 1)[-1]}") from None
    if not callable(fn):
        raise RcsInputError(f"{what}: {path!r} is not callable")
    return fn


def chat_rule(tokenizer, settings, policy_text: bool = False):
    """Apply an objective's ``chat_template`` setting to its tokenizer; returns the prompt rule it reads with
    (``use_chat_template`` of :mod:`rcs_ray.prompting`: a bool or a :class:`~rcs_ray.prompting.PromptRule`).

    ``auto``: a reward model or judge reads through its own template when it has one; a scorer of the policy's own
    text (``policy_text``: an implicit reward) follows the policy's rule. ``own``: its own template. ``policy``: the
    policy's rule (``policy_text``), or the policy tokenizer's template read with the policy's system prompt and
    template variables (the policy's own text, as generation and training read it). ``none``: plain text. Anything
    else: a Jinja template to use.
    """
    import dataclasses

    rule = settings.chat_template
    if rule == "none":
        return False
    if rule in ("auto", "policy") and policy_text:
        return settings.policy_rule()
    if rule == "policy":
        tokenizer.chat_template = getattr(load_tokenizer(settings.policy_tokenizer), "chat_template", None)
        return dataclasses.replace(settings.policy_rule(), chat_template=True)
    if rule not in ("auto", "own"):
        tokenizer.chat_template = rule
    return True


def keep_end(ids: list[int], max_length: int) -> list[int]:
    """At most ``max_length`` ids, cut from the start: the response (where a reward is read) is kept."""
    return ids[-max_length:] if len(ids) > max_length else ids


class RuleScorer:
    def __init__(self, objectives: Sequence[ObjectiveConfig], settings=None):
        self.functions = [load_function(o.function, f"objective {o.name!r}") for o in objectives]
        self.signs = [o.sign for o in objectives]

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        out = np.empty((len(responses), len(self.functions)))
        for j, (fn, sign) in enumerate(zip(self.functions, self.signs)):
            out[:, j] = [sign * float(fn(p, r)) for p, r in zip(prompts, responses)]
        return out


def load_classifier(path: str, settings, objective: str):
    """``AutoModelForSequenceClassification`` from ``path`` with the objective's settings, through the checked load
    (:func:`rcs_ray.modeling.loading.load_checked`: never with random weights)."""
    from transformers import AutoModelForSequenceClassification

    from rcs_ray.modeling.loading import load_checked

    return load_checked(
        AutoModelForSequenceClassification,
        path,
        f"{objective}.model",
        f"check {objective}.output",
        dtype=torch_dtype(settings.dtype),
        trust_remote_code=settings.trust_remote_code,
        **settings.model_kwargs,
    )


class ClassifierScorer:
    """A reward model read at each objective's ``output`` and ``head``: one forward pass for all of them."""

    def __init__(self, objectives: Sequence[ObjectiveConfig], settings):
        from rcs_ray.modeling.checkpoints import read_config
        from rcs_ray.modeling.context import context_limit, tokenizer_limit
        from rcs_ray.modeling.padding import embedding_rows
        from rcs_ray.modeling.reward_models import load_score_model, resolve_output

        first = objectives[0]
        self.batch_size = first.batch_size
        self.tokenizer = load_tokenizer(settings.tokenizer or first.model, settings.trust_remote_code)
        self.use_chat_template = chat_rule(self.tokenizer, settings)
        config = read_config(first.model, f"objective {first.name!r}", settings.trust_remote_code)
        self.reads = [(resolve_output(config, o.output, o.kind)[0], o.head, o.sign) for o in objectives]
        self.outputs = sorted({r[0] for r in self.reads})
        if "end_scores" in self.outputs and len(self.outputs) > 1:
            raise RcsInputError(
                f"objectives {[o.name for o in objectives]} share {first.model} but read "
                f"{self.outputs}: end_scores (a safe-rlhf model) cannot be read with other outputs"
            )
        self.device = device_for(first.num_gpus > 0)
        if self.outputs == ["end_scores"]:
            model = load_score_model(
                first.model, torch_dtype(settings.dtype), settings.trust_remote_code, **settings.model_kwargs
            )
        else:
            model = load_classifier(first.model, settings, f"objective {first.name!r}")
        self.model = model.to(self.device).eval()
        # Padding never looks like text (rcs_ray.modeling.padding): each batch is right-padded with an id none of
        # its rows contains (the model's own pad id when it can), and the model is told that id, so its own
        # end-of-sequence rule (rightmost non-pad, first pad, or the attention mask) reads each row's last token.
        self.pad = getattr(self.model.config, "pad_token_id", None)
        self.vocab_size = embedding_rows(self.model)
        self.max_length = context_limit(config, tokenizer_limit(self.tokenizer), settings.max_length)

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        import torch

        from rcs_ray.modeling.padding import free_pad_id, right_pad, tell_pad_id
        from rcs_ray.modeling.reward_models import read_outputs

        ids = [
            keep_end(conversation_ids(self.tokenizer, p, r, self.use_chat_template), self.max_length)
            for p, r in zip(prompts, responses)
        ]
        out = []
        with torch.no_grad():
            for start in range(0, len(ids), self.batch_size):
                chunk = ids[start : start + self.batch_size]
                pad = free_pad_id(chunk, self.vocab_size, prefer=(self.pad, self.tokenizer.pad_token_id))
                tell_pad_id(self.model, pad)
                enc = {k: v.to(self.device) for k, v in right_pad(chunk, pad).items()}
                values = read_outputs(self.model(**enc), self.outputs)
                out.append(
                    np.stack([sign * values[o][:, head].float().cpu().numpy() for o, head, sign in self.reads], axis=1)
                )
        return np.concatenate(out) if out else np.zeros((0, len(self.reads)))


class VLLMClassifierScorer:
    """A sequence classifier through vLLM's pooling runner (``output: logits`` only; raw logits)."""

    def __init__(self, objectives: Sequence[ObjectiveConfig], settings):
        from rcs_ray.modeling.vllm_llm import build_llm

        first = objectives[0]
        # eager on GPUs too, as this scorer has always run
        self.llm = build_llm(
            first.model,
            tokenizer=settings.tokenizer,
            dtype=settings.dtype,
            trust_remote_code=settings.trust_remote_code,
            max_length=settings.max_length,
            extra=dict(runner="pooling", enforce_eager=True),
            engine_kwargs=settings.engine_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.use_chat_template = chat_rule(self.tokenizer, settings)
        self.max_length = int(self.llm.llm_engine.model_config.max_model_len)
        num_labels = int(getattr(self.llm.llm_engine.model_config.hf_config, "num_labels", 1))
        for o in objectives:
            if o.head >= num_labels:
                raise RcsInputError(
                    f"objective {o.name!r}: head {o.head} out of range; {first.model} has {num_labels} outputs"
                )
        self.heads, self.signs = [o.head for o in objectives], np.array([o.sign for o in objectives])

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        requests = [
            TokensPrompt(
                prompt_token_ids=keep_end(
                    conversation_ids(self.tokenizer, p, r, self.use_chat_template), self.max_length
                )
            )
            for p, r in zip(prompts, responses)
        ]
        outputs = self.llm.classify(requests, pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        logits = np.array([o.outputs.probs for o in outputs], dtype=np.float64).reshape(len(requests), -1)
        return logits[:, self.heads] * self.signs


class ImplicitRewardScorer:
    """beta * (log pi(y|x) - log pi_ref(y|x)) summed over the response tokens (prompt and padding masked).

    The (prompt, response) pairs are tokenized as the policy read them when sampling and as training reads them
    (:func:`rcs_ray.modeling.logprobs.tokenize_example` with the policy's ``chat_template`` setting, unless the
    objective's ``chat_template`` says otherwise).
    """

    def __init__(self, objectives: Sequence[ObjectiveConfig], settings):
        from rcs_ray.modeling.logprobs import ResponseLogps

        first = objectives[0]
        self.objectives = objectives
        self.max_length = settings.max_length or 1024
        self.tokenizer = load_tokenizer(settings.tokenizer or first.model, settings.trust_remote_code)
        self.use_chat_template = chat_rule(self.tokenizer, settings, policy_text=True)
        device = device_for(first.num_gpus > 0)
        models = [
            load_causal_lm(path, settings.dtype, settings.trust_remote_code, device, f"objective {first.name!r}")
            for path in (first.model, first.reference)
        ]
        self.policy, self.reference = (
            ResponseLogps(m, self.tokenizer.pad_token_id, first.batch_size, device) for m in models
        )

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        from rcs_ray.modeling.logprobs import tokenize_example

        examples = [
            tokenize_example(self.tokenizer, p, r, self.max_length, use_chat_template=self.use_chat_template)
            for p, r in zip(prompts, responses)
        ]
        delta = self.policy(examples) - self.reference(examples) if examples else np.zeros(0)
        return np.stack([o.sign * (0.1 if o.beta is None else o.beta) * delta for o in self.objectives], axis=1)
