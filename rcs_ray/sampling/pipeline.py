"""The RCS sampling pipeline on Ray Data: read prompts -> generate -> score (one pool per model) -> RC filter ->
write pairs / failed / stats, with optional adaptive resampling of failed prompts.

One row per prompt group from start to end: every stage is a ``map_batches``; there is no groupby and no shuffle.
Generation and model scorers run in actor pools (``ActorPoolStrategy``) that load their model once per actor; a dead
actor is restarted and its batch retried (Ray Data's actor-pool default: unlimited restarts and task retries). The RC
filter is a cheap row-wise stage over the vectorized core of :mod:`rcs_ray.rc`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Optional

from rcs_ray.config import ModelConfig, ObjectiveConfig, RunConfig, StageConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.paths import resolve_data, resolve_model_dir
from rcs_ray.sampling.schema import encode_prompt, response_text, rows_to_table
from rcs_ray.storage import StagedDir, join

log = logging.getLogger(__name__)

# Failures that more samples can fix (adaptive resampling retries them).
RESAMPLABLE = ("no_rc_pair", "tied_on_target", "all_candidates_identical", "too_few_candidates")


@dataclass
class SamplingResult:
    out_dir: str
    pairs: str
    failed: str
    stats_path: str
    stats: dict


def stage_index(cfg: RunConfig, stage: Optional[int]) -> int:
    """The stage to sample for: ``stage`` (0-based) or the first stage with ``sample: true``."""
    if stage is None:
        for i, s in enumerate(cfg.stages):
            if s.sample:
                return i
        raise RcsInputError("no stage with 'sample: true' in the config; pass --stage")
    if not 0 <= stage < len(cfg.stages):
        raise RcsInputError(f"--stage {stage + 1} out of range: the config has {len(cfg.stages)} stage(s)")
    return stage


def scored_objectives(cfg: RunConfig, stage: StageConfig) -> list[ObjectiveConfig]:
    """Objectives 1..k for a stage whose objective is k-th, plus any enforced objective named beyond it."""
    names = cfg.objective_names
    upto = names[: names.index(stage.objective) + 1]
    extra = [n for n in (stage.rc.enforce or []) if n not in upto]
    return [cfg.objectives[names.index(n)] for n in upto + extra]


def _resolve(path: Optional[str], key: str, cfg: RunConfig) -> str:
    return resolve_model_dir(path, key, cfg.tinyworld)


def resolve_models(cfg: RunConfig, objectives: list[ObjectiveConfig], policy: Optional[str]):
    """The policy and objective configs with local, existing paths (``tinyworld:`` assets built on demand)."""
    model = dataclasses.replace(cfg.policy, path=_resolve(policy or cfg.policy.path, "policy.path", cfg))
    if model.tokenizer:
        model = dataclasses.replace(model, tokenizer=_resolve(model.tokenizer, "policy.tokenizer", cfg))
    resolved = []
    names = cfg.objective_names
    for obj in objectives:
        key = f"objectives.{names.index(obj.name)}"
        if obj.kind != "rule":
            obj = dataclasses.replace(obj, model=_resolve(obj.model, f"{key}.model", cfg))
        if obj.kind == "implicit":
            obj = dataclasses.replace(obj, reference=_resolve(obj.reference, f"{key}.reference", cfg))
        resolved.append(obj)
    return model, resolved


def read_groups(cfg: RunConfig, stage: StageConfig) -> list[dict]:
    """The stage's prompts as pipeline rows (prompt_id, prompt_json, original_chosen, original_rejected)."""
    from rcs_ray.data import read_prompts

    data = resolve_data(stage.data, cfg.tinyworld, key=f"stages.{cfg.stages.index(stage)}.data.path"
                        if stage in cfg.stages else None)
    if not data.path:
        raise RcsInputError("stage data.path is required for sampling")
    prompts = read_prompts(data)
    return [{"prompt_id": r["prompt_id"], "prompt_json": encode_prompt(r["prompt"]),
             "original_chosen": response_text(r.get("chosen")), "original_rejected": response_text(r.get("rejected"))}
            for r in prompts.rows]


