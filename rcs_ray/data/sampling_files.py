"""The files a sampling step writes, and the metadata that makes each describe itself (schema metadata key
``rcs_ray``: the objective names of the K rewards, the target, and for candidates the stage's selection settings).

- **pairs.parquet** (:func:`pairs_schema`): TRL's ``prompt, chosen, rejected`` plus ``prompt_id``,
  ``chosen_rewards`` / ``rejected_rewards`` (K floats each), ``target``, ``chosen_source`` / ``rejected_source``,
  ``chosen_finished`` / ``rejected_finished`` (false: the response was cut at ``sampling.max_tokens``; training
  appends no end of turn to it), ``num_candidates``, ``round``.
- **failed.parquet** (:func:`failed_schema`): every prompt that gave no pair, with its reason.
- **candidates.parquet** (:func:`candidates_schema`): every group as the RC step saw it -- candidates, sources,
  token counts, whether each finished, the m x K reward matrix -- and the stage's selection settings (strategy,
  margin, enforce, weights, include_original, truncated, seed), so ``rcs-ray select`` reproduces the stage by
  default and any baseline can be selected from the same candidates.
"""

from __future__ import annotations

import json
from typing import Dict, Optional, Sequence

import pyarrow as pa

from rcs_ray.data.pairs import METADATA_KEY, file_metadata, text_type

__all__ = ["candidates_schema", "failed_schema", "file_metadata", "pairs_schema"]
_FLOATS = pa.list_(pa.float64())


def _metadata(objectives: Sequence[str], target: Optional[str], **extra) -> Dict[bytes, bytes]:
    return {METADATA_KEY: json.dumps({"objectives": list(objectives), "target": target, **extra}).encode()}


def pairs_schema(chat: bool, objectives: Sequence[str], target: Optional[str]) -> pa.Schema:
    """The schema of ``pairs.parquet``, with the objective names and the target in its metadata."""
    text = text_type(chat)
    return pa.schema(
        [
            ("prompt", text),
            ("chosen", text),
            ("rejected", text),
            ("prompt_id", pa.string()),
            ("chosen_rewards", _FLOATS),
            ("rejected_rewards", _FLOATS),
            ("target", pa.string()),
            ("chosen_source", pa.string()),
            ("rejected_source", pa.string()),
            ("chosen_finished", pa.bool_()),
            ("rejected_finished", pa.bool_()),
            ("num_candidates", pa.int64()),
            ("round", pa.int64()),
        ],
        metadata=_metadata(objectives, target),
    )


def failed_schema(chat: bool, objectives: Sequence[str], target: Optional[str]) -> pa.Schema:
    """``failed.parquet``: ``prompt_id, prompt, reason, detail, num_candidates, num_distinct, rounds``."""
    return pa.schema(
        [
            ("prompt_id", pa.string()),
            ("prompt", text_type(chat)),
            ("reason", pa.string()),
            ("detail", pa.string()),
            ("num_candidates", pa.int64()),
            ("num_distinct", pa.int64()),
            ("rounds", pa.int64()),
        ],
        metadata=_metadata(objectives, target),
    )


def candidates_schema(
    chat: bool, objectives: Sequence[str], target: Optional[str], selection: Optional[dict] = None
) -> pa.Schema:
    """The schema of ``candidates.parquet``: every prompt group as the RC step saw it -- ``prompt_id, prompt,
    candidates, sources, candidate_tokens, candidate_finished, rewards`` (m x K, objectives in the metadata's order),
    ``error``, ``round`` (the round it was finalised in) -- with ``selection`` (the stage's strategy, margin, enforce,
    weights, include_original, truncated and seed) in the metadata."""
    return pa.schema(
        [
            ("prompt_id", pa.string()),
            ("prompt", text_type(chat)),
            ("candidates", pa.list_(pa.string())),
            ("sources", pa.list_(pa.string())),
            ("candidate_tokens", pa.list_(pa.int64())),
            ("candidate_finished", pa.list_(pa.bool_())),
            ("rewards", pa.list_(_FLOATS)),
            ("error", pa.string()),
            ("round", pa.int64()),
        ],
        metadata=_metadata(objectives, target, **({"selection": selection} if selection else {})),
    )
