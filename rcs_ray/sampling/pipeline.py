"""The RCS sampling pipeline on Ray Data: read prompts -> generate -> score (one host pool per model) -> RC filter
-> write pairs / failed / stats, with optional adaptive resampling of failed prompts.

One row per prompt group from start to end: every stage is a ``map_batches``; there is no groupby and no shuffle.
Generation and model scorers run in model hosts (:mod:`rcs_ray.sampling.hosts`) that load their model once and serve
every round of the stage (a dead host is restarted and its batch retried). The RC step runs in the last scorer's
caller (columnar, over the vectorized core of :mod:`rcs_ray.rc`), and the driver writes each batch columnar
(:class:`~rcs_ray.sampling.writer.OutputWriter`): no stage turns a batch into Python rows.

Everything a pass needs comes from one :class:`~rcs_ray.sampling.job.SamplingJob`;
:func:`rcs_ray.sampling.passes.score_samples` is the generate -> score part alone (what the evaluation runs).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from rcs_ray import interrupts, registry, tracking
from rcs_ray.config import DataConfig, RunConfig, SamplingConfig, TinyWorldConfig, stage_index, stage_train
from rcs_ray.data.pairs import dataset_is_chat, group_table, response_text
from rcs_ray.errors import RcsInputError
from rcs_ray.run_layout import RunLayout, SamplingFiles
from rcs_ray.sampling.job import SamplingJob, stage_job
from rcs_ray.sampling.sizing import sizing_stats
from rcs_ray.storage import StagedDir
from rcs_ray.user_paths import resolve_data

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


def read_groups(
    data: DataConfig, tinyworld: TinyWorldConfig, key: Optional[str] = None, pairs: bool = True
) -> Tuple[List[dict], bool]:
    """The prompts of ``data`` as prompt-group rows (``prompt_id, prompt`` and, with ``pairs``, the dataset's
    ``original_chosen, original_rejected`` texts), and whether the prompts are chat.

    Raises:
        RcsInputError: no path, or the readers' errors (one line naming file, row and field).
    """
    from rcs_ray.data import read_prompts

    data = resolve_data(data, tinyworld, key=f"{key}.path" if key else None)
    if not data.path:
        raise RcsInputError(f"{key or 'data'}.path is required for sampling")
    prompts = read_prompts(data)
    chat = dataset_is_chat([r["prompt"] for r in prompts.rows], prompts.source)
    rows = [{"prompt_id": r["prompt_id"], "prompt": r["prompt"]} for r in prompts.rows]
    if pairs:
        for row, r in zip(rows, prompts.rows):
            row["original_chosen"] = response_text(r.get("chosen"))
            row["original_rejected"] = response_text(r.get("rejected"))
    return rows, chat


def templated(policy) -> bool:
    """Whether the policy reads plain prompts through its chat template (then the pairs are written in TRL's
    conversational form, so any trainer tokenizes them as the policy read them)."""
    from rcs_ray.modeling.loading import load_tokenizer
    from rcs_ray.prompting import has_template

    return bool(policy.chat_template) and has_template(
        load_tokenizer(policy.tokenizer or policy.path, policy.trust_remote_code)
    )


def build_dataset(job: SamplingJob, table, n_target: int):
    """The lazy Ray Dataset of one round: generate -> score (one host pool per scorer; the last one RC-selects too)."""
    from rcs_ray.sampling.passes import score_samples

    select = dict(
        objectives=job.objective_names,
        target=job.target,
        rc_cfg=job.rc,
        seed=job.sampling.seed,
        truncated=job.sampling.truncated,
    )
    return score_samples(job, table, n_target, include_original=job.rc.include_original, select=select)


def selection_settings(job: SamplingJob) -> dict:
    """The stage's selection settings, recorded in ``candidates.parquet`` (``rcs-ray select`` defaults to them)."""
    rc_cfg = job.rc
    return {
        "strategy": rc_cfg.strategy,
        "margin": rc_cfg.margin,
        "enforce": rc_cfg.enforce,
        "weights": rc_cfg.weights,
        "rs_tau": rc_cfg.rs_tau,
        "rs_eta": rc_cfg.rs_eta,
        "include_original": rc_cfg.include_original,
        "truncated": job.sampling.truncated,
        "seed": job.sampling.seed,
    }


