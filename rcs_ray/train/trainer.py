"""One training stage on Ray Train + DeepSpeed, as named steps:

1. **pairs** -- the stage's validated pairs (:mod:`rcs_ray.train.sources`);
2. **loss inputs** -- the loss's hyperparameters and per-pair margin columns, prepared by the function its registry
   entry names (:data:`rcs_ray.registry.LOSSES`, :mod:`rcs_ray.train.features`, :mod:`rcs_ray.train.margins`);
   then every model the stage loads is checked (:mod:`rcs_ray.train.checks`);
3. **reference features** -- tokens and the reference log-probs (and any log-probs the loss's margins need, e.g.
   SPO's policy chain) in one Ray Data pass (:mod:`rcs_ray.train.features`, :mod:`rcs_ray.train.refs`); when the
   reference is the policy the workers start from, only the tokens, and the workers compute the reference log-probs
   before step 1 (:mod:`rcs_ray.train.worker_refs`);
4. **launch** -- ``TorchTrainer`` on ``train.num_workers`` workers (:mod:`rcs_ray.train.launch`,
   :mod:`rcs_ray.train.loop`);
5. **export** -- the HF model, the metrics and the summary.

``run(cfg, stage=k)`` writes into ``out_dir`` (default ``<output_dir>/stage<k>/train``, :mod:`rcs_ray.run_layout`)::

    model/               HF model + tokenizer (``from_pretrained`` loads it; LoRA: the adapter merged in)
    adapter/             LoRA runs only: the trained PEFT adapter
    metrics.jsonl        one line per optimizer step (loss, reward accuracy, margins, lr, tokens/s)
    train_summary.json   what was trained on what, first / last metrics, seconds, paths
    features.parquet     cached tokens + reference log-probs (reused when pairs, models and settings match)
    checkpoints/<run>/   Ray Train checkpoints (DeepSpeed state per checkpoint)

Remove ``out_dir`` (or change ``name``) to start over. Remote storage: when ``out_dir`` is a URI (``s3://...``, or
``output_dir`` is one), Ray Train writes the checkpoints straight to ``<out_dir>/checkpoints`` and resumes from there;
everything else is written in a local mirror (:class:`rcs_ray.storage.StagedDir`) and uploaded: ``features.*`` and
``run.json`` before training (a rerun elsewhere fetches them), ``model/``, ``metrics.jsonl`` and
``train_summary.json`` at the end.

SPO's earlier-stage implicit rewards need the policy chain ``pi_0 .. pi_k``: the workflow passes the policies it
trained (``policy_chain``); otherwise ``train.spo_policies``, else ``policy.path`` followed by the run layout's stage
models (what this function writes). ``train.spo_reward_source: recorded`` uses the pairs' recorded rewards instead.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from rcs_ray import interrupts, storage, tracking
from rcs_ray.config import RunConfig, TrainConfig, stage_index, stage_train, to_dict
from rcs_ray.data.pairs import PairSet
from rcs_ray.errors import RcsInputError
from rcs_ray.run_layout import SUMMARY_FILE, RunLayout, TrainFiles
from rcs_ray.train import refs
from rcs_ray.train.checks import check_gpu_only, check_models, check_schedule, data_checks
from rcs_ray.train.export import export
from rcs_ray.train.features import PolicyChain, ReferenceFeatures, loss_inputs, reference_features
from rcs_ray.train.launch import LaunchSpec, check_resumable, launch
from rcs_ray.train.margins import LossInputs
from rcs_ray.train.sources import stage_pairs
from rcs_ray.user_paths import resolve_model_dir

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a training stage wrote its outputs, and how it went."""

    out_dir: str
    model_dir: str
    metrics_path: str
    summary_path: str
    checkpoint: Optional[str]
    history: List[dict]
    summary: dict


def _stage(cfg: RunConfig, stage: Optional[int], pairs: Optional[str]) -> int:
    if not cfg.stages and pairs is not None and stage in (None, 0):
        return 0  # a config without stages trains the pairs it is given
    if not cfg.stages:
        raise RcsInputError("no stages in the config: pass --pairs")
    return stage_index(cfg, stage, default="first")


