"""The one ``vllm.LLM`` builder, for the generation engine, the vLLM reward-model scorer and the vLLM judge.

Every ``vllm.LLM`` here gets the same arguments from :func:`llm_kwargs`: the model and its tokenizer, ``dtype``,
``trust_remote_code``, ``max_model_len`` by the one context-limit rule (:mod:`rcs_ray.modeling.context`, so vLLM and
the HF side read the same number of tokens), ``seed`` when the role has one, tensor parallelism over Ray, and on the
CPU build (no CUDA) eager mode (no CUDA graphs) and an in-process engine core (it starts 7x faster and generates 2x
faster on small models; on a GPU vLLM's default, the engine core in its own busy-looping process, overlaps scheduling
with the GPU). The role's own arguments come next, and the user's ``engine_kwargs`` win over all of them.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional


def llm_kwargs(
    model: str,
    *,
    dtype: str,
    trust_remote_code: bool,
    max_model_len: int,
    cuda: bool,
    tokenizer: Optional[str] = None,
    seed: Optional[int] = None,
    tensor_parallel_size: int = 1,
    extra: Optional[Mapping[str, Any]] = None,
    engine_kwargs: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The keyword arguments of ``vllm.LLM`` for one model (no vLLM import: testable anywhere).

    Args:
        model: the local model directory.
        dtype: ``float32`` | ``bfloat16`` | ``float16``.
        trust_remote_code: the role's setting.
        max_model_len: the context limit (:func:`rcs_ray.modeling.context.context_limit`).
        cuda: whether a CUDA GPU is there (False: the CPU build's settings).
        tokenizer: the tokenizer directory (default: the model's).
        seed: vLLM's engine seed (None: vLLM's default).
        tensor_parallel_size: GPUs per engine; above 1 its workers are Ray actors (in the caller's placement group).
        extra: the role's own arguments (``runner="pooling"``, ...), over the shared ones.
        engine_kwargs: the user's extra arguments; they win over everything.

    Returns:
        The arguments, ready for ``vllm.LLM(**kwargs)``.
    """
    kwargs: Dict[str, Any] = dict(
        model=model,
        tokenizer=tokenizer or model,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        max_model_len=int(max_model_len),
        tensor_parallel_size=tensor_parallel_size,
    )
    if seed is not None:
        kwargs["seed"] = seed
    if tensor_parallel_size > 1:
        kwargs["distributed_executor_backend"] = "ray"
    if not cuda:
        kwargs["enforce_eager"] = True  # the CPU build: no CUDA graphs
    return {**kwargs, **(extra or {}), **(engine_kwargs or {})}


def vllm_context_limit(model: str, tokenizer: Optional[str], trust_remote_code: bool, setting: Optional[int]) -> int:
    """The context limit of a model directory by the one rule, read without loading weights or the tokenizer
    (its ``config.json`` and ``tokenizer_config.json``)."""
    from rcs_ray.modeling.context import context_limit, saved_tokenizer_limit

    if setting:
        return int(setting)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    return context_limit(config, saved_tokenizer_limit(tokenizer or model))


def build_llm(
    model: str,
    *,
    dtype: str,
    trust_remote_code: bool,
    max_length: Optional[int] = None,
    tokenizer: Optional[str] = None,
    seed: Optional[int] = None,
    tensor_parallel_size: int = 1,
    extra: Optional[Mapping[str, Any]] = None,
    engine_kwargs: Optional[Mapping[str, Any]] = None,
):
    """A ``vllm.LLM`` built from :func:`llm_kwargs`; read its context limit back from
    ``llm.llm_engine.model_config.max_model_len`` (``engine_kwargs.max_model_len`` may have replaced it).

    Args:
        max_length: the role's explicit context setting (None: the model's limit by the one rule).
        model, dtype, trust_remote_code, tokenizer, seed, tensor_parallel_size, extra, engine_kwargs: as in
            :func:`llm_kwargs`.
    """
    from rcs_ray.modeling.devices import has_cuda

    cuda = has_cuda()
    if not cuda:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the CPU build: an in-process engine core
    from vllm import LLM

    limit = vllm_context_limit(model, tokenizer, trust_remote_code, max_length)
    return LLM(
        **llm_kwargs(
            model,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            max_model_len=limit,
            cuda=cuda,
            tokenizer=tokenizer,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            extra=extra,
            engine_kwargs=engine_kwargs,
        )
    )
