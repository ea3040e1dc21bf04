"""Evaluation: sample held-out prompts from several policies, score every response on the K objectives, report.

Per policy and objective: mean reward, the win rate against a reference policy (all sample pairs of a prompt; a tie
counts one half), and threshold rates (e.g. the paper's harmless rate: the share of responses with
``harmless >= 0``). ``eval.judge`` adds an independent reward (e.g. an LLM judge that did no selection, as the
paper evaluates) beside the objectives, with its own column; responses it could not score are counted, not averaged.
Generation and scoring run on the same Ray Data stages as sampling. Writes ``eval.json``, ``eval.md`` and
``eval.png`` (the trade-off plot, :mod:`rcs_ray.eval_plot`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from rcs_ray import interrupts
from rcs_ray.config import RunConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.eval_plot import plot_eval


@dataclass
class EvalResult:
    out_dir: str
    json: str
    markdown: str
    plot: str
    metrics: dict


def policy_rewards(job, rows: list[dict], chat: bool, n: int, progress: bool = False, desc: str = "eval") -> np.ndarray:
    """(P, n, K) rewards of n samples per prompt from the job's policy on each of its K objectives.

    Args:
        job: an evaluation :class:`~rcs_ray.sampling.job.SamplingJob` (:func:`rcs_ray.sampling.job.eval_job`).
        rows: the prompt-group rows (``prompt_id``, ``prompt``) of the P held-out prompts.
        chat: the prompts are chat messages.
        n: samples per prompt.
        progress: a progress bar over the prompts.
    """
    from tqdm import tqdm

    from rcs_ray.data.pairs import group_table, reward_column
    from rcs_ray.sampling import hosts
    from rcs_ray.sampling.passes import score_samples

    by_id = {}
    bar = tqdm(total=len(rows), desc=desc, unit="prompt", disable=not progress)
    try:
        ds = score_samples(job, group_table(rows, chat), n, include_original=False)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                if row.get("error"):
                    raise RcsInputError(f"eval: prompt {row['prompt_id']}: {row['error']}")
                by_id[row["prompt_id"]] = [row[reward_column(name)] for name in job.objective_names]
            bar.update(batch.num_rows)
    finally:
        bar.close()
        hosts.policy_done()  # the reward models stay for the next policy, and engines that can load it in place
    return np.array([np.array(by_id[r["prompt_id"]]).T for r in rows])  # (P, n, K)


def _every_policy(jobs: dict, rows: list[dict], chat: bool, n: int, progress: bool) -> dict[str, np.ndarray]:
    """:func:`policy_rewards` of each job's policy, one after another; the last policy's engines go at the end (an
    enclosing workflow may keep its reward models)."""
    from rcs_ray.sampling import hosts

    rewards = {}
    try:
        for name, job in jobs.items():
            with interrupts.phase(f"eval ({name})"):
                rewards[name] = policy_rewards(job, rows, chat, n, progress, desc=f"eval {name}")
    finally:
        hosts.generation_done()
    return rewards


def win_rate(a: np.ndarray, b: np.ndarray) -> float:
    """P(a > b) + 0.5 P(a = b) over all sample pairs of each prompt. a, b: (P, n) rewards of one objective; pairs
    with a NaN (a judge answer without a score) are left out (NaN when none is left)."""
    diff = a[:, :, None] - b[:, None, :]
    ok = np.isfinite(diff)
    if not ok.any():
        return float("nan")
    return float(np.mean(((diff > 0) + 0.5 * (diff == 0))[ok]))


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def summarize(
    rewards: dict[str, np.ndarray], names: list[str], reference: Optional[str], thresholds: dict[str, float]
) -> dict:
    """Per policy: mean reward, win rate vs the reference and threshold rates, per objective (and the judge);
    ``unscored``: responses without a finite score (a judge answer it could not parse), per objective that has any."""
    out = {}
    for policy, r in rewards.items():
        entry = {"mean": {n: _mean(r[:, :, j]) for j, n in enumerate(names)}}
        unscored = {n: int((~np.isfinite(r[:, :, j])).sum()) for j, n in enumerate(names)}
        if any(unscored.values()):
            entry["unscored"] = {n: v for n, v in unscored.items() if v}
        if reference is not None and policy != reference:
            entry["win_rate_vs_" + reference] = {
                n: win_rate(r[:, :, j], rewards[reference][:, :, j]) for j, n in enumerate(names)
            }
        entry["rate"] = {f"{n}>={t:g}": float(np.mean(r[:, :, names.index(n)] >= t)) for n, t in thresholds.items()}
        out[policy] = entry
    return out


def _markdown(metrics: dict, names: list[str], reference: Optional[str], meta: dict) -> str:
    lines = [f"# Evaluation on {meta['prompts']} held-out prompts x {meta['n']} samples", ""]
    head = "| policy | " + " | ".join(f"mean {n}" for n in names)
    rates = sorted({k for m in metrics.values() for k in m["rate"]})
    head += "".join(f" | {r} rate" for r in rates)
    if reference:
        head += "".join(f" | win vs {reference} ({n})" for n in names)
    lines += [head + " |", "|---" * head.count("|") + "|"]
    for policy, m in metrics.items():
        cells = [f"{m['mean'][n]:.3f}" for n in names] + [f"{100 * m['rate'][r]:.1f}%" for r in rates]
        if reference:
            wins = m.get("win_rate_vs_" + reference)
            cells += [f"{100 * wins[n]:.1f}%" if wins else "—" for n in names]
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate(
    cfg: RunConfig,
    policies: dict[str, str],
    reference: Optional[str] = None,
    out_dir: Optional[str] = None,
    progress: bool = False,
    arrows: Optional[Sequence[tuple[str, str]]] = None,
) -> EvalResult:
    """Evaluate ``policies`` (name -> model dir) on ``cfg.eval.prompts``; ``reference`` names one of them.

    ``arrows``: (from, to) policy names drawn as arrows on the trade-off plot (:mod:`rcs_ray.eval_plot`); default:
    from the reference to every other policy."""
    from rcs_ray.ray_runtime import data_context, init_ray
    from rcs_ray.run_layout import RunLayout
    from rcs_ray.sampling import hosts
    from rcs_ray.sampling.job import eval_job
    from rcs_ray.sampling.pipeline import read_groups
    from rcs_ray.storage import StagedDir

    e = cfg.eval
    arrows = _checked_arrows(cfg, policies, reference, arrows)
    jobs = {name: eval_job(cfg, path) for name, path in policies.items()}  # every model path checked up front
    # A URI out_dir (or output_dir): write in a local mirror, then upload.
    staged = StagedDir(out_dir or RunLayout(cfg.output_dir).eval_dir, key="--out" if out_dir else "output_dir")
    rows, chat = read_groups(e.prompts, cfg.tinyworld, key="eval.prompts", pairs=False)
    init_ray(cfg.ray, use_gpu=cfg.sampling.num_gpus > 0)
    data_context()
    start = time.time()
    with hosts.scope(cfg.ray.keep_models):  # the reward models load once for every policy
        rewards = _every_policy(jobs, rows, chat, e.n, progress)
    names = cfg.objective_names + ([e.judge.name] if e.judge is not None else [])
    metrics = summarize(rewards, names, reference, dict(e.thresholds))
    local = staged.local
    os.makedirs(local, exist_ok=True)
    meta = {
        "prompts": len(rows),
        "n": e.n,
        "reference": reference,
        "policies": policies,
        "objectives": names,
        "arrows": [list(a) for a in arrows],
        "seconds": round(time.time() - start, 2),
    }
    result = EvalResult(
        out_dir=staged.home,
        json=staged.path("eval.json"),
        markdown=staged.path("eval.md"),
        plot=staged.path("eval.png"),
        metrics=metrics,
    )
    _write_outputs(cfg, local, metrics, names, meta, arrows)
    staged.push("eval.json", "eval.md", "eval.png")
    from rcs_ray import tracking

    tracking.log_once(tracking.settings_for(cfg, "eval"), {"eval": metrics})
    return result


def _checked_arrows(
    cfg: RunConfig, policies: dict[str, str], reference: Optional[str], arrows: Optional[Sequence[tuple[str, str]]]
) -> Sequence[tuple[str, str]]:
    """The plot's arrows (default: from the reference to every other policy), once the eval settings are checked.

    Raises:
        RcsInputError: no held-out prompts, a reference or an arrow end that is not an evaluated policy, or a
            threshold on an unknown objective.
    """
    e = cfg.eval
    if not e.prompts.path:
        raise RcsInputError("eval.prompts.path is required (held-out prompts)")
    if reference is not None and reference not in policies:
        raise RcsInputError(f"reference {reference!r} is not one of the evaluated policies {list(policies)}")
    if arrows is None:
        arrows = [(reference, p) for p in policies if p != reference] if reference is not None else []
    stray = sorted({p for a in arrows for p in a} - set(policies))
    if stray:
        raise RcsInputError(f"arrows name {stray}, which are not among the evaluated policies {list(policies)}")
    for name in e.thresholds:
        if name not in cfg.objective_names:
            raise RcsInputError(f"eval.thresholds: {name!r} is not an objective; objectives are {cfg.objective_names}")
    return arrows


def _write_outputs(
    cfg: RunConfig, local: str, metrics: dict, names: list[str], meta: dict, arrows: Sequence[tuple[str, str]]
) -> None:
    """``eval.json`` (``meta`` and the metrics), ``eval.md`` and the trade-off plot ``eval.png`` (with ``arrows``)
    into ``local``."""
    from rcs_ray.storage import write_text

    e, reference = cfg.eval, meta["reference"]
    write_text(os.path.join(local, "eval.json"), json.dumps({**meta, "metrics": metrics}, indent=2) + "\n")
    write_text(os.path.join(local, "eval.md"), _markdown(metrics, names, reference, meta))
    plot_eval(
        metrics,
        cfg.objective_names,
        os.path.join(local, "eval.png"),
        arrows,
        judge=e.judge.name if e.judge is not None else None,
    )