def _blocks(table, rows_per_block: int) -> list:
    return [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)] or [table]


def generate_and_score(table, cfg: RunConfig, model: ModelConfig, objectives: list[ObjectiveConfig], n_target: int,
                       include_original: bool = True):
    """The lazy Ray Dataset that generates up to ``n_target`` samples per group and scores every candidate."""
    import ray

    from rcs_ray.sampling.placement import generation_remote_args, scorer_remote_args
    from rcs_ray.sampling.scorers import plan_scorers
    from rcs_ray.sampling.stages import GenerateStage, ScoreStage

    s = cfg.sampling
    ds = ray.data.from_arrow(_blocks(table, s.batch_size))
    ds = ds.map_batches(GenerateStage, fn_constructor_kwargs=dict(model=model, sampling=s, n_target=n_target,
                                                                  include_original=include_original),
                        batch_size=s.batch_size, batch_format="pyarrow", zero_copy_batch=True,
                        compute=ray.data.ActorPoolStrategy(size=s.num_actors), **generation_remote_args(s))
    for spec in plan_scorers(objectives):
        first = spec.objectives[0]
        ds = ds.map_batches(ScoreStage, fn_constructor_kwargs=dict(spec=spec, dtype=model.dtype,
                                                                   trust_remote_code=model.trust_remote_code,
                                                                   max_length=cfg.train.max_length),
                            batch_size=s.batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=first.num_actors),
                            **scorer_remote_args(first, spec.kind))
    return ds


