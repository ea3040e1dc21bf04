"""Generation engines: vLLM (the GPU engine; its CPU build runs here) and HF transformers (the fallback).

An engine turns prompt token ids into sampled completions: the generation stage renders and tokenizes each prompt once
(:func:`rcs_ray.prompting.prompt_ids`, with the engine's tokenizer), checks its length and hands the ids over. Each
sample has its own seed (see
:func:`rcs_ray.sampling.seeds.sample_seed`), so the samples of a prompt do not depend on the batch size, the number
of actors or the order of prompts.

- :class:`VLLMEngine` uses ``vllm.LLM`` with one ``SamplingParams(n=1, seed=...)`` per sample. ``generate`` is one
  blocking call; ``submit`` hands a batch to the engine's own loop thread and returns a future at once, so the
  generation stage keeps several batches in flight and vLLM's continuous batching sees all of them (new requests join
  the running batch at the next step: no batch waits for another's slowest sequence). A sample depends only on its
  seed, so both give the same completions.
- :class:`HFEngine` runs ``model.generate`` greedily on logits perturbed by Gumbel noise drawn from a per-row
  ``torch.Generator``: argmax(logits / T + Gumbel) is an exact sample of softmax(logits / T), and each row's noise
  depends only on its own seed, so a batch of many prompts gives the same samples as one prompt at a time.

Both take ``top_k``, ``min_p``, ``repetition_penalty`` and ``stop`` strings with vLLM's meaning (the HF side:
:mod:`rcs_ray.sampling.hf_sampling`); a response cut by a stop string excludes it and counts as finished.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from rcs_ray import registry
from rcs_ray.config import ModelConfig, SamplingConfig
from rcs_ray.modeling.context import context_limit, tokenizer_limit
from rcs_ray.modeling.devices import device_for
from rcs_ray.modeling.loading import load_causal_lm, load_tokenizer
from rcs_ray.sampling.hf_sampling import GumbelNoise, StopStrings, stop_cut

_GumbelNoise = GumbelNoise  # its earlier name here

log = logging.getLogger(__name__)


@dataclass
class Completion:
    text: str
    num_tokens: int
    finished: bool  # stopped at EOS or a stop string (False: cut at max_tokens)


class Engine(Protocol):
    tokenizer: Any
    max_model_len: int

    def generate(self, prompts: Sequence[Sequence[int]], seeds: Sequence[Sequence[int]]) -> list[list[Completion]]:
        """``prompts[i]`` the prompt's token ids; ``seeds[i]`` one seed per wanted sample. Returns completions per
        prompt. An engine that takes more work while it runs may also have ``submit(prompts, seeds) -> Future`` of
        the same result (thread-safe); the pipeline then keeps several batches in flight per actor."""


class HFEngine:
    """HF transformers generation with batch-invariant per-sample seeds (CPU or one GPU).

    ``loads_in_place``: a host that ran one policy's engine builds the next policy's in its own process
    (:meth:`rcs_ray.sampling.host_actors._ModelHost.reload`), without a new process and its imports."""

    loads_in_place = True

    def __init__(self, model: ModelConfig, sampling: SamplingConfig):
        self.sampling = sampling
        self.tokenizer = load_tokenizer(model.tokenizer or model.path, model.trust_remote_code)
        self.device = device_for(sampling.num_gpus > 0)
        if sampling.tensor_parallel_size > 1:
            logging.getLogger(__name__).warning(
                "engine hf has no tensor parallelism: it runs on one device (tensor_parallel_size %d only places the "
                "actor); use engine vllm",
                sampling.tensor_parallel_size,
            )
        self.model = load_causal_lm(model.path, model.dtype, model.trust_remote_code, self.device, "policy.path")
        self.max_model_len = context_limit(
            self.model.config, tokenizer_limit(self.tokenizer), sampling.vllm_max_model_len
        )
        self.eos = stop_ids(self.tokenizer, self.model.generation_config)

    def generate(self, prompts: Sequence[Sequence[int]], seeds: Sequence[Sequence[int]]) -> list[list[Completion]]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        rows, owners = [], []
        for i, (ids, row_seeds) in enumerate(zip(prompts, seeds)):
            ids = list(ids)
            for s in row_seeds:
                rows.append((ids, s))
                owners.append(i)
        out: list[list[Completion]] = [[] for _ in prompts]
        if not rows:
            return out
        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, _) in enumerate(rows):  # left padding
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            mask[r, width - len(ids) :] = 1
        sp = self.sampling
        noise = GumbelNoise(
            [seed for _, seed in rows],
            sp.temperature,
            sp.top_p,
            top_k=sp.top_k,
            min_p=sp.min_p,
            repetition_penalty=sp.repetition_penalty,
            starts=[width - len(ids) for ids, _ in rows],
        )
        stop = StoppingCriteriaList([StopStrings(self.tokenizer, sp.stop, width)]) if sp.stop else None
        with torch.no_grad():
            seqs = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                do_sample=False,
                num_beams=1,
                max_new_tokens=sp.max_tokens,
                logits_processor=LogitsProcessorList([noise]),
                stopping_criteria=stop,
                pad_token_id=pad,
                eos_token_id=list(self.eos),
                temperature=None,
                top_p=None,
                top_k=None,
            )
        for r, gen in enumerate(seqs[:, width:].tolist()):
            end = next((i for i, t in enumerate(gen) if t in self.eos), None)
            finished = end is not None
            gen = gen[: end + 1] if finished else gen
            text = self.tokenizer.decode(gen, skip_special_tokens=True)
            cut = stop_cut(self.tokenizer, gen, text, sp.stop)
            if cut is not None:  # as vLLM: the text before it, a finished response
                (text, n), finished = cut, True
                gen = gen[:n]
            out[owners[r]].append(Completion(text=text, num_tokens=len(gen), finished=finished))
        return out


def stop_ids(tokenizer, generation_config=None) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and each ``eos_token_id`` of the model's generation config
    (Llama-3 Instruct ends a turn with ``<|eot_id|>``, Qwen2 with ``<|im_end|>``: generation must stop there)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    extra = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids += extra if isinstance(extra, (list, tuple)) else ([extra] if extra is not None else [])
    return list(dict.fromkeys(int(i) for i in ids))


class VLLMEngine:
    """vLLM offline engine (``vllm.LLM``); on a CPU build set VLLM_CPU_KVCACHE_SPACE (see docs/models.md)."""

    def __init__(self, model: ModelConfig, sampling: SamplingConfig):
        from rcs_ray.modeling.vllm_llm import build_llm

        self.sampling = sampling
        # TP workers (tensor_parallel_size > 1) are Ray actors inside this actor's placement group
        # (rcs_ray.sampling.placement); sampling.engine_kwargs win
        self.llm = build_llm(
            model.path,
            tokenizer=model.tokenizer or model.path,
            dtype=model.dtype,
            trust_remote_code=model.trust_remote_code,
            max_length=sampling.vllm_max_model_len,
            seed=sampling.seed,
            tensor_parallel_size=sampling.tensor_parallel_size,
            engine_kwargs=sampling.engine_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.stop = stop_ids(self.tokenizer, _generation_config(model.path))
        self._lock, self._loop, self._ids = threading.Lock(), None, itertools.count()

    def _requests(self, prompts, seeds):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        requests, params, owners = [], [], []
        for i, (ids, row_seeds) in enumerate(zip(prompts, seeds)):
            for s in row_seeds:
                requests.append(TokensPrompt(prompt_token_ids=list(ids)))
                params.append(
                    SamplingParams(
                        n=1,
                        temperature=self.sampling.temperature,
                        top_p=self.sampling.top_p,
                        top_k=self.sampling.top_k,
                        min_p=self.sampling.min_p,
                        repetition_penalty=self.sampling.repetition_penalty,
                        stop=list(self.sampling.stop) or None,
                        max_tokens=self.sampling.max_tokens,
                        seed=int(s),
                        stop_token_ids=self.stop,
                        # finished requests only (LLM.generate sets it too): the engine loop
                        # would otherwise build and detokenize every running request's output
                        # at every step
                        output_kind=RequestOutputKind.FINAL_ONLY,
                    )
                )
                owners.append(i)
        return requests, params, owners

    @staticmethod
    def _completion(output) -> Completion:
        o = output.outputs[0]
        return Completion(text=o.text, num_tokens=len(o.token_ids), finished=o.finish_reason == "stop")

    def generate(self, prompts: Sequence[Sequence[int]], seeds: Sequence[Sequence[int]]) -> list[list[Completion]]:
        """One blocking ``LLM.generate`` over every sample of ``prompts`` (the raw engine's best case)."""
        requests, params, owners = self._requests(prompts, seeds)
        out: list[list[Completion]] = [[] for _ in prompts]
        if requests:
            for owner, res in zip(owners, self.llm.generate(requests, params, use_tqdm=False)):
                out[owner].append(self._completion(res))
        return out

    def submit(self, prompts: Sequence[Sequence[int]], seeds: Sequence[Sequence[int]]) -> Future:
        """Queue every sample of ``prompts`` into the running engine; the future resolves to what :meth:`generate`
        returns for the same arguments. Thread-safe: any number of batches may be in flight."""
        future: Future = Future()
        requests, params, owners = self._requests(prompts, seeds)
        if not requests:
            future.set_result([[] for _ in prompts])
            return future
        with self._lock:
            if self._loop is None:
                self._inbox: queue.Queue = queue.Queue()
                self._loop = threading.Thread(target=self._run, name="vllm-engine-loop", daemon=True)
                self._loop.start()
        self._inbox.put((future, len(prompts), requests, params, owners))
        return future

    def _run(self) -> None:
        """The engine loop: admit queued batches between steps, step while anything runs, resolve finished batches."""
        engine = self.llm.llm_engine
        waiting: dict = {}  # request id -> (batch state, owner, position)
        while True:
            block = not waiting and not engine.has_unfinished_requests()
            try:
                while True:
                    item = self._inbox.get(block=block)
                    block = False
                    self._admit(engine, item, waiting)
            except queue.Empty:
                pass
            try:
                outputs = engine.step()
            except Exception as exc:  # noqa: BLE001 - the engine failed: every batch in flight fails with it
                for state, _, _ in list(waiting.values()):
                    if not state["future"].done():
                        state["future"].set_exception(exc)
                waiting.clear()
                continue
            for output in outputs:
                if not output.finished or output.request_id not in waiting:
                    continue
                state, owner, pos = waiting.pop(output.request_id)
                state["out"][owner][pos] = self._completion(output)
                state["left"] -= 1
                if state["left"] == 0:
                    state["future"].set_result(state["out"])

    def _admit(self, engine, item, waiting: dict) -> None:
        future, num_prompts, requests, params, owners = item
        counts = [owners.count(i) for i in range(num_prompts)]
        state = {"future": future, "left": len(requests), "out": [[None] * c for c in counts]}
        seen = [0] * num_prompts
        added = []
        try:
            for request, param, owner in zip(requests, params, owners):
                rid = f"rcs-{next(self._ids)}"  # outputs carry this (external) id
                engine.add_request(rid, request, param)
                added.append(rid)
                waiting[rid] = (state, owner, seen[owner])
                seen[owner] += 1
        except Exception as exc:  # noqa: BLE001 - a request the engine refuses fails its batch only
            for rid in added:
                waiting.pop(rid, None)
            engine.abort_request(added)
            future.set_exception(exc)


def _generation_config(path: str):
    """The model directory's ``generation_config.json`` (``None`` without one)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None


def make_engine(model: ModelConfig, sampling: SamplingConfig) -> Engine:
    """The engine ``sampling.engine`` names: one of :data:`rcs_ray.registry.ENGINES` (``hf``, ``vllm``), or a custom
    engine as ``package.module:ClassName``.

    A custom engine is the extension point for other backends (an inference server client, the simulated engine of
    ``benchmarks/sim.py``): a class built as ``ClassName(model, sampling)`` whose instances have ``tokenizer`` (an HF
    tokenizer, or anything :mod:`rcs_ray.prompting` can use: ``apply_chat_template``, ``chat_template`` and
    ``__call__(text, add_special_tokens) -> {"input_ids": [...]}``), ``max_model_len`` and
    ``generate(prompt_ids, seeds) -> list[list[Completion]]`` (see :class:`Engine`). Its module must be importable
    on every Ray worker.

    Raises:
        RcsInputError: an unknown name, or a dotted path that cannot be imported or is not a class.
    """
    from rcs_ray.errors import RcsInputError

    name = sampling.engine
    if not registry.is_engine_name(name):
        raise RcsInputError(
            f"sampling.engine: {name!r} is not one of {sorted(registry.ENGINES)} nor a custom engine "
            f"'package.module:ClassName'"
        )
    try:
        cls = registry.resolve(registry.ENGINES.get(name, name), "sampling.engine")
    except ImportError as exc:
        raise RcsInputError(str(exc)) from None
    if not isinstance(cls, type):
        raise RcsInputError(f"sampling.engine: {name!r} is not a class (got {type(cls).__name__})")
    return cls(model, sampling)
