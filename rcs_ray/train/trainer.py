"""One training stage on Ray Train + DeepSpeed: pairs -> reference log-probs (Ray Data) -> TorchTrainer -> HF model.

``run(cfg, stage=k)`` reads the stage's pairs, validates them, precomputes the reference log-probs (and SPO's
earlier-stage implicit rewards) in a Ray Data actor pool, trains with ``TorchTrainer`` on ``train.num_workers``
workers (:mod:`rcs_ray.train.loop`), and writes into ``out_dir`` (default ``<output_dir>/stage<k>/train``)::

    model/               HF model + tokenizer (``from_pretrained`` loads it)
    metrics.jsonl        one line per optimizer step (loss, reward accuracy, margins, lr, tokens/s)
    train_summary.json   what was trained on what, first / last metrics, seconds, paths
    features.parquet     cached tokens + reference log-probs (reused when pairs, models and settings match)
    checkpoints/<run>/   Ray Train checkpoints (DeepSpeed state per checkpoint)

Resume: the Ray Train run is named ``<name>-stage<k>`` under ``out_dir/checkpoints``. A failed worker group restarts
from the latest checkpoint (``train.max_failures``); running the same command again after a crash continues from
the latest checkpoint of that run. Both give exactly the weights of an uninterrupted run (tested). Remove
``out_dir`` (or change ``name``) to start over.

Remote storage: when ``out_dir`` is a URI (``s3://...``, or ``output_dir`` is one), Ray Train writes the
checkpoints straight to ``<out_dir>/checkpoints`` (its ``storage_path`` takes URIs, and a multi-node run needs
storage every node reaches) and resumes from there; everything else is written in a local mirror
(:class:`rcs_ray.storage.StagedDir`) and uploaded: ``features.*`` and ``run.json`` before training (a rerun
elsewhere fetches them), ``model/``, ``metrics.jsonl`` and ``train_summary.json`` at the end.

SPO's earlier-stage rewards: with ``train.spo_reward_source: implicit`` (default) stage k's pairs get
``r_j = beta * (log pi_j - log pi_{j-1})`` for every earlier stage j, from the policy chain ``pi_0 .. pi_{k-1}``:
``train.spo_policies`` or, by default, ``policy.path`` followed by ``<output_dir>/stage<j>/train/model`` (what this
function writes); a missing model is an error. ``recorded`` uses the pairs' recorded rewards of the earlier stages'
objectives instead (a stand-in: an explicit reward in place of the implicit one).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
from ray.train import UserCallback

from rcs_ray import storage
from rcs_ray.config import RunConfig, with_stage_train
from rcs_ray.errors import RcsInputError
from rcs_ray.paths import resolve_data, resolve_model_dir, resolve_path
from rcs_ray.train import data as D
from rcs_ray.train import refs

log = logging.getLogger(__name__)

FAIL_ENV = "RCS_RAY_TEST_FAIL_AT_STEPS"      # test hook: "3,5": the last worker raises once before each step
MODEL_DIR, METRICS_FILE, SUMMARY_FILE = "model", "metrics.jsonl", "train_summary.json"
RUN_FILE = "run.json"


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


def _resolve(path: Optional[str], key: str, cfg: RunConfig) -> str:
    return resolve_model_dir(path, key, cfg.tinyworld)


def _stage_index(cfg: RunConfig, stage: Optional[int], pairs: Optional[str]) -> int:
    if stage is None:
        return 0
    if not 0 <= stage < max(1, len(cfg.stages)) or (not cfg.stages and pairs is None):
        raise RcsInputError(f"--stage {stage + 1} out of range: the config has {len(cfg.stages)} stage(s)")
    return stage


def read_pairs(cfg: RunConfig, k: int, pairs: Optional[str]) -> D.TrainingPairs:
    """Stage ``k``'s training pairs: ``pairs`` if given; else the sampling output for a stage that samples, else the
    stage's dataset as it is (stage 1 trains on D1)."""
    st = cfg.stages[k] if cfg.stages else None
    target = st.objective if st else None
    names = None
    if st is not None:
        from rcs_ray.sampling.pipeline import scored_objectives

        names = [o.name for o in scored_objectives(cfg, st)]
    if pairs is None and st is not None and st.sample:
        pairs = storage.join(cfg.output_dir, f"stage{k + 1}", "sampling", "pairs.parquet")
        if not storage.isfile(pairs):
            raise RcsInputError(f"stage {k + 1} trains on sampled pairs and {pairs} does not exist: run "
                                f"`rcs-ray sample` for it first, or pass --pairs")
    if pairs is not None:
        pairs = resolve_path(pairs, cfg.tinyworld)
        if storage.is_uri(pairs):
            storage.require(pairs, "--pairs", "pairs file")
        rows = D.read_pairs_file(pairs, target=target)
        if names and rows.reward_names and rows.reward_names[0].startswith("objective_") \
                and len(names) == len(rows.reward_names):
            rows.reward_names = names        # no stats.json beside the file: the config's scored objectives
        return rows
    if st is None:
        raise RcsInputError("no stages in the config: pass --pairs")
    data = resolve_data(st.data, cfg.tinyworld, key=f"stages.{k}.data.path")
    if not data.path:
        raise RcsInputError(f"stages.{k}.data.path is required (or pass --pairs)")
    rows = _stage_dataset(cfg, data, target)
    if st.mix:
        rows = _mixed(cfg, k, rows)
    return rows


