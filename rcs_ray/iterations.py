"""Iterative RCS within a stage (``stages.N.iterations``): the stage's prompts in N disjoint slices, each sampled
from the policy the previous slice trained.

With ``iterations: N > 1`` (``sample: true``) the stage's prompts (after ``data.limit``) are split into N disjoint
slices that together are every prompt once (:func:`prompt_slices`: ranked by a hash of ``sampling.seed`` and the
``prompt_id``, cut into N near-equal parts, each kept in file order), so the stage samples as many prompts, and
selects as many pairs, as the one-shot stage would. Iteration i samples its slice from the policy after iteration
i − 1 (iteration 1 from the stage's starting policy), scores and RC-selects as the stage does (its ``rc``, adaptive
resampling and all), then trains on those pairs starting from the previous iteration's weights with the stage's
``train`` settings: ``train.num_epochs`` over this iteration's pairs, or a ``train.max_steps`` split evenly over the
iterations (``ceil(max_steps / N)`` each), so the stage trains about as many steps as one-shot; the learning-rate
schedule and warmup restart per iteration, with a fresh optimizer. The reference of every iteration
is the stage's starting policy (what a DPO stage's reference is), and the policy chain of the earlier objectives'
implicit rewards (sampling's ``from_stage``, SPO's margins) is the chain of *stage* policies: iterations never enter
it. MODPO's margins are the pairs' recorded rewards, scored as in a one-shot stage.

Files (:class:`rcs_ray.run_layout.StageDir`)::

    stage<k>/iter<i>/prompts.jsonl     the slice (canonical rows: prompt_id, prompt, chosen, rejected)
    stage<k>/iter<i>/sampling/         pairs.parquet, failed.parquet, stats.json, candidates.parquet
    stage<k>/iter<i>/train/            iterations 1 .. N-1: the trained policy and its metrics
    stage<k>/train/                    iteration N: the stage's policy, where the next stage and eval read it

The stage's manifest records the steps ``iter<i>/sample`` and ``iter<i>/train``; a rerun skips every finished
iteration (each step's inputs name the policy it starts from by content fingerprint, so a redone iteration redoes
the ones after it). The steps are the workflow's own (:class:`Steps`). ``rcs-ray sample`` / ``rcs-ray train`` run
one step over the whole stage: iterations are a workflow (``rcs-ray run``) setting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Callable, List, Sequence

from rcs_ray import storage
from rcs_ray.config import RunConfig, stage_train
from rcs_ray.config.data import DataConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.run_layout import RunLayout

SLICE_COLUMNS = ("prompt_id", "prompt", "chosen", "rejected")


def prompt_slices(prompt_ids: Sequence[str], iterations: int, seed: int) -> List[List[int]]:
    """Row indices of each iteration's prompts: disjoint, together every row once, sizes within one of each other.

    Rows are ranked by ``sha256(seed, prompt_id)`` and the ranking is cut into ``iterations`` contiguous parts; each
    part lists its rows in file order. The slices depend only on the ids, ``iterations`` and ``seed`` (not on the
    order of the file); another seed is another split.

    Raises:
        RcsInputError: fewer prompts than iterations (an iteration would have none).
    """
    n = len(prompt_ids)
    if iterations < 1 or n < iterations:
        raise RcsInputError(f"iterations: {iterations} iterations need at least {iterations} prompts, got {n}")
    order = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}\x1f{prompt_ids[i]}".encode()).hexdigest())
    cuts = [n * j // iterations for j in range(iterations + 1)]
    return [sorted(order[cuts[j] : cuts[j + 1]]) for j in range(iterations)]


def write_slices(cfg: RunConfig, k: int) -> List[str]:
    """Stage ``k``'s prompt slices as JSONL files ``stage<k>/iter<i>/prompts.jsonl`` (a file already holding the
    same text is left alone, so its fingerprint, and the steps that read it, stay unchanged)."""
    from rcs_ray.data import read_prompts
    from rcs_ray.user_paths import resolve_data

    st = cfg.stages[k]
    rows = read_prompts(resolve_data(st.data, cfg.tinyworld, key=f"stages.{k}.data.path")).rows
    present = [c for c in SLICE_COLUMNS if any(c in r for r in rows)]
    try:
        slices = prompt_slices([r["prompt_id"] for r in rows], st.iterations, cfg.sampling.seed)
    except RcsInputError as exc:
        raise RcsInputError(f"stages.{k}.{exc}") from None
    stage, paths = RunLayout(cfg.output_dir).stage(k), []
    for i, rows_of in enumerate(slices, 1):
        path = stage.iteration(i).prompts
        text = "".join(json.dumps({c: rows[j].get(c) for c in present}) + "\n" for j in rows_of)
        if not (storage.exists(path) and storage.read_text(path) == text):
            storage.write_text(path, text)
        paths.append(path)
    return paths


def sliced(cfg: RunConfig, k: int, path: str) -> RunConfig:
    """One iteration's config: stage ``k`` reads its prompts from the slice file ``path``, and a ``train.max_steps``
    of the stage is split over its iterations (rounded up), so the stage trains as many steps as one-shot."""
    st, n = cfg.stages[k], cfg.stages[k].iterations
    steps = stage_train(cfg, k).max_steps
    train = st.train if steps is None else dataclasses.replace(st.train, max_steps=-(-steps // n))
    stages = list(cfg.stages)
    stages[k] = dataclasses.replace(st, data=DataConfig(path=path, format="jsonl"), train=train, iterations=1)
    return dataclasses.replace(cfg, stages=stages)


@dataclass(frozen=True)
class Steps:
    """The workflow's steps an iteration runs (:mod:`rcs_ray.workflow` passes its own: this module imports none of
    it): ``sample`` and ``train`` take the workflow step's arguments plus ``step`` (the manifest name) and
    ``out_dir``; ``fingerprint(path)`` is the content fingerprint of a model dir or file."""

    sample: Callable
    train: Callable
    fingerprint: Callable[[str], str]


def run_stage(cfg: RunConfig, k: int, manifest, base: dict, outcome, chain: list, progress: bool, steps: Steps) -> dict:
    """Stage ``k``'s iterations (see the module docstring), each step skipped when its manifest entry is done with
    the same inputs. Returns the manifest entry of the last iteration's training (the stage's policy)."""
    n, stage = cfg.stages[k].iterations, RunLayout(cfg.output_dir).stage(k)
    policy, per_iteration = base["policy"], []
    for i, path in enumerate(write_slices(cfg, k), 1):
        it = stage.iteration(i)
        ibase = dict(
            base,
            policy=policy,
            policy_fp=steps.fingerprint(policy) if i > 1 else base["policy_fp"],
            reference=base["policy"],
            data=path,
            data_fp=steps.fingerprint(path),
            iteration=[i, n],
        )
        icfg = sliced(cfg, k, path)
        pairs = steps.sample(
            icfg, k, manifest, ibase, outcome, chain, progress, step=f"iter{i}/sample", out_dir=it.sampling.dir
        )
        train_dir = stage.train.dir if i == n else it.train.dir
        entry = steps.train(
            icfg, k, manifest, ibase, pairs, outcome, chain, progress, step=f"iter{i}/train", out_dir=train_dir
        )
        outcome.stats[f"iter{i}/train"] = entry["stats"]
        per_iteration.append({"sampled_from": policy, "pairs": pairs, "policy": entry["outputs"]["model"]})
        policy = entry["outputs"]["model"]
    outcome.stats["sample"] = total_sample_stats([outcome.stats[f"iter{i}/sample"] for i in range(1, n + 1)])
    outcome.stats["iterations"] = per_iteration
    return entry


def total_sample_stats(stats: List[dict]) -> dict:
    """The iterations' sampling stats added up (counts, tokens, seconds; the failure rate of the total)."""
    total = {}
    for key in ("prompts", "pairs", "failed", "tokens_generated", "seconds"):
        values = [s.get(key) for s in stats]
        total[key] = sum(values) if all(v is not None for v in values) else None
    total["failure_rate"] = total["failed"] / total["prompts"] if total["prompts"] else None
    reasons: dict = {}
    for s in stats:
        for reason, count in (s.get("failed_by_reason") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + count
    total["failed_by_reason"] = reasons
    return total


def forget_other_mode(cfg: RunConfig, k: int, manifest) -> None:
    """A stage whose ``iterations`` changed: the manifest entries of the other way of running it (one-shot
    ``sample`` / ``train``, or ``iter<i>/...`` steps of another count, whose training went elsewhere) are dropped,
    and the stage's train dir is removed when one of them trained into it (its checkpoints belong to other inputs).
    Nothing changes otherwise."""
    n, stage = cfg.stages[k].iterations, RunLayout(cfg.output_dir).stage(k)
    if n > 1:  # where each current training step puts its model
        models = {f"iter{i}/train": stage.iteration(i).train.model for i in range(1, n)}
        models[f"iter{n}/train"] = stage.train.model
        current = set(models) | {f"iter{i}/sample" for i in range(1, n + 1)}
    else:
        models, current = {"train": stage.train.model}, {"sample", "train"}
    steps = manifest.data["steps"]
    stale = [s for s in steps if s not in current or (s in models and _model_of(steps[s]) not in (None, models[s]))]
    if not stale:
        return
    if any(_model_of(steps[s]) == stage.train.model for s in stale):
        storage.remove(stage.train.dir)
    manifest.forget(stale)


def _model_of(entry: dict):
    return (entry.get("outputs") or {}).get("model")
