"""What a training stage refuses, or warns about, before it trains: GPU-only settings without GPUs, a schedule its
pairs cannot fill, a model that would load with random weights or does not fit the tokenizer, and suspicious data
(:func:`data_checks`). Each refusal is one :class:`~rcs_ray.errors.RcsInputError` line, raised before training starts.
"""

from __future__ import annotations

import sys
from typing import Dict

import pyarrow as pa

from rcs_ray import storage, tracking
from rcs_ray.config import RunConfig, TrainConfig
from rcs_ray.data.pairs import PairSet, suspicious
from rcs_ray.errors import RcsInputError


def check_gpu_only(cfg: RunConfig, t: TrainConfig) -> None:
    """Refuse flash-attention without GPUs and trackers that are not installed, in one line, before anything loads
    (QLoRA without GPUs is refused by the config checks of every stage's train settings)."""
    tracking.check_installed(t.report_to)
    if cfg.policy.attn_implementation == "flash_attention_2" and not t.use_gpu:
        raise RcsInputError(
            "policy.attn_implementation=flash_attention_2 needs CUDA GPUs and the flash-attn "
            "package: set train.use_gpu=true, or use sdpa"
        )


def check_schedule(prs: PairSet, t: TrainConfig) -> None:
    """Refuse, naming the pairs, a training schedule these pairs cannot fill (the loop's own message)."""
    from rcs_ray.train.batches import schedule

    try:
        schedule(len(prs.rows), t, t.num_workers)
    except ValueError as exc:
        raise RcsInputError(f"{prs.source}: {exc}") from None


def check_models(cfg: RunConfig, tok, models: Dict[str, str]) -> None:
    """Refuse a local model (``{config key: model dir}``) that would leave weights random, or any model that does not
    fit the tokenizer ``tok``: never train or score with random weights."""
    from rcs_ray.modeling.checkpoints import check_causal_lm
    from rcs_ray.modeling.loading import check_models_fit

    for key, path in models.items():
        if not storage.is_uri(path):
            check_causal_lm(path, key, cfg.policy.trust_remote_code)
    check_models_fit(tok, list(models.values()), cfg.policy.trust_remote_code)


def data_checks(prs: PairSet, features: pa.Table, t: TrainConfig) -> dict:
    """Counts of suspicious training data, warned about (or refused, ``train.on_suspicious_data: error``):
    repeated pairs, chosen == rejected, pairs whose tokens reach ``train.max_length`` (cut, or just fitting).

    Raises:
        RcsInputError: with ``error``, when any of them is found (more than half the pairs, for the length).
    """
    import pyarrow.compute as pc

    checks = suspicious(prs)
    longest = pc.max_element_wise(
        pc.list_value_length(features.column("chosen_input_ids")),
        pc.list_value_length(features.column("rejected_input_ids")),
    )
    checks["at_max_length"] = int(pc.sum(pc.greater_equal(longest, t.max_length)).as_py() or 0)
    checks["at_max_length_share"] = round(checks["at_max_length"] / max(1, features.num_rows), 4)
    problems = (
        [f"{checks['duplicate_pairs']} repeated pairs (same prompt id, chosen and rejected)"]
        if checks["duplicate_pairs"]
        else []
    )
    if checks["identical_pairs"]:
        problems.append(f"{checks['identical_pairs']} pairs with chosen == rejected (no learning signal)")
    if checks["at_max_length_share"] > 0.5:
        problems.append(
            f"{100 * checks['at_max_length_share']:.0f}% of the pairs reach train.max_length="
            f"{t.max_length} (cut): raise it"
        )
    if problems and t.on_suspicious_data == "error":
        raise RcsInputError(f"{prs.source}: {'; '.join(problems)} (train.on_suspicious_data=error)")
    for problem in problems:
        print(f"warning: {prs.source}: {problem}", file=sys.stderr)
    return checks