def _stage_dataset(cfg: RunConfig, data, target: Optional[str]) -> D.TrainingPairs:
    rows = D.read_stage_pairs(data, target=target)
    if rows.reward_names and target not in rows.reward_names and len(rows.reward_names) == len(cfg.objectives):
        rows.reward_names = cfg.objective_names     # generic objective_0.. names, in config order
    return rows


def _mixed(cfg: RunConfig, k: int, rows: D.TrainingPairs) -> D.TrainingPairs:
    """Stage ``k``'s dataset followed by its ``mix`` datasets (the "mixed" baseline). Reward columns are kept only when
    every part carries the same objectives (DPO does not use them)."""
    parts = [rows]
    for j, extra in enumerate(cfg.stages[k].mix):
        data = resolve_data(extra, cfg.tinyworld, key=f"stages.{k}.mix.{j}.path")
        if not data.path:
            raise RcsInputError(f"stages.{k}.mix.{j}.path is required")
        parts.append(_stage_dataset(cfg, data, rows.target))
    same = all(p.reward_names == rows.reward_names for p in parts)
    out = []
    for p in parts:
        for r in p.rows:
            out.append(r if same else {c: r[c] for c in D.TEXT_COLUMNS})
    return D.TrainingPairs(rows=out, reward_names=rows.reward_names if same else [], target=rows.target,
                           source=" + ".join(p.source for p in parts))


def _spo_chain(cfg: RunConfig, k: int, policy: str) -> List[str]:
    """pi_0 .. pi_k: the policy before stage 1, after stages 1 .. k-1, and the policy stage k starts from."""
    t = cfg.train
    if t.spo_policies is not None:
        if len(t.spo_policies) != k + 1:
            raise RcsInputError(f"train.spo_policies: stage {k + 1} needs {k + 1} models (pi_0..pi_{k}), "
                                f"got {len(t.spo_policies)}")
        chain = [_resolve(p, f"train.spo_policies.{j}", cfg) for j, p in enumerate(t.spo_policies)]
        if chain[-1] != policy:
            raise RcsInputError(f"train.spo_policies: the last model {chain[-1]} must be the policy stage {k + 1} "
                                f"starts from ({policy}); pass --policy {chain[-1]}")
    else:
        chain = [_resolve(cfg.policy.path, "policy.path", cfg)]
        for j in range(1, k):
            path = storage.join(cfg.output_dir, f"stage{j}", "train", MODEL_DIR)
            if not storage.isdir(path):
                raise RcsInputError(f"spo: stage {j}'s implicit reward needs its trained policy {path} (missing): "
                                    f"train stage {j} first, set train.spo_policies, or "
                                    f"train.spo_reward_source=recorded")
            chain.append(storage.absolute(path))
        chain.append(policy)
    for j in range(1, len(chain)):
        if chain[j] == chain[j - 1]:
            raise RcsInputError(f"spo: pi_{j - 1} and pi_{j} are the same model {chain[j]}, so stage {j}'s implicit "
                                f"reward would be 0: pass --policy (stage {k + 1} starts from stage {k}'s model) or "
                                f"set train.spo_policies")
    return chain


