"""Per-sample seeds: every sample of a prompt has its own seed, so samples (and random selections) do not depend on
the batch size, the number of actors, the order of prompts or the resampling round."""

from __future__ import annotations

import hashlib


def sample_seed(seed: int, prompt_id: str, sample_index: int) -> int:
    """A 31-bit seed for sample ``sample_index`` of a prompt: independent of batch size, actor count, prompt order
    and resampling round (adaptive resampling's first m samples are those of a fixed run with n = m)."""
    digest = hashlib.sha256(f"{seed}\x1f{prompt_id}\x1f{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def rc_seed(seed: int, prompt_id: str) -> int:
    """Seed of the random choice of the ``rc_random`` strategy for one prompt (independent of batching)."""
    return sample_seed(seed, prompt_id, -1)
