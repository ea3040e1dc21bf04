"""One training stage on Ray Train + DeepSpeed, as named steps:

1. **pairs** -- the stage's validated pairs (:mod:`rcs_ray.train.sources`);
2. **loss inputs** -- the loss's hyperparameters and per-pair margin columns, prepared by the function its registry
   entry names (:data:`rcs_ray.registry.LOSSES`, :mod:`rcs_ray.train.margins`);
3. **reference features** -- tokens and the reference log-probs (and any log-probs the loss's margins need, e.g.
   SPO's policy chain) in one Ray Data pass (:mod:`rcs_ray.train.refs`);
4. **launch** -- ``TorchTrainer`` on ``train.num_workers`` workers (:mod:`rcs_ray.train.launch`,
   :mod:`rcs_ray.train.loop`);
5. **export** -- the HF model, the metrics and the summary.

``run(cfg, stage=k)`` writes into ``out_dir`` (default ``<output_dir>/stage<k>/train``, :mod:`rcs_ray.layout`)::

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
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import pyarrow as pa

from rcs_ray import interrupts, registry, storage, tracking
from rcs_ray.config import RunConfig, TrainConfig, stage_index, stage_train, to_dict
from rcs_ray.data.pairs import REF_COLUMNS, PairSet, suspicious
from rcs_ray.errors import RcsInputError
from rcs_ray.layout import SUMMARY_FILE, RunLayout, TrainFiles
from rcs_ray.paths import resolve_model_dir
from rcs_ray.train import refs
from rcs_ray.train.launch import LaunchSpec, check_resumable, export, launch
from rcs_ray.train.margins import LossContext, LossInputs
from rcs_ray.train.sources import stage_pairs

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


def policy_chain(cfg: RunConfig, k: int, policy: str, given: Optional[List[str]] = None) -> List[str]:
    """pi_0 .. pi_k: the policy before stage 1, after stages 1 .. k-1, and the policy stage k starts from.

    ``given`` (the workflow's own policies) wins, then ``train.spo_policies``, then ``policy.path`` followed by the
    run layout's stage models.

    Raises:
        RcsInputError: a chain of the wrong length, a missing model, one that does not end at ``policy``, or two
            equal neighbours (that stage's implicit reward would be 0).
    """
    tw, spo_policies = cfg.tinyworld, stage_train(cfg, k).spo_policies
    if given is not None:
        chain, key = list(given), "policy chain"
    elif spo_policies is not None:
        chain = [resolve_model_dir(p, f"train.spo_policies.{j}", tw) for j, p in enumerate(spo_policies)]
        key = "train.spo_policies"
    else:
        layout = RunLayout(cfg.output_dir)
        chain = [resolve_model_dir(cfg.policy.path, "policy.path", tw)]
        for j in range(1, k):
            path = layout.stage(j - 1).train.model
            if not storage.isdir(path):
                raise RcsInputError(f"spo: stage {j}'s implicit reward needs its trained policy {path} (missing): "
                                    f"train stage {j} first, set train.spo_policies, or "
                                    f"train.spo_reward_source=recorded")
            chain.append(storage.absolute(path))
        chain.append(policy)
        key = "policy chain"
    if len(chain) != k + 1:
        raise RcsInputError(f"{key}: stage {k + 1} needs {k + 1} models (pi_0..pi_{k}), got {len(chain)}")
    if chain[-1] != policy:
        raise RcsInputError(f"{key}: the last model {chain[-1]} must be the policy stage {k + 1} starts from "
                            f"({policy}); pass --policy {chain[-1]}")
    for j in range(1, len(chain)):
        if chain[j] == chain[j - 1]:
            raise RcsInputError(f"spo: pi_{j - 1} and pi_{j} are the same model {chain[j]}, so stage {j}'s implicit "
                                f"reward would be 0: pass --policy (stage {k + 1} starts from stage {k}'s model) or "
                                f"set train.spo_policies")
    return chain


def loss_inputs(cfg: RunConfig, t: TrainConfig, k: int, prs: PairSet, chain) -> LossInputs:
    """Step 2: the loss's hyperparameters and margin columns, from the function its registry entry names."""
    spec = registry.LOSSES[t.loss]
    if spec.prepare is None:
        return LossInputs()
    ctx = LossContext(pairs=prs, train=t, stage=k, objective_names=cfg.objective_names,
                      earlier_objectives=[s.objective for s in cfg.stages[:k]],
                      earlier_betas=[stage_train(cfg, j).beta for j in range(k)],
                      earlier_trains=[stage_train(cfg, j) for j in range(k)], policy_chain=chain)
    return registry.resolve(spec.prepare, f"loss {t.loss!r}")(ctx)


def _floats(values) -> pa.Array:
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    return pa.array([list(map(float, row)) for row in values.reshape(len(values), -1)], type=pa.list_(pa.float64()))


def reference_features(prs: PairSet, inputs: LossInputs, reference: str, settings: refs.FeatureSettings,
                       cache_dir: str, progress: bool) -> pa.Table:
    """Step 3: tokens, reference log-probs and margin columns of every pair (one Ray Data pass, cached).

    The reference runs unless the pairs carry its log-probs; every model the loss asks for runs once, whatever the
    number of columns that name it.
    """
    extra: Dict[str, pa.Array] = {}
    if prs.has_ref_logps:
        for c in REF_COLUMNS:
            extra[c] = pa.array([r[c] for r in prs.rows], type=pa.float64())
    if inputs.margins is not None:
        extra["chosen_margin"], extra["rejected_margin"] = (_floats(m) for m in inputs.margins)
    wanted = {} if prs.has_ref_logps else {"ref": reference}
    wanted.update(inputs.models)
    column_of: Dict[str, str] = {}                     # requested prefix -> the prefix whose model computes it
    models: Dict[str, str] = {}
    for prefix, path in wanted.items():
        same = next((p for p, m in models.items() if m == path), None)
        column_of[prefix] = same or prefix
        if same is None:
            models[prefix] = path
    features = refs.compute_features(prs.table(extra), models, settings, cache_dir=cache_dir, progress=progress)
    if inputs.from_logps is not None:
        logps = {p: refs.logps_columns(features, column_of[p]) for p in inputs.models}
        chosen, rejected = inputs.from_logps(logps)
        features = features.append_column("chosen_margin", _floats(chosen))
        features = features.append_column("rejected_margin", _floats(rejected))
    keep = ["index", *refs.TOKEN_COLUMNS, *REF_COLUMNS] + \
        (["chosen_margin", "rejected_margin"] if "chosen_margin" in features.column_names else [])
    return features.select(keep)


def data_checks(prs: PairSet, features: pa.Table, t: TrainConfig) -> dict:
    """Counts of suspicious training data, warned about (or refused, ``train.on_suspicious_data: error``):
    repeated pairs, chosen == rejected, pairs whose tokens reach ``train.max_length`` (cut, or just fitting).

    Raises:
        RcsInputError: with ``error``, when any of them is found (more than half the pairs, for the length).
    """
    import pyarrow.compute as pc

    checks = suspicious(prs)
    longest = pc.max_element_wise(pc.list_value_length(features.column("chosen_input_ids")),
                                  pc.list_value_length(features.column("rejected_input_ids")))
    checks["at_max_length"] = int(pc.sum(pc.greater_equal(longest, t.max_length)).as_py() or 0)
    checks["at_max_length_share"] = round(checks["at_max_length"] / max(1, features.num_rows), 4)
    problems = [f"{checks['duplicate_pairs']} repeated pairs (same prompt id, chosen and rejected)"] \
        if checks["duplicate_pairs"] else []
    if checks["identical_pairs"]:
        problems.append(f"{checks['identical_pairs']} pairs with chosen == rejected (no learning signal)")
    if checks["at_max_length_share"] > 0.5:
        problems.append(f"{100 * checks['at_max_length_share']:.0f}% of the pairs reach train.max_length="
                        f"{t.max_length} (cut): raise it")
    if problems and t.on_suspicious_data == "error":
        raise RcsInputError(f"{prs.source}: {'; '.join(problems)} (train.on_suspicious_data=error)")
    for problem in problems:
        print(f"warning: {prs.source}: {problem}", file=sys.stderr)
    return checks


def check_gpu_only(cfg: RunConfig, t: TrainConfig) -> None:
    """Refuse flash-attention without GPUs and trackers that are not installed, in one line, before anything loads
    (QLoRA without GPUs is refused by the config checks of every stage's train settings)."""
    tracking.check_installed(t.report_to)
    if cfg.policy.attn_implementation == "flash_attention_2" and not t.use_gpu:
        raise RcsInputError("policy.attn_implementation=flash_attention_2 needs CUDA GPUs and the flash-attn "
                            "package: set train.use_gpu=true, or use sdpa")


def _stage(cfg: RunConfig, stage: Optional[int], pairs: Optional[str]) -> int:
    if not cfg.stages and pairs is not None and stage in (None, 0):
        return 0                                        # a config without stages trains the pairs it is given
    if not cfg.stages:
        raise RcsInputError("no stages in the config: pass --pairs")
    return stage_index(cfg, stage, default="first")


def run(cfg: RunConfig, stage: Optional[int] = None, pairs: Optional[str] = None, policy: Optional[str] = None,
        reference: Optional[str] = None, out_dir: Optional[str] = None, progress: bool = True,
        chain: Optional[List[str]] = None) -> TrainResult:
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
    from rcs_ray.modeling.checkpoints import check_causal_lm
    from rcs_ray.modeling.loading import check_models_fit, load_tokenizer
    from rcs_ray.ray_runtime import init_ray
    from rcs_ray.train.loop import schedule

    k = _stage(cfg, stage, pairs)
    t = stage_train(cfg, k) if cfg.stages else cfg.train
    check_gpu_only(cfg, t)
    start, seconds = time.time(), {}
    prs = stage_pairs(cfg, k, pairs)                                   # 1. pairs
    try:
        schedule(len(prs.rows), t, t.num_workers)
    except ValueError as exc:
        raise RcsInputError(f"{prs.source}: {exc}") from None
    tw = cfg.tinyworld
    policy_path = resolve_model_dir(policy or cfg.policy.path, "policy.path", tw)
    ref_path = resolve_model_dir(reference, "reference", tw) if reference else policy_path
    tok_path = resolve_model_dir(cfg.policy.tokenizer, "policy.tokenizer", tw) if cfg.policy.tokenizer else policy_path
    staged = storage.StagedDir(storage.absolute(out_dir or RunLayout(cfg.output_dir).stage(k).train.dir),
                               key="--out" if out_dir else "output_dir")
    staged.pull(*TrainFiles.INPUTS)
    used_chain: List[str] = []

    def get_chain() -> List[str]:
        used_chain[:] = policy_chain(cfg, k, policy_path, chain)
        return list(used_chain)

    inputs = loss_inputs(cfg, t, k, prs, get_chain)                    # 2. loss inputs
    tok = load_tokenizer(tok_path, cfg.policy.trust_remote_code)
    models = {"policy.path": policy_path, **({} if prs.has_ref_logps else {"reference": ref_path}),
              **{f"policy chain ({p})": m for p, m in inputs.models.items()}}
    for key, path in models.items():                                  # never train or score with random weights
        if not storage.is_uri(path):
            check_causal_lm(path, key, cfg.policy.trust_remote_code)
    check_models_fit(tok, list(models.values()), cfg.policy.trust_remote_code)
    init_ray(cfg.ray, use_gpu=t.use_gpu)
    seconds["read"] = time.time() - start
    settings = refs.FeatureSettings.of(t, cfg.policy, tok_path, tok.pad_token_id)
    with interrupts.phase("reference pass"):
        features = reference_features(prs, inputs, ref_path, settings, staged.local, progress)   # 3. features
    seconds["features"] = time.time() - start - sum(seconds.values())
    checks = data_checks(prs, features, t)

    run_name = f"{cfg.name}-stage{k + 1}"
    track = tracking.settings_for(cfg, f"stage{k + 1}", t.report_to, {"train": to_dict(t), "stage": k + 1,
                                                                      "objective": prs.target})
    spec = LaunchSpec(policy=policy_path, pad_token_id=tok.pad_token_id, loss_params=inputs.params,
                      trust_remote_code=cfg.policy.trust_remote_code,
                      attn_implementation=cfg.policy.attn_implementation,
                      tracking=track.as_dict() if track else None)
    check_resumable(staged.local, staged.home, run_name, t, spec, refs.cached_key(staged.local))
    staged.push(*TrainFiles.INPUTS)
    log.info("stage %d: training on %d pairs (%s, ZeRO-%d, %d workers)", k + 1, len(prs.rows), t.loss, t.zero_stage,
             t.num_workers)
    with interrupts.phase("Ray Train"):
        result = launch(features, t, spec, run_name, staged.home, staged.local, progress)   # 4. launch
    seconds["fit"] = time.time() - start - sum(seconds.values())
    home = TrainFiles(staged.home)
    outputs = storage.OutputSet(staged.local, TrainFiles.OUTPUTS, last=SUMMARY_FILE)   # one set, summary last
    try:
        with interrupts.phase("export"):
            history = export(result, outputs.tmp, tok, spec)                 # 5. export
            summary = _summary(k, prs, t, inputs, history, home, policy_path, ref_path, used_chain, seconds)
            summary.update(checkpoint=result.checkpoint.path, run_name=run_name, data_checks=checks)
            storage.write_text(TrainFiles(outputs.tmp).summary, json.dumps(summary, indent=1))
            outputs.commit()
    except BaseException:
        outputs.abort()
        raise
    staged.push(*TrainFiles.OUTPUTS, cache=True)
    return TrainResult(out_dir=staged.home, model_dir=home.model, metrics_path=home.metrics,
                       summary_path=home.summary, checkpoint=result.checkpoint.path, history=history,
                       summary=summary)


def _summary(k: int, prs, t, inputs, history: List[dict], home: TrainFiles, policy_path: str, ref_path: str,
             used_chain: List[str], seconds: dict) -> dict:
    """``train_summary.json``: what was trained on what, with what, and how it ended."""
    last = history[-1] if history else {}
    return {"stage": k + 1, "objective": prs.target, "loss": t.loss, "pairs": len(prs.rows), "source": prs.source,
            "policy": policy_path, "reference": ref_path if not prs.has_ref_logps else "precomputed",
            "margin_objectives": inputs.margin_names, "loss_kwargs": inputs.params,
            "spo_reward_source": (t.spo_reward_source if t.loss == "spo" and k > 0 else None),
            "spo_chain": used_chain, "steps": last.get("step", 0), "workers": t.num_workers,
            "zero_stage": t.zero_stage, "precision": t.precision, "lora": to_dict(t.lora) if t.uses_lora else None,
            "adapter_dir": home.adapter if t.uses_lora else None,
            "memory_mb": {k.split("/", 1)[1]: round(v, 1) for k, v in last.items() if k.startswith("memory/")},
            "first": history[0] if history else None, "last": history[-1] if history else None,
            "seconds": round(sum(seconds.values()), 2),
            "seconds_by_part": {part: round(v, 2) for part, v in seconds.items()}, "model_dir": home.model,
            "resumed_from_step": last.get("resumed_from", 0)}