def run(
    cfg: RunConfig,
    stage: Optional[int] = None,
    pairs: Optional[str] = None,
    policy: Optional[str] = None,
    reference: Optional[str] = None,
    out_dir: Optional[str] = None,
    progress: bool = True,
    chain: Optional[List[str]] = None,
) -> TrainResult:
    """Train one stage with its ``train.loss`` on Ray Train + DeepSpeed; see the module docstring.

    Args:
        cfg: the run config.
        stage: 0-based stage index (default 0).
        pairs: a pairs file (default: the stage's data; see :func:`rcs_ray.train.sources.stage_pairs`).
        policy: the model to start from (default ``policy.path``).
        reference: the frozen reference (default: the policy this stage starts from).
        out_dir: default ``<output_dir>/stage<k>/train``.
        progress: progress bars and a log line per step.
        chain: SPO's policy chain pi_0 .. pi_k (the workflow passes the policies it trained).

    Raises:
        RcsInputError: bad pairs, models or config values (one line); nothing has been trained then.
    """
    st = _prepare(cfg, stage, pairs, policy, reference, out_dir, chain)  # 1. pairs, 2. loss inputs
    _make_room(st.t)
    features, checks = _features(cfg, st, progress)  # 3. reference features
    result, spec = _launch(cfg, st, features, progress)  # 4. launch
    home = TrainFiles(st.staged.home)
    extra = {
        "checkpoint": result.checkpoint.path,
        "run_name": st.run_name,
        "data_checks": checks,
        "reference_pass": features.how,
    }
    history, summary = _export_outputs(result, st.staged, st.tok, spec, lambda h: _summary(st, h, home, extra))
    return TrainResult(
        out_dir=st.staged.home,
        model_dir=home.model,
        metrics_path=home.metrics,
        summary_path=home.summary,
        checkpoint=result.checkpoint.path,
        history=history,
        summary=summary,
    )


def _make_room(t: TrainConfig) -> None:
    """Release the models the workflow kept (:mod:`rcs_ray.sampling.hosts`) if the workers would not fit beside
    them: a GPU held by a reward model must not leave the trainer waiting."""
    from rcs_ray.sampling import hosts
    from rcs_ray.train.launch import worker_resources

    hosts.make_room({k: v * t.num_workers for k, v in worker_resources(t).items()})


@dataclass
class _Stage:
    """One training stage as its steps see it: index ``k``, settings, pairs, models, output dir, loss inputs and
    tokenizer, and the seconds each part took so far."""

    k: int
    t: TrainConfig
    prs: PairSet
    policy: str
    reference: str
    tokenizer_path: str
    staged: storage.StagedDir
    chain: PolicyChain
    inputs: LossInputs
    tok: object
    run_name: str
    start: float
    seconds: Dict[str, float]


def _prepare(
    cfg: RunConfig,
    stage: Optional[int],
    pairs: Optional[str],
    policy: Optional[str],
    reference: Optional[str],
    out_dir: Optional[str],
    chain: Optional[List[str]],
) -> _Stage:
    """Steps 1 and 2: the stage's pairs (its schedule checked), its models, its output dir (cached inputs pulled),
    the loss's inputs, and the tokenizer once every model the stage loads is checked; Ray started."""
    from rcs_ray.modeling.loading import load_tokenizer
    from rcs_ray.ray_runtime import init_ray

    k = _stage(cfg, stage, pairs)
    t = stage_train(cfg, k) if cfg.stages else cfg.train
    check_gpu_only(cfg, t)
    start, seconds = time.time(), {}
    prs = stage_pairs(cfg, k, pairs)  # 1. pairs
    check_schedule(prs, t)
    policy_path, ref_path, tok_path = _model_paths(cfg, policy, reference)
    staged = _staged_out(cfg, k, out_dir)
    # a given chain ends at the stage's starting policy: the reference (an iterative stage's later iterations start
    # from the previous iteration's weights, rcs_ray.iterations)
    chain_of = PolicyChain(cfg, k, ref_path if chain is not None else policy_path, chain)
    inputs = loss_inputs(cfg, t, k, prs, chain_of)  # 2. loss inputs
    tok = load_tokenizer(tok_path, cfg.policy.trust_remote_code)
    check_models(cfg, tok, _loaded_models(prs, inputs, policy_path, ref_path))
    init_ray(cfg.ray, use_gpu=t.use_gpu)
    seconds["read"] = time.time() - start
    run_name = f"{cfg.name}-stage{k + 1}"
    return _Stage(k, t, prs, policy_path, ref_path, tok_path, staged, chain_of, inputs, tok, run_name, start, seconds)


