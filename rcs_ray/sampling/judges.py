"""LLM-as-judge rewards (``kind: judge``): a generative model reads a rubric with the prompt and the response and
answers with a score.

The rubric (``judge.template``, with ``{prompt}`` and ``{response}``) is the judge's user message, rendered through
its own chat template (``chat_template: auto``) with the generation prompt. The score is

- ``judge.mode: expected`` (default): the expected value ``sum_s s * P(s)`` over the score labels
  ``judge.scores``, where ``P(s)`` is the judge's probability of answering exactly ``s`` (each label's tokens
  teacher-forced after the judge prompt, renormalised over the labels) -- steadier than the argmax;
- ``judge.mode: parse``: the first match of ``judge.pattern`` (group 1) in the judge's greedy answer of at most
  ``judge.max_tokens`` tokens. An answer without a match scores NaN, which fails that prompt as
  ``non_finite_reward`` (never the run).

:class:`JudgeScorer` runs on HF transformers, :class:`VLLMJudgeScorer` on vLLM (``prompt_logprobs`` for the expected
score, greedy generation for parsing); both give the same expected score for the same model.
"""

from __future__ import annotations

import math
import re
from typing import Any, List, Sequence

import numpy as np

from rcs_ray.config import ObjectiveConfig
from rcs_ray.modeling.context import context_limit, tokenizer_limit
from rcs_ray.modeling.devices import device_for
from rcs_ray.modeling.loading import load_causal_lm, load_tokenizer
from rcs_ray.prompting import prompt_ids
from rcs_ray.sampling.scorers import chat_rule, keep_end


def prompt_as_text(prompt: Any) -> str:
    """A prompt for the rubric: a string as it is, a chat as its messages' contents, one per line."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" if m["role"] != "user" else m["content"] for m in prompt)


def label_text(score: float) -> str:
    """How the judge writes score ``score``: ``7`` for 7.0, ``7.5`` for 7.5."""
    return str(int(score)) if float(score).is_integer() else str(score)


def expected_score(label_logps: np.ndarray, scores: Sequence[float]) -> np.ndarray:
    """(N,) expected scores from (N, S) log-probabilities of answering each of the S labels (renormalised)."""
    lp = np.asarray(label_logps, dtype=np.float64)
    lp = lp - lp.max(axis=1, keepdims=True)
    p = np.exp(lp)
    p /= p.sum(axis=1, keepdims=True)
    return p @ np.asarray(scores, dtype=np.float64)


def parse_score(text: str, pattern: str) -> float:
    """Group 1 of the first match of ``pattern`` in ``text`` as a float; NaN when there is none."""
    match = re.search(pattern, text)
    if match is None:
        return math.nan
    try:
        return float(match.group(1) if match.groups() else match.group(0))
    except ValueError:
        return math.nan


class _JudgeBase:
    def __init__(self, objectives: Sequence[ObjectiveConfig], settings, tokenizer):
        first = objectives[0]
        self.objectives, self.judge, self.tokenizer = objectives, first.judge, tokenizer
        self.use_chat_template = chat_rule(tokenizer, settings)
        self.labels = [self._encode(label_text(s)) for s in first.judge.scores]

    def prompt_budget(self, context: int) -> int:
        """The judge prompt's tokens at most: the model's context limit (:mod:`rcs_ray.modeling.context`) less the
        longest score label and one token, so a prompt with any label appended still fits."""
        return context - max(len(x) for x in self.labels) - 1

    def _encode(self, text: str) -> List[int]:
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def judge_ids(self, prompt: Any, response: str) -> List[int]:
        rubric = self.judge.template.format(prompt=prompt_as_text(prompt), response=response)
        return keep_end(prompt_ids(self.tokenizer, rubric, self.use_chat_template), self.max_length)

    def _signed(self, values: np.ndarray) -> np.ndarray:
        return np.stack([o.sign * values for o in self.objectives], axis=1)


class JudgeScorer(_JudgeBase):
    """A judge on HF transformers."""

    def __init__(self, objectives: Sequence[ObjectiveConfig], settings):
        from rcs_ray.modeling.logprobs import ResponseLogps

        first = objectives[0]
        super().__init__(
            objectives, settings, load_tokenizer(settings.tokenizer or first.model, settings.trust_remote_code)
        )
        self.device = device_for(first.num_gpus > 0)
        self.model = load_causal_lm(
            first.model,
            settings.dtype,
            settings.trust_remote_code,
            self.device,
            f"objective {first.name!r}",
            **settings.model_kwargs,
        )
        self.max_length = self.prompt_budget(
            context_limit(self.model.config, tokenizer_limit(self.tokenizer), settings.max_length)
        )
        self.logps = ResponseLogps(self.model, self.tokenizer.pad_token_id, first.batch_size, self.device)

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        heads = [self.judge_ids(p, r) for p, r in zip(prompts, responses)]
        if self.judge.mode == "parse":
            return self._signed(np.array([parse_score(self._answer(ids), self.judge.pattern) for ids in heads]))
        examples = [
            {"input_ids": ids + label, "labels": [-100] * len(ids) + label} for ids in heads for label in self.labels
        ]
        lp = self.logps(examples).reshape(len(heads), len(self.labels)) if heads else np.zeros((0, len(self.labels)))
        return self._signed(expected_score(lp, self.judge.scores))

    def _answer(self, ids: List[int]) -> str:
        import torch

        with torch.no_grad():
            out = self.model.generate(
                input_ids=torch.tensor([ids], device=self.device),
                do_sample=False,
                max_new_tokens=self.judge.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        return self.tokenizer.decode(out[0, len(ids) :].tolist(), skip_special_tokens=True)


class VLLMJudgeScorer(_JudgeBase):
    """A judge on vLLM: label log-probs from ``prompt_logprobs``, answers from greedy generation."""

    def __init__(self, objectives: Sequence[ObjectiveConfig], settings):
        from rcs_ray.modeling.vllm_llm import build_llm

        first = objectives[0]
        self.llm = build_llm(
            first.model,
            tokenizer=settings.tokenizer,
            dtype=settings.dtype,
            trust_remote_code=settings.trust_remote_code,
            max_length=settings.max_length,
            seed=0,
            engine_kwargs=settings.engine_kwargs,
        )
        super().__init__(objectives, settings, self.llm.get_tokenizer())
        self.max_length = self.prompt_budget(int(self.llm.llm_engine.model_config.max_model_len))

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> np.ndarray:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        heads = [self.judge_ids(p, r) for p, r in zip(prompts, responses)]
        if not heads:
            return np.zeros((0, len(self.objectives)))
        if self.judge.mode == "parse":
            params = SamplingParams(temperature=0.0, max_tokens=self.judge.max_tokens)
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in heads], params, use_tqdm=False)
            return self._signed(np.array([parse_score(o.outputs[0].text, self.judge.pattern) for o in outs]))
        requests = [TokensPrompt(prompt_token_ids=ids + label) for ids in heads for label in self.labels]
        outs = self.llm.generate(
            requests, SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0), use_tqdm=False
        )
        lp = []
        for (ids, label), out in zip(((ids, label) for ids in heads for label in self.labels), outs):
            steps = out.prompt_logprobs[len(ids) :]
            lp.append(sum(step[tok].logprob for step, tok in zip(steps, label)))
        return self._signed(expected_score(np.array(lp).reshape(len(heads), len(self.labels)), self.judge.scores))
