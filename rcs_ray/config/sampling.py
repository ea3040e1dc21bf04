"""The sampling config (``sampling:``): how candidates are generated and placed; read by :mod:`rcs_ray.sampling`
(engines: :data:`rcs_ray.registry.ENGINES`, or a custom ``package.module:ClassName``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from rcs_ray import registry, selection
from rcs_ray.config.fields import Checker, doc_field

ENGINES = tuple(registry.ENGINES)


@dataclass
class AdaptiveConfig:
    """Adaptive resampling: prompts that fail with n samples get more, in rounds, up to ``n_max``."""

    enabled: bool = doc_field(False, "Resample the prompts that found no pair, with n, 2n, 4n, ... samples per round.")
    n_max: int = doc_field(16, "The most samples a prompt may get in one round (>= sampling.n).")
    rounds: int = doc_field(2, "Resampling rounds after the first (each doubles the samples, up to n_max).")


@dataclass
class SamplingConfig:
    """Generation of a stage's candidates: the engine, its sampling controls, its actors and their resources."""

    engine: str = doc_field("hf", "hf | vllm | a custom engine 'package.module:ClassName'.")
    n: int = doc_field(8, "Candidates per prompt.")
    temperature: float = doc_field(1.0, "Sampling temperature (0: greedy).")
    top_p: float = doc_field(
        1.0, "Nucleus sampling: sample among the most likely tokens holding this much probability, in (0, 1] (1: off)."
    )
    top_k: int = doc_field(0, "Sample among the k most likely tokens (0: off).")
    min_p: float = doc_field(0.0, "Drop tokens less likely than min_p x the most likely one (0: off).")
    repetition_penalty: float = doc_field(1.0, "> 1 discourages tokens already in the prompt or the response (1: off).")
    stop: List[str] = doc_field(
        factory=list,
        doc="Stop strings: a response ends before the first one (which is not kept) and counts as finished.",
    )
    truncated: str = doc_field(
        "not_chosen",
        "A sample cut at max_tokens: not_chosen (only the rejected side) | drop "
        "(never in a pair) | keep (like any candidate); rcs_ray.selection.",
    )
    max_tokens: int = doc_field(64, "Most new tokens per response.")
    seed: int = doc_field(0, "Sampling seed (samples do not depend on batching or actors).")
    batch_size: int = doc_field(16, "Prompts per batch.")
    num_actors: int = doc_field(1, "Generation actor-pool size.")
    max_concurrent_batches: int = doc_field(
        4,
        "Batches in flight per generation actor for engines with submit "
        "(vLLM: one continuous batch); hf and other blocking engines: 1.",
    )
    num_gpus: float = doc_field(0.0, "GPUs per generation actor (tensor_parallel_size > 1: per TP worker).")
    tensor_parallel_size: int = doc_field(1, "> 1: one placement group of this many GPU bundles per engine.")
    placement_strategy: str = doc_field(
        "STRICT_PACK", "Of an engine's TP bundles: STRICT_PACK (one node) | PACK | SPREAD."
    )
    num_cpus: float = doc_field(1.0, "CPUs per generation actor.")
    resources: Dict[str, float] = doc_field(factory=dict, doc="Custom Ray resources per generation actor.")
    vllm_max_model_len: Optional[int] = doc_field(
        None, "vLLM's max_model_len (prompt + response tokens); None: the model's."
    )
    engine_kwargs: Dict[str, Any] = doc_field(
        factory=dict,
        doc="Extra vllm.LLM keyword arguments (gpu_memory_utilization, enable_prefix_caching, max_num_seqs, ...).",
    )
    store_candidates: bool = doc_field(True, "Write candidates.parquet (every group's m x K rewards: rcs-ray select).")
    adaptive: AdaptiveConfig = doc_field(
        factory=AdaptiveConfig, doc="Adaptive resampling of the prompts that found no pair."
    )

    def check(self, c: Checker, key: str = "sampling") -> None:
        """The engine, the sampling controls' ranges, the actors and their placement, adaptive resampling.

        Raises:
            RcsInputError: one line naming the key at fault.
        """
        if not registry.is_engine_name(self.engine):
            c.fail(
                f"{key}.engine",
                f"{self.engine!r} is not one of {list(registry.ENGINES)} nor a custom engine "
                f"'package.module:ClassName'",
            )
        c.at_least(f"{key}.n", self.n, 1)
        c.at_least(f"{key}.temperature", self.temperature, 0.0)
        if not 0 < self.top_p <= 1:
            c.fail(f"{key}.top_p", f"must be in (0, 1], got {self.top_p}")
        self._check_controls(c, key)
        for name in ("max_tokens", "batch_size", "num_actors", "max_concurrent_batches"):
            c.at_least(f"{key}.{name}", getattr(self, name), 1)
        c.at_least(f"{key}.num_gpus", self.num_gpus, 0)
        c.at_least(f"{key}.tensor_parallel_size", self.tensor_parallel_size, 1)
        c.choice(f"{key}.placement_strategy", self.placement_strategy, ("STRICT_PACK", "PACK", "SPREAD"))
        if self.tensor_parallel_size > 1 and not self.num_gpus > 0:
            c.fail(
                f"{key}.tensor_parallel_size",
                f"{self.tensor_parallel_size} needs GPUs: set sampling.num_gpus "
                "(GPUs per tensor-parallel worker, usually 1)",
            )
        c.resources(f"{key}.resources", self.resources)
        if self.adaptive.enabled:
            c.at_least(f"{key}.adaptive.n_max", self.adaptive.n_max, self.n)
            c.at_least(f"{key}.adaptive.rounds", self.adaptive.rounds, 1)

    def _check_controls(self, c: Checker, key: str) -> None:
        """top_k, min_p, repetition_penalty and stop strings, with vLLM's meaning (the HF engine gives them the
        same)."""
        if self.top_k < 0:
            c.fail(f"{key}.top_k", f"must be >= 0 (0: off), got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            c.fail(f"{key}.min_p", f"must be in [0, 1] (0: off), got {self.min_p}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            c.fail(f"{key}.repetition_penalty", f"must be a finite number > 0 (1: off), got {self.repetition_penalty}")
        for i, text in enumerate(self.stop):
            if not text:
                c.fail(f"{key}.stop.{i}", "an empty stop string would end every response before its first token")
        c.choice(f"{key}.truncated", self.truncated, selection.TRUNCATION_RULES)