def _features(cfg: RunConfig, st: _Stage, progress: bool) -> Tuple[ReferenceFeatures, dict]:
    """Step 3: every pair's tokens, reference log-probs and margin columns (cached in the output dir; the reference
    log-probs left to the training workers when they start from the reference), and the counts of suspicious data
    (:func:`rcs_ray.train.checks.data_checks`)."""
    settings = refs.FeatureSettings.of(st.t, cfg.policy, st.tokenizer_path, st.tok.pad_token_id)
    in_workers = _reference_in_workers(st)
    with interrupts.phase("tokenization" if in_workers else "reference pass"):
        features = reference_features(
            st.prs, st.inputs, st.reference, settings, st.staged.local, progress, in_workers=in_workers
        )
    st.seconds["features"] = time.time() - st.start - sum(st.seconds.values())
    return features, data_checks(st.prs, features.table, st.t)


def _reference_in_workers(st: _Stage) -> bool:
    """The training workers can compute the reference log-probs: the reference is the policy they start from, the
    stage's settings do not ask for a separate pass, and no checkpoint of this run exists (a resumed run's weights
    are no longer the reference: it reads the cache the first run wrote, or runs the separate pass)."""
    return (
        st.reference == st.policy
        and not st.t.separate_reference_pass(st.k)
        and not storage.isdir(TrainFiles(st.staged.home).run_checkpoints(st.run_name))
    )


def _launch(cfg: RunConfig, st: _Stage, features: ReferenceFeatures, progress: bool) -> Tuple[object, LaunchSpec]:
    """Step 4: ``TorchTrainer`` on the features, resuming a run of the same inputs (refused when they changed);
    returns Ray Train's result and the launch spec."""
    k, t, prs = st.k, st.t, st.prs
    spec = _launch_spec(cfg, t, k, prs, st.inputs, st.policy, st.tok, features.workers_key)
    key = features.workers_key or refs.cached_key(st.staged.local)
    check_resumable(st.staged.local, st.staged.home, st.run_name, t, spec, key)
    st.staged.push(*TrainFiles.INPUTS)
    log.info(
        "stage %d: training on %d pairs (%s, ZeRO-%d, %d workers)",
        k + 1,
        len(prs.rows),
        t.loss,
        t.zero_stage,
        t.num_workers,
    )
    with interrupts.phase("Ray Train"):
        result = launch(features.table, t, spec, st.run_name, st.staged.home, st.staged.local, progress)
    st.seconds["fit"] = time.time() - st.start - sum(st.seconds.values())
    return result, spec


def _model_paths(cfg: RunConfig, policy: Optional[str], reference: Optional[str]) -> Tuple[str, str, str]:
    """The policy, the reference (default: the policy) and the tokenizer (default: the policy's) as model dirs."""
    tw = cfg.tinyworld
    policy_path = resolve_model_dir(policy or cfg.policy.path, "policy.path", tw)
    ref_path = resolve_model_dir(reference, "reference", tw) if reference else policy_path
    tok_path = resolve_model_dir(cfg.policy.tokenizer, "policy.tokenizer", tw) if cfg.policy.tokenizer else policy_path
    return policy_path, ref_path, tok_path


def _staged_out(cfg: RunConfig, k: int, out_dir: Optional[str]) -> storage.StagedDir:
    """The stage's output dir (a local mirror when it is a URI), with the cached inputs of an earlier run pulled."""
    staged = storage.StagedDir(
        storage.absolute(out_dir or RunLayout(cfg.output_dir).stage(k).train.dir),
        key="--out" if out_dir else "output_dir",
    )
    staged.pull(*TrainFiles.INPUTS)
    return staged