def n_schedule(s: SamplingConfig) -> list[int]:
    """Samples per prompt by round: ``[n]``, or with adaptive resampling ``n, 2n, 4n, ...`` capped at ``n_max``."""
    if not s.adaptive.enabled:
        return [s.n]
    out = [s.n]
    for _ in range(s.adaptive.rounds):
        nxt = min(s.adaptive.n_max, out[-1] * 2)
        if nxt > out[-1]:
            out.append(nxt)
    return out


def _round(job: SamplingJob, table, n_target: int, writer, r: int, final: bool, desc: str) -> Tuple[list, dict]:
    """One round: stream the round's dataset through the writer; returns the rows to carry and the round's stats."""
    import pyarrow.compute as pc
    from tqdm import tqdm

    from rcs_ray.sampling import hosts
    from rcs_ray.sampling.columns import column_sum

    t0, first, tokens_in = time.time(), None, column_sum(table, "generated_tokens")
    loads = hosts.started()
    cut_in, cut_out = column_sum(table, "truncated_samples"), 0
    carry, tokens_out, paired = [], 0, writer.pairs.rows
    with tqdm(total=table.num_rows, desc=desc, unit="prompt", disable=desc is None) as bar:
        for batch in build_dataset(job, table, n_target).iter_batches(batch_size=None, batch_format="pyarrow"):
            interrupts.check()
            started = (
                pc.min(batch.column("generate_started")).as_py() if "generate_started" in batch.column_names else None
            )
            if started:
                first = min(first or started, started)
            tokens_out += column_sum(batch, "generated_tokens")
            cut_out += column_sum(batch, "truncated_samples")
            kept = writer.write(batch, r, resample=() if final else RESAMPLABLE)
            if kept.num_rows:
                carry.append(kept)
            bar.update(batch.num_rows)
    end = time.time()
    first = min(max(first or end, t0), end)  # start-up: until the first batch reached an engine
    loads = {k: v - loads.get(k, 0) for k, v in hosts.started().items() if v > loads.get(k, 0)}
    tokens = tokens_out - tokens_in
    return carry, {
        "round": r + 1,
        "n": n_target,
        "prompts": table.num_rows,
        "pairs": writer.pairs.rows - paired,
        "carried": sum(t.num_rows for t in carry),
        "tokens_generated": tokens,
        "samples_truncated": int(cut_out - cut_in),
        "seconds": round(end - t0, 3),
        "startup_seconds": round(first - t0, 3),
        "hosts_started": loads,  # models loaded for this round, by kind (none where kept from before)
        "steady_seconds": round(end - first, 3),
        "steady_tokens_per_second": round(tokens / (end - first), 2) if end > first else None,
    }


def sample(job: SamplingJob, rows: List[dict], chat: bool, out_dir: str, stage: int, progress: bool = True) -> dict:
    """Run ``job`` over prompt-group ``rows`` (every round), writing pairs / failed / stats into the local
    ``out_dir``; returns the stats. Ray must be running."""
    import pyarrow as pa

    from rcs_ray.ray_runtime import data_context
    from rcs_ray.sampling import hosts
    from rcs_ray.sampling.writer import OutputWriter

    data_context()
    builtin = job.sampling.engine in registry.ENGINES  # a custom engine brings its own tokenizer
    writer = OutputWriter(
        out_dir,
        job.objective_names,
        job.target,
        chat=chat or (builtin and templated(job.policy)),
        candidates=job.sampling.store_candidates,
        selection=selection_settings(job),
        system=job.policy.system_prompt,
    )
    schedule = n_schedule(job.sampling)
    rounds, start = [], time.time()
    table = group_table(rows, chat)
    try:
        for r, n_target in enumerate(schedule):
            desc = f"stage {stage + 1} round {r + 1} (n={n_target})" if progress else None
            with interrupts.phase(f"generating and scoring, round {r + 1} of {len(schedule)}"):
                carry, stats = _round(job, table, n_target, writer, r, r == len(schedule) - 1, desc)
            if not hosts.keeping():
                hosts.release()  # each round starts its own models (ray.keep_models: false)
            rounds.append(stats)
            if not carry:
                break
            table = pa.concat_tables(carry, promote_options="permissive").combine_chunks()
        with interrupts.phase("writing"):
            return writer.commit(_stats(job, stage, rounds, writer, time.time() - start))
    except BaseException:
        writer.abort()
        raise
    finally:
        hosts.generation_done()  # the engines of this policy: their GPUs are free for what follows


