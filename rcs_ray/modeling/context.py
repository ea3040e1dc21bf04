"""The context limit: how many tokens (prompt + response) a model reads at most. One rule for every role that asks —
generation engines (HF and vLLM), reward-model scorers and judges — so that a prompt too long for one engine is too
long for the other.

The rule, first that applies:

1. an explicit setting wins (``sampling.vllm_max_model_len`` for generation, an objective's ``max_length`` for a
   scorer or judge; ``engine_kwargs.max_model_len`` still wins inside vLLM);
2. else the smallest of the model config's position limits (``max_position_embeddings``, ``n_positions``,
   ``max_seq_len``, ``seq_length``, ``model_max_length``, ``max_sequence_length``, ``max_seq_length``, ``seq_len``:
   the keys vLLM reads, as written — RoPE scaling does not extend it) and the tokenizer's ``model_max_length``;
   a value of 2**30 or more means "no limit" (transformers writes ``int(1e30)`` for a tokenizer that names none);
3. else :data:`DEFAULT_CONTEXT` (2048 tokens, vLLM's own default for a config that names no limit).

vLLM gets the limit as ``max_model_len`` (:func:`rcs_ray.modeling.vllm_llm.llm_kwargs`), so both engines agree.
"""

from __future__ import annotations

import json
import os
from typing import Optional

DEFAULT_CONTEXT = 2048
NO_LIMIT = 1 << 30
POSITION_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)


def _real(value) -> Optional[int]:
    """``value`` as a limit: a positive int below :data:`NO_LIMIT`, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if 0 < value < NO_LIMIT else None


def position_limit(config) -> Optional[int]:
    """The smallest position limit a model config names (its text config's, for a multimodal one); None if none."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limits = [v for v in (_real(getattr(text, key, None)) for key in POSITION_KEYS) if v is not None]
    return min(limits) if limits else None


def tokenizer_limit(tokenizer) -> Optional[int]:
    """A loaded tokenizer's ``model_max_length``; None for transformers' "no limit" sentinel."""
    return _real(getattr(tokenizer, "model_max_length", None))


def saved_tokenizer_limit(path: Optional[str]) -> Optional[int]:
    """``model_max_length`` of the ``tokenizer_config.json`` in directory ``path`` (None without one), read without
    loading the tokenizer."""
    name = os.path.join(path, "tokenizer_config.json") if path else ""
    if not name or not os.path.isfile(name):
        return None
    try:
        with open(name, encoding="utf-8") as fh:
            return _real(json.load(fh).get("model_max_length"))
    except (OSError, ValueError, AttributeError):
        return None


def context_limit(config, tokenizer_max_length: Optional[int] = None, setting: Optional[int] = None) -> int:
    """The tokens a model reads at most, by the module's rule.

    Args:
        config: the model's HF config (or anything with its position fields).
        tokenizer_max_length: the tokenizer's limit (:func:`tokenizer_limit`, :func:`saved_tokenizer_limit`).
        setting: an explicit setting; it wins when given (not None, above 0).

    Returns:
        The limit in tokens.
    """
    if setting:
        return int(setting)
    limits = [v for v in (position_limit(config), _real(tokenizer_max_length)) if v is not None]
    return min(limits) if limits else DEFAULT_CONTEXT