def _list_column(values: np.ndarray) -> pa.Array:
    return pa.array([list(map(float, row)) for row in np.asarray(values).reshape(len(values), -1)],
                    type=pa.list_(pa.float64()))


def _check_models(tok, tokenizer: str, models: List[str], trust_remote_code: bool) -> None:
    from transformers import AutoConfig

    for path in dict.fromkeys(models):
        vocab = getattr(AutoConfig.from_pretrained(storage.local_copy(path, weights=False),
                                                   trust_remote_code=trust_remote_code), "vocab_size", None)
        if vocab is not None:
            D.check_vocab(tok, vocab, path)


class ProgressLog(UserCallback):
    """Ray Train callback (runs in the controller): one log line per reported step."""

    def after_report(self, run_context, metrics, checkpoint):
        m = metrics[0] if metrics else {}
        if "loss" in m:
            print(f"[train] step {m['step']}/{m['total_steps']} loss {m['loss']:.4f} "
                  f"acc {m['rewards/accuracy']:.3f} margin {m['rewards/margins']:+.4f} lr {m['lr']:.2e} "
                  f"{m['tokens_per_second']:.0f} tok/s" + ("  [checkpoint]" if checkpoint else ""), flush=True)

    def after_exception(self, run_context, worker_exceptions):
        pass