def _loaded_models(prs: PairSet, inputs: LossInputs, policy_path: str, ref_path: str) -> Dict[str, str]:
    """``{config key: model dir}`` of every model the stage loads: the policy, the reference unless the pairs carry
    its log-probs, and the models the loss's margins need."""
    return {
        "policy.path": policy_path,
        **({} if prs.has_ref_logps else {"reference": ref_path}),
        **{f"policy chain ({p})": m for p, m in inputs.models.items()},
    }


def _launch_spec(
    cfg: RunConfig,
    t: TrainConfig,
    k: int,
    prs: PairSet,
    inputs: LossInputs,
    policy_path: str,
    tok,
    reference_key: Optional[str] = None,
) -> LaunchSpec:
    """What every worker needs besides the features: the policy, the loss's hyperparameters, the tracking run, and
    the cache key of the reference log-probs when the workers compute them."""
    track = tracking.settings_for(
        cfg, f"stage{k + 1}", t.report_to, {"train": to_dict(t), "stage": k + 1, "objective": prs.target}
    )
    return LaunchSpec(
        policy=policy_path,
        pad_token_id=tok.pad_token_id,
        loss_params=inputs.params,
        trust_remote_code=cfg.policy.trust_remote_code,
        attn_implementation=cfg.policy.attn_implementation,
        tracking=track.as_dict() if track else None,
        reference_key=reference_key,
    )


def _export_outputs(
    result, staged: storage.StagedDir, tok, spec: LaunchSpec, summarize: Callable[[List[dict]], dict]
) -> Tuple[List[dict], dict]:
    """Step 5: the HF model, the metrics and ``summarize(history)`` written as one output set (the summary last),
    then uploaded; returns the history and the summary."""
    outputs = storage.OutputSet(staged.local, TrainFiles.OUTPUTS, last=SUMMARY_FILE)  # one set, summary last
    try:
        with interrupts.phase("export"):
            history = export(result, outputs.tmp, tok, spec)
            summary = summarize(history)
            storage.write_text(TrainFiles(outputs.tmp).summary, json.dumps(summary, indent=1))
            outputs.commit()
    except BaseException:
        outputs.abort()
        raise
    staged.push(*TrainFiles.OUTPUTS, cache=True)
    return history, summary


def _summary(st: _Stage, history: List[dict], home: TrainFiles, extra: dict) -> dict:
    """``train_summary.json``: what was trained on what, with what, and how it ended; ``extra`` (the checkpoint, the
    run name, the data checks) last."""
    k, prs, t, inputs, seconds = st.k, st.prs, st.t, st.inputs, st.seconds
    policy_path, ref_path, used_chain = st.policy, st.reference, st.chain.used
    last = history[-1] if history else {}
    return {
        "stage": k + 1,
        "objective": prs.target,
        "loss": t.loss,
        "pairs": len(prs.rows),
        "source": prs.source,
        "policy": policy_path,
        "reference": ref_path if not prs.has_ref_logps else "precomputed",
        "margin_objectives": inputs.margin_names,
        "loss_kwargs": inputs.params,
        "spo_reward_source": (t.spo_reward_source if t.loss == "spo" and k > 0 else None),
        "spo_chain": used_chain,
        "steps": last.get("step", 0),
        "workers": t.num_workers,
        "zero_stage": t.zero_stage,
        "precision": t.precision,
        "lora": to_dict(t.lora) if t.uses_lora else None,
        "adapter_dir": home.adapter if t.uses_lora else None,
        "memory_mb": {k.split("/", 1)[1]: round(v, 1) for k, v in last.items() if k.startswith("memory/")},
        "first": history[0] if history else None,
        "last": history[-1] if history else None,
        "seconds": round(sum(seconds.values()), 2),
        "seconds_by_part": {part: round(v, 2) for part, v in seconds.items()},
        "model_dir": home.model,
        "resumed_from_step": last.get("resumed_from", 0),
        **extra,
    }