def _stats(job: SamplingJob, stage: int, rounds: List[dict], writer, wall: float) -> dict:
    tokens = sum(x["tokens_generated"] for x in rounds)
    steady = sum(x["steady_seconds"] for x in rounds)
    rc_seconds = writer.seconds.get("rc_filter", 0.0)
    s = job.sampling
    return {
        "stage": stage + 1,
        "engine": s.engine,
        "n": s.n,
        "margin": job.rc.margin,
        "strategy": job.rc.strategy,
        "rounds": rounds,
        "tokens_generated": tokens,
        "seconds": round(wall, 3),
        "candidates_sampled": writer.sampled,
        "candidates_per_second": round(writer.sampled / wall, 2) if wall else None,
        "tokens_per_second": round(tokens / wall, 2) if wall else None,
        "startup_seconds": round(sum(x["startup_seconds"] for x in rounds), 3),
        "steady_state_seconds": round(steady, 3),
        "steady_state_tokens_per_second": round(tokens / steady, 2) if steady else None,
        "rc_select_seconds": round(rc_seconds, 4),
        "rc_select_share_of_wall": round(rc_seconds / wall, 5) if wall else None,
        "max_concurrent_batches": s.max_concurrent_batches,
        **sizing_stats(job, writer.seconds),  # pools: the scorer hosts that keep up with the engines
    }


def run(
    cfg: RunConfig,
    stage: Optional[int] = None,
    policy: Optional[str] = None,
    out_dir: Optional[str] = None,
    progress: bool = True,
    chain: Optional[List[str]] = None,
) -> SamplingResult:
    """Sample, score and RC-select one stage's prompts; write pairs / failed / stats into ``out_dir``.

    Args:
        cfg: the run config; the stage's :class:`~rcs_ray.sampling.job.SamplingJob` is built from it once.
        stage: 0-based stage index (default: the first stage with ``sample: true``).
        policy: the policy to sample from (default ``cfg.policy.path``), e.g. the previous stage's checkpoint.
        out_dir: default ``<output_dir>/stage<k>/sampling``.
        progress: a progress bar per round.
        chain: the policies pi_0 .. pi_k the workflow trained (implicit rewards ``from_stage``).
    """
    from rcs_ray.ray_runtime import init_ray

    k = stage_index(cfg, stage, default="first_sampled")
    job = stage_job(cfg, k, policy, chain)
    with interrupts.phase("reading prompts"):
        rows, chat = read_groups(cfg.stages[k].data, cfg.tinyworld, key=f"stages.{k}.data")
    # A URI out_dir (or output_dir): write in a local mirror, upload the three files at the end.
    staged = StagedDir(
        out_dir or RunLayout(cfg.output_dir).stage(k).sampling.dir, key="--out" if out_dir else "output_dir"
    )
    init_ray(cfg.ray, use_gpu=job.sampling.num_gpus > 0)
    from rcs_ray.sampling import hosts

    with hosts.scope(cfg.ray.keep_models):
        stats = sample(job, rows, chat, staged.local, k, progress)
    staged.push(*SamplingFiles.NAMES)
    tracking.log_once(tracking.settings_for(cfg, f"stage{k + 1}", stage_train(cfg, k).report_to), {"sampling": stats})
    files = SamplingFiles(staged.home)
    return SamplingResult(
        out_dir=staged.home, pairs=files.pairs, failed=files.failed, stats_path=files.stats, stats=stats
    )