def run(cfg: RunConfig, stage: Optional[int] = None, pairs: Optional[str] = None, policy: Optional[str] = None,
        reference: Optional[str] = None, out_dir: Optional[str] = None, progress: bool = True) -> TrainResult:
    """Train one stage with ``cfg.train.loss`` (dpo | modpo | spo) on Ray Train + DeepSpeed.

    Args:
        cfg: the run config (``train``, ``policy``, ``stages``, ``ray`` are used).
        stage: 0-based stage index (default 0).
        pairs: a pairs file (default: the stage's data; see :func:`read_pairs`).
        policy: the model to start from (default ``policy.path``).
        reference: the frozen reference (default: the policy this stage starts from).
        out_dir: default ``<output_dir>/stage<k>/train``.
        progress: a log line per step.

    Returns:
        :class:`TrainResult`.

    Raises:
        RcsInputError: bad pairs, models or config values (one line); nothing has been trained then.
    """
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig as RayRunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from rcs_ray.ray_runtime import init_ray
    from rcs_ray.train.loop import schedule, train_loop_per_worker

    k = _stage_index(cfg, stage, pairs)
    if cfg.stages:
        cfg = with_stage_train(cfg, k)                    # the stage's own train overrides
    t = cfg.train
    start = time.time()
    prs = read_pairs(cfg, k, pairs)
    try:
        schedule(len(prs.rows), t, t.num_workers)
    except ValueError as exc:
        raise RcsInputError(f"{prs.source}: {exc}") from None
    policy_path = _resolve(policy or cfg.policy.path, "policy.path", cfg)
    ref_path = _resolve(reference, "reference", cfg) if reference else policy_path
    tok_path = _resolve(cfg.policy.tokenizer, "policy.tokenizer", cfg) if cfg.policy.tokenizer else policy_path
    staged = storage.StagedDir(storage.absolute(out_dir or storage.join(cfg.output_dir, f"stage{k + 1}", "train")),
                               key="--out" if out_dir else "output_dir")
    out_dir, home = staged.local, staged.home           # a URI home: work in a local mirror, upload the outputs
    staged.pull(refs.FEATURES_FILE, refs.FEATURES_KEY, RUN_FILE)

    extra: Dict[str, pa.Array] = {}
    loss_kwargs: dict = {}
    margin_names: List[str] = []
    models: Dict[str, str] = {} if prs.has_ref_logps else {"ref": ref_path}
    chain: List[str] = []
    if prs.has_ref_logps:
        for c in D.REF_COLUMNS:
            extra[c] = pa.array([r[c] for r in prs.rows], type=pa.float64())
    if t.loss == "modpo":
        mc, mr, weights, margin_names = D.modpo_margins(prs, cfg.objective_names, t.modpo_weights)
        extra["chosen_margin"], extra["rejected_margin"] = _list_column(mc), _list_column(mr)
        loss_kwargs["weights"] = weights
    elif t.loss == "spo" and k > 0:
        alphas = list(t.spo_alphas) if t.spo_alphas is not None else [1.0] * k
        if len(alphas) != k:
            raise RcsInputError(f"train.spo_alphas: stage {k + 1} has {k} earlier stage(s), got {len(alphas)} alphas")
        loss_kwargs["alphas"] = alphas
        margin_names = [s.objective for s in cfg.stages[:k]]
        if t.spo_reward_source == "recorded":
            mc, mr = D.recorded_margins(prs, margin_names)
            extra["chosen_margin"], extra["rejected_margin"] = _list_column(mc), _list_column(mr)
        else:
            chain = _spo_chain(cfg, k, policy_path)
            for j, path in enumerate(chain):
                if path != models.get("ref"):
                    models.setdefault(f"spo{j}", path)

    tok = refs.load_tokenizer(tok_path, cfg.policy.trust_remote_code)
    _check_models(tok, tok_path, [policy_path, *models.values()], cfg.policy.trust_remote_code)
    init_ray(cfg.ray, use_gpu=t.use_gpu)
    seconds = {"read": time.time() - start}
    features = refs.compute_features(
        refs.pairs_table(prs, extra), models, tok_path, t.max_length, chat_template=cfg.policy.chat_template,
        dtype=cfg.policy.dtype, batch_size=t.ref_batch_size, num_actors=t.ref_num_actors, use_gpu=t.use_gpu,
        trust_remote_code=cfg.policy.trust_remote_code, cache_dir=out_dir, pad_token_id=tok.pad_token_id)
    if chain:
        prefix = {path: name for name, path in models.items()}
        mc, mr = D.implicit_margins(refs.logps_columns(features, [prefix[p] for p in chain], "chosen"),
                                    refs.logps_columns(features, [prefix[p] for p in chain], "rejected"), t.beta)
        features = features.append_column("chosen_margin", _list_column(mc))
        features = features.append_column("rejected_margin", _list_column(mr))
    keep = ["index", *refs.TOKEN_COLUMNS, *D.REF_COLUMNS] + \
        (["chosen_margin", "rejected_margin"] if "chosen_margin" in features.column_names else [])
    features = features.select(keep)
    seconds["features"] = time.time() - start - sum(seconds.values())

    run_name = f"{cfg.name}-stage{k + 1}"
    _check_resumable(out_dir, run_name, t, policy_path, loss_kwargs, home=home)
    staged.push(refs.FEATURES_FILE, refs.FEATURES_KEY, RUN_FILE)
    fail_at = os.environ.get(FAIL_ENV, "")
    loop_config = {"train": dataclasses.asdict(t), "policy": policy_path, "pad_token_id": tok.pad_token_id,
                   "loss_kwargs": loss_kwargs, "trust_remote_code": cfg.policy.trust_remote_code,
                   "fail_at_steps": [int(x) for x in fail_at.split(",") if x.strip()], "fail_marker_dir": out_dir}
    resources = {"CPU": 1, **({"GPU": 1} if t.use_gpu else {}), **t.resources_per_worker}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        torch_config=TorchConfig(backend=t.backend) if t.backend else None,
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources),
        run_config=RayRunConfig(name=run_name, storage_path=storage.join(home, "checkpoints"),
                                failure_config=FailureConfig(max_failures=t.max_failures),
                                checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
                                callbacks=[ProgressLog()] if progress else None),
        datasets={"train": ray.data.from_arrow(features)}, dataset_config=DataConfig(datasets_to_split=[]))
    log.info("stage %d: training on %d pairs (%s, ZeRO-%d, %d workers)", k + 1, len(prs.rows), t.loss, t.zero_stage,
             t.num_workers)
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    seconds["fit"] = time.time() - start - sum(seconds.values())
    res = _finish(cfg, k, out_dir, result, tok, prs, policy_path, ref_path, chain, margin_names, loss_kwargs,
                  run_name, seconds, home=home)
    staged.push(MODEL_DIR, METRICS_FILE, SUMMARY_FILE, cache=True)
    return res