def build_dataset(table, cfg: RunConfig, model: ModelConfig, objectives: list[ObjectiveConfig], stage: StageConfig,
                  n_target: int):
    """The lazy Ray Dataset of one round: generate -> score (one pool per scorer) -> RC filter."""
    import ray

    from rcs_ray.sampling.stages import RCFilterStage

    ds = generate_and_score(table, cfg, model, objectives, n_target, include_original=stage.rc.include_original)
    return ds.map_batches(RCFilterStage, fn_constructor_kwargs=dict(
        objectives=[o.name for o in objectives], target=stage.objective, rc_cfg=stage.rc, seed=cfg.sampling.seed),
        batch_size=cfg.sampling.batch_size, batch_format="pyarrow",
        # RC selection is per row (its RNG is seeded by prompt id), so the pool may grow with the engines: one RC
        # actor falls behind ~32 engines (benchmarks/scale_sim.py)
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, -(-cfg.sampling.num_actors // 8))),
        num_cpus=0.25)


def n_schedule(cfg: RunConfig) -> list[int]:
    """Samples per prompt by round: ``[n]``, or with adaptive resampling ``n, 2n, 4n, ...`` capped at ``n_max``."""
    s = cfg.sampling
    if not s.adaptive.enabled:
        return [s.n]
    out = [s.n]
    for _ in range(s.adaptive.rounds):
        nxt = min(s.adaptive.n_max, out[-1] * 2)
        if nxt > out[-1]:
            out.append(nxt)
    return out


def _carry(row: dict) -> dict:
    """A failed row going into the next round: keep candidates and rewards, clear selection and timings."""
    row = {k: v for k, v in row.items() if not k.startswith("seconds__")}
    for key in ("chosen_index", "rejected_index", "failure_reason"):
        row.pop(key, None)
    return row


def run(cfg: RunConfig, stage: Optional[int] = None, policy: Optional[str] = None, out_dir: Optional[str] = None,
        progress: bool = True) -> SamplingResult:
    """Sample, score and RC-select one stage's prompts; write pairs / failed / stats into ``out_dir``.

    Args:
        cfg: the run config (its ``sampling``, ``objectives``, ``stages``, ``ray`` sections are used).
        stage: 0-based stage index (default: the first stage with ``sample: true``).
        policy: the policy to sample from (default ``cfg.policy.path``), e.g. the previous stage's checkpoint.
        out_dir: default ``<output_dir>/stage<k>/sampling``.
        progress: a progress bar per round.
    """
    import ray
    from tqdm import tqdm

    from rcs_ray.ray_runtime import init_ray
    from rcs_ray.sampling.placement import release_placement_groups
    from rcs_ray.sampling.writer import FAILED_FILE, PAIRS_FILE, STATS_FILE, OutputWriter

    k = stage_index(cfg, stage)
    st = cfg.stages[k]
    objectives = scored_objectives(cfg, st)
    model, objectives = resolve_models(cfg, objectives, policy)
    rows = read_groups(cfg, st)
    # A URI out_dir (or output_dir): write in a local mirror, upload the three files at the end.
    staged = StagedDir(out_dir or join(cfg.output_dir, f"stage{k + 1}", "sampling"),
                       key="--out" if out_dir else "output_dir")
    out_dir = staged.home
    init_ray(cfg.ray, use_gpu=cfg.sampling.num_gpus > 0)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True        # output order = input order, whatever the actor timing
    ctx.enable_progress_bars = False

    writer = OutputWriter(staged.local, [o.name for o in objectives], st.objective)
    schedule = n_schedule(cfg)
    rounds, start, sampled = [], time.time(), 0
    table = rows_to_table(rows)
    try:
        for r, n_target in enumerate(schedule):
            final = r == len(schedule) - 1
            t0, tokens_in = time.time(), sum(table.column("generated_tokens").to_pylist()) \
                if "generated_tokens" in table.column_names else 0
            ds = build_dataset(table, cfg, model, objectives, st, n_target)
            carry, tokens_out, paired = [], 0, 0
            bar = tqdm(total=table.num_rows, desc=f"stage {k + 1} round {r + 1} (n={n_target})", unit="prompt",
                       disable=not progress)
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for row in batch.to_pylist():
                    writer.account(row)
                    tokens_out += row.get("generated_tokens") or 0
                    if row["failure_reason"] is None:
                        writer.write_pair(row, r)
                        paired += 1
                    elif not final and row["failure_reason"] in RESAMPLABLE:
                        carry.append(_carry(row))
                        continue
                    else:
                        writer.write_failed(row, r + 1)
                    sampled += (row.get("sources") or []).count("sampled")
                bar.update(batch.num_rows)
            bar.close()
            release_placement_groups()                   # the round's TP engines are gone: free their GPUs
            rounds.append({"round": r + 1, "n": n_target, "prompts": table.num_rows, "pairs": paired,
                           "carried": len(carry), "tokens_generated": tokens_out - tokens_in,
                           "seconds": round(time.time() - t0, 3)})
            if not carry:
                break
            table = rows_to_table(carry)
        wall = time.time() - start
        tokens = sum(x["tokens_generated"] for x in rounds)
        stats = writer.commit({"stage": k + 1, "engine": cfg.sampling.engine, "n": cfg.sampling.n,
                               "margin": st.rc.margin, "strategy": st.rc.strategy, "rounds": rounds,
                               "tokens_generated": tokens, "seconds": round(wall, 3),
                               "candidates_sampled": sampled,
                               "candidates_per_second": round(sampled / wall, 2) if wall else None,
                               "tokens_per_second": round(tokens / wall, 2) if wall else None})
    except BaseException:
        writer.abort()
        raise
    finally:
        release_placement_groups()
    staged.push(PAIRS_FILE, FAILED_FILE, STATS_FILE)
    return SamplingResult(out_dir=out_dir, pairs=join(out_dir, PAIRS_FILE), failed=join(out_dir, FAILED_FILE),
                          stats_path=join(out_dir, STATS_FILE), stats=stats)
