"""The sequential RCS workflow over K objectives, resumable.

Stage 1 trains objective 1 on D1 as it is (``sample: false``). Each later stage k samples from the stage k−1 policy on
D_k's prompts, scores objectives 1..k, RC-selects with target k, and trains with the stage k−1 policy as the
reference. Each stage writes ``<output_dir>/stage<k>/manifest.json``: each step's inputs (paths, content fingerprints
and a digest of exactly the settings that change its result, :mod:`rcs_ray.fingerprints`), outputs, stats and timings.
A rerun skips every step whose manifest entry is done and whose inputs are unchanged; an interrupted training step
resumes from its latest checkpoint (the trainer's own resume), and a longer training schedule extends it.

Baselines are configs, not code: vanilla = every stage ``sample: false`` (the original pairs); mixed = one stage with
``sample: false`` and every other objective's dataset under ``mix:``; RSDPO-style =
``rc.strategy: target_only``; NRCS = ``rc_random``; RCS = ``rcs``; ``filter_only`` keeps only the RC original pairs.

``output_dir``, data and model paths may be URIs (``s3://``, ``gs://``, ``file://``; :mod:`rcs_ray.storage`). With a
URI ``output_dir`` each step uploads its outputs before the manifest that records them is written to the URI, so the
manifest there always describes what is there; a rerun (on any machine) reads it and skips the finished steps.
Remote inputs are fingerprinted by their listing (names, sizes, mtimes); local ones by content (small files) or
size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from rcs_ray import interrupts, storage
from rcs_ray.config import RunConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.fingerprints import sample_inputs, schedule_shrank, train_inputs
from rcs_ray.run_layout import RunLayout
from rcs_ray.storage import integrity

log = logging.getLogger(__name__)

_SMALL = 64 << 20  # files up to this size are fingerprinted by content, larger ones by size and mtime


def fingerprint(path: str, key: Optional[str] = None) -> str:
    """A short fingerprint of a file or directory (content hash for small files; size + mtime for large ones; a URI:
    names, sizes and mtimes from its listing). ``key``: the config key, named when a URI is missing."""
    if storage.is_uri(path):
        storage.require(path, key or "input", "input")
        return storage.listing_hash(path)
    h = hashlib.sha256()
    if not os.path.exists(path):
        raise RcsInputError(f"input not found: {path}")
    files = (
        [path]
        if os.path.isfile(path)
        else sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if not f.startswith("."))
    )
    for f in files:
        st = os.stat(f)
        h.update(os.path.relpath(f, path).encode() + b"\0" + str(st.st_size).encode())
        if st.st_size <= _SMALL:
            with open(f, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()[:16]


@dataclass
class StageOutcome:
    stage: int
    objective: str
    policy: str  # the trained policy (HF dir)
    manifest: str
    skipped: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


@dataclass
class WorkflowResult:
    output_dir: str
    stages: list[StageOutcome]
    seconds: float


class _Manifest:
    """A stage's manifest.json, rewritten atomically after every step."""

    def __init__(self, path: str, stage: int, objective: str):
        self.path = path
        self.data = {"stage": stage, "objective": objective, "steps": {}}
        if storage.exists(path):
            try:
                data = json.loads(storage.read_text(path))
                if not isinstance(data.get("steps"), dict):
                    raise ValueError("no steps")
                self.data = data
            except Exception:  # noqa: BLE001 - a full disk, a sync tool or a hand edit damaged it
                integrity.set_aside(
                    path,
                    "manifest",
                    f"stage {stage}'s steps are checked again (finished training resumes from its checkpoints)",
                )

    def done(self, step: str, inputs: dict) -> Optional[dict]:
        """The step's entry when it finished with these inputs and every output it recorded can be read (a damaged
        output is set aside with a warning, and the step is redone)."""
        entry = self.data["steps"].get(step)
        if not (entry and entry.get("status") == "done" and entry.get("inputs") == inputs):
            return None
        for p in (p for p in entry["outputs"].values() if isinstance(p, str)):
            why = integrity.problem(p)
            if why == "missing":
                return None
            if why is not None:
                if storage.path_kind(p) == "file":
                    integrity.set_aside(p, f"{step} output", f"the {step} step is redone ({why})")
                return None
        return entry

    def start(self, step: str, inputs: dict) -> None:
        self.data["steps"][step] = {
            "status": "running",
            "inputs": inputs,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._write()

    def record(self, step: str, inputs: dict, outputs: dict, stats: dict, seconds: float) -> dict:
        entry = {
            "status": "done",
            "inputs": inputs,
            "outputs": outputs,
            "stats": stats,
            "seconds": round(seconds, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.data["steps"][step] = entry
        self._write()
        return entry

    def forget(self, steps) -> None:
        """Drop these steps' entries (a stage whose iterations changed: :mod:`rcs_ray.iterations`)."""
        for step in steps:
            del self.data["steps"][step]
        self._write()

    def _write(self) -> None:
        storage.write_text(self.path, json.dumps(self.data, indent=1))


def run_workflow(cfg: RunConfig, progress: bool = True) -> WorkflowResult:
    """Run (or resume) the K-stage RCS workflow of ``cfg``; see the module docstring.

    Args:
        cfg: the run config; ``cfg.policy.path`` is the starting policy.
        progress: progress bars and per-step log lines.
    """
    from rcs_ray.sampling import hosts
    from rcs_ray.user_paths import resolve_model_dir

    if not cfg.stages:
        raise RcsInputError("the config has no stages")
    start = time.time()
    layout = RunLayout(cfg.output_dir)
    policy = resolve_model_dir(cfg.policy.path, "policy.path", cfg.tinyworld)
    chain = [policy]  # pi_0 .. pi_k: the policy each stage starts from, then its result
    outcomes: list[StageOutcome] = []
    with hosts.scope(cfg.ray.keep_models):  # a reward model scoring several stages (and eval) loads once
        for k, st in enumerate(cfg.stages):
            stage = layout.stage(k)
            manifest = _Manifest(stage.manifest, k + 1, st.objective)
            base = _stage_inputs(cfg, k, policy)
            outcome = StageOutcome(stage=k + 1, objective=st.objective, policy="", manifest=manifest.path)
            entry = _stage_steps(cfg, k, manifest, base, outcome, chain, progress)
            outcome.stats["train"] = entry["stats"]
            policy = outcome.policy = entry["outputs"]["model"]
            chain.append(policy)
            outcomes.append(outcome)
            log.info(
                "stage %d (%s) done%s: policy %s",
                k + 1,
                st.objective,
                f" (skipped {', '.join(outcome.skipped)}: unchanged)" if outcome.skipped else "",
                policy,
            )
    return WorkflowResult(output_dir=cfg.output_dir, stages=outcomes, seconds=time.time() - start)


def _stage_inputs(cfg: RunConfig, k: int, policy: str) -> dict:
    """Stage ``k``'s inputs common to its steps: the policy it starts from, its data and any ``mix:`` datasets, each
    with its fingerprint."""
    from rcs_ray.user_paths import resolve_data

    st = cfg.stages[k]
    data = resolve_data(st.data, cfg.tinyworld, key=f"stages.{k}.data.path").path if st.data.path else None
    base = {
        "policy": policy,
        "policy_fp": fingerprint(policy),
        "data": data,
        "data_fp": fingerprint(data, f"stages.{k}.data.path") if data else None,
    }
    if st.mix:
        mixed = [
            (j, resolve_data(m, cfg.tinyworld, key=f"stages.{k}.mix.{j}.path").path)
            for j, m in enumerate(st.mix)
            if m.path
        ]
        base["mix"] = [{"data": m, "data_fp": fingerprint(m, f"stages.{k}.mix.{j}.path")} for j, m in mixed]
    return base


def _stage_steps(
    cfg: RunConfig, k: int, manifest: _Manifest, base: dict, outcome: StageOutcome, chain: list, progress: bool
) -> dict:
    """Stage ``k``'s steps: sample (``sample: true``) then train, or its iterations (:mod:`rcs_ray.iterations`);
    returns the manifest entry of the training that made the stage's policy."""
    from rcs_ray import iterations

    iterations.forget_other_mode(cfg, k, manifest)
    if cfg.stages[k].iterations > 1:
        steps = iterations.Steps(sample=_sample_step, train=_train_step, fingerprint=fingerprint)
        return iterations.run_stage(cfg, k, manifest, base, outcome, chain, progress, steps)
    pairs = _sample_step(cfg, k, manifest, base, outcome, chain, progress) if cfg.stages[k].sample else None
    return _train_step(cfg, k, manifest, base, pairs, outcome, chain, progress)


def _sample_step(
    cfg: RunConfig,
    k: int,
    manifest: _Manifest,
    base: dict,
    outcome: StageOutcome,
    chain: list,
    progress: bool,
    step: str = "sample",
    out_dir: Optional[str] = None,
) -> str:
    """Stage ``k``'s sampling step (``step``: its manifest name; ``out_dir``: default the stage's sampling dir),
    skipped when its manifest entry is done with the same inputs; returns the pairs file."""
    from rcs_ray.sampling import run as sample

    policy = base["policy"]
    inputs = sample_inputs(cfg, k, base)
    entry = manifest.done(step, inputs)
    if entry is None:
        t0 = time.time()
        with interrupts.phase(f"stage {k + 1} ({step.replace('sample', 'sampling')})"):
            res = sample(cfg, stage=k, policy=policy, out_dir=out_dir, progress=progress, chain=list(chain))
        entry = manifest.record(
            step,
            inputs,
            {"pairs": res.pairs, "failed": res.failed, "stats": res.stats_path},
            _sample_stats(res.stats),
            time.time() - t0,
        )
    else:
        outcome.skipped.append(step)
    outcome.stats[step] = entry["stats"]
    return entry["outputs"]["pairs"]


def _train_step(
    cfg: RunConfig,
    k: int,
    manifest: _Manifest,
    base: dict,
    pairs: Optional[str],
    outcome: StageOutcome,
    chain: list,
    progress: bool,
    step: str = "train",
    out_dir: Optional[str] = None,
) -> dict:
    """Stage ``k``'s training step (``step``: its manifest name; ``out_dir``: default the stage's train dir; the
    reference: ``base["reference"]``, default the policy it starts from), skipped when its manifest entry is done
    with the same inputs; resumed after a crash or with a longer schedule, started afresh when other inputs changed.
    Returns its manifest entry."""
    from rcs_ray.train import run as train

    policy = base["policy"]
    reference = base.get("reference", policy)
    out_dir = out_dir or RunLayout(cfg.output_dir).stage(k).train.dir
    identity, schedule = train_inputs(
        cfg, k, dict(base, pairs=pairs, reference=reference, pairs_fp=fingerprint(pairs) if pairs else None)
    )
    inputs = {"identity": identity, "schedule": schedule}
    entry = manifest.done(step, inputs)
    if entry is not None:
        outcome.skipped.append(step)
        return entry
    previous = manifest.data["steps"].get(step) or {}
    before = previous.get("inputs") or {}
    if before and (before.get("identity") != identity or schedule_shrank(before.get("schedule"), schedule)):
        storage.remove(out_dir)  # other inputs (or less training): start afresh
    manifest.start(step, inputs)  # same inputs after a crash, or a longer schedule: resume
    t0 = time.time()
    with interrupts.phase(f"stage {k + 1} ({step.replace('train', 'training')})"):
        res = train(
            cfg,
            stage=k,
            pairs=pairs,
            policy=policy,
            reference=reference,
            out_dir=out_dir,
            progress=progress,
            chain=list(chain),
        )
    last = res.summary.get("last") or {}
    return manifest.record(
        step,
        inputs,
        {"model": res.model_dir, "metrics": res.metrics_path, "summary": res.summary_path},
        {
            "loss": res.summary["loss"],
            "pairs": res.summary["pairs"],
            "steps": res.summary["steps"],
            "final_loss": last.get("loss"),
            "final_reward_accuracy": last.get("rewards/accuracy"),
        },
        time.time() - t0,
    )


def _sample_stats(stats: dict) -> dict:
    keys = (
        "prompts",
        "pairs",
        "failed",
        "failure_rate",
        "failed_by_reason",
        "tokens_generated",
        "seconds",
        "mean_target_gap",
    )
    return {k: stats.get(k) for k in keys}