# Settings that may change between a run and its resumption (they do not change the batches or the weights).
RESUME_FREE = ("max_steps", "num_epochs", "save_steps", "keep_checkpoints", "max_failures", "log_steps",
               "ref_batch_size", "ref_num_actors")


def _check_resumable(out_dir: str, run_name: str, t, policy: str, loss_kwargs: dict,
                     home: Optional[str] = None) -> None:
    """Refuse to resume checkpoints of a run trained on other inputs; record this run's inputs otherwise.

    The fingerprint is the feature cache key (pairs, tokenizer, reference models) plus the training settings that
    shape the weights. A finished run with the same fingerprint is resumed (and re-exported) as it is.
    ``home``: where the checkpoints live (``<home>/checkpoints``; default ``out_dir``, else a URI).
    """
    home = home or out_dir
    fingerprint = json.loads(json.dumps({
        "features": refs.cached_key(out_dir), "policy": policy, "loss_kwargs": loss_kwargs,
        "train": {k: v for k, v in dataclasses.asdict(t).items() if k not in RESUME_FREE}}))
    path = os.path.join(out_dir, RUN_FILE)
    if storage.isdir(storage.join(home, "checkpoints", run_name)) and os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
        if old != fingerprint:
            diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise RcsInputError(f"{home} holds checkpoints of run {run_name!r} trained with other inputs ({diff} "
                                f"differ): remove it, pass another --out, or change 'name'")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(fingerprint, fh, indent=1)


def _finish(cfg, k, out_dir, result, tok, prs, policy_path, ref_path, chain, margin_names, loss_kwargs, run_name,
            seconds, home: Optional[str] = None) -> TrainResult:
    """Copy the HF export out of the final checkpoint, save the tokenizer, write metrics and the summary into
    ``out_dir``; the result names the paths at ``home`` (default ``out_dir``; a URI when the caller uploads)."""
    from rcs_ray.train.loop import HF_DIR

    home = home or out_dir

    history = list(result.return_value or [])
    model_dir = os.path.join(out_dir, MODEL_DIR)
    ckpt = result.checkpoint
    if ckpt is None:
        raise RuntimeError(f"training run {run_name} produced no checkpoint")
    with ckpt.as_directory() as d:
        src = os.path.join(d, HF_DIR)
        if not os.path.isdir(src):
            raise RuntimeError(f"the final checkpoint {ckpt.path} has no {HF_DIR}/ export")
        tmp = model_dir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)
    metrics_path = os.path.join(out_dir, METRICS_FILE)
    with open(metrics_path, "w", encoding="utf-8") as fh:
        for m in history:
            fh.write(json.dumps(m) + "\n")
    t = cfg.train
    summary = {"stage": k + 1, "objective": prs.target, "loss": t.loss, "pairs": len(prs.rows), "source": prs.source,
               "policy": policy_path, "reference": ref_path if not prs.has_ref_logps else "precomputed",
               "margin_objectives": margin_names, "loss_kwargs": loss_kwargs,
               "spo_reward_source": (t.spo_reward_source if t.loss == "spo" and k > 0 else None), "spo_chain": chain,
               "steps": history[-1]["step"] if history else 0, "workers": t.num_workers, "zero_stage": t.zero_stage,
               "precision": t.precision, "first": history[0] if history else None,
               "last": history[-1] if history else None, "seconds": round(sum(seconds.values()), 2),
               "seconds_by_part": {k: round(v, 2) for k, v in seconds.items()},
               "model_dir": storage.join(home, MODEL_DIR),
               "checkpoint": ckpt.path, "run_name": run_name}
    summary_path = os.path.join(out_dir, SUMMARY_FILE)
    with open(summary_path, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    return TrainResult(out_dir=home, model_dir=storage.join(home, MODEL_DIR),
                       metrics_path=storage.join(home, METRICS_FILE), summary_path=storage.join(home, SUMMARY_FILE),
                       checkpoint=ckpt.path, history=history, summary=summary)
