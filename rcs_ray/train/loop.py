"""The per-worker training loop: a DeepSpeed engine from :class:`~rcs_ray.config.TrainConfig`, preference batches
in a seeded order, metrics and resumable checkpoints through ``ray.train``.

Data order: :mod:`rcs_ray.train.batches` (seeded by ``train.seed`` and the step only, so a run restored from its
step-``s`` checkpoint continues with exactly the batches an uninterrupted run would have used).

Checkpoints. Every worker calls ``engine.save_checkpoint`` (ZeRO partitions live on every rank) into its own
temporary directory, with the step and metric history as DeepSpeed client state, and hands it to
``ray.train.report(metrics, checkpoint=Checkpoint.from_directory(...))``: Ray Train merges the workers' files into
one checkpoint directory in storage. A (re)started worker group loads ``ray.train.get_checkpoint()``. The last
checkpoint also holds ``hf_model/``: the weights in HF format (gathered from the partitions under ZeRO-3).

Only :func:`train_loop_per_worker` needs Ray / DeepSpeed (imported inside).
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import time
from typing import Any, Dict, List, Tuple

import numpy as np

from rcs_ray.config import TrainConfig
from rcs_ray.train.batches import (
    batch_rows,
    collate_rows,
    load_features,
    pair_logps,
    preference_loss,
    reference_forward,
    schedule,
)

DS_TAG = "deepspeed"
HF_DIR = "hf_model"


# ----------------------------------------------------------------------------------------------- the loop
def _reduce(values: List[float], device, world: int, op: str = "mean") -> List[float]:
    """Mean (or max) of a small vector over the workers (one all-reduce)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1 and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        if op == "mean":
            t /= world
    return t.tolist()


METRIC_KEYS = (
    "loss",
    "rewards/accuracy",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "rewards/margin_term",
)


def _save(engine, train: TrainConfig, rank: int, step: int, history: list, metrics: dict, final: bool) -> None:
    """A resumable checkpoint (with LoRA: the adapters' state only), plus the HF export when ``final``."""
    import ray.train

    from rcs_ray.train.deepspeed_engine import export_hf

    with tempfile.TemporaryDirectory(prefix="rcs-ckpt-") as tmp:
        engine.save_checkpoint(
            tmp, tag=DS_TAG, client_state={"step": step, "history": history}, exclude_frozen_parameters=train.uses_lora
        )
        if final:
            export_hf(engine, train, rank, os.path.join(tmp, HF_DIR))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _maybe_fail(config: Dict[str, Any], step: int, rank: int, world: int) -> None:
    """Test hook: the last worker raises before each step in ``config["fail_at_steps"]``, once per step (a marker
    file in ``config["fail_marker_dir"]`` remembers it across worker-group restarts and job restarts)."""
    if rank != world - 1 or step not in (config.get("fail_at_steps") or ()):
        return
    marker = os.path.join(config["fail_marker_dir"], f"failed-before-step-{step}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        _recorded(config.get("fail_snapshot"), step - 1)
        raise RuntimeError(f"injected worker failure before step {step} (test hook)")


def _recorded(snapshot, last_step: int, timeout: float = 60.0) -> None:
    """Wait until Ray Train's record (``snapshot``, local) lists a checkpoint when one was saved before this step: the
    controller registers a reported checkpoint asynchronously, and a failure that outruns it would leave the
    checkpoint unrecorded (removed as an orphan on the next run), which is a different test."""
    if not snapshot or last_step < 1:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(snapshot, encoding="utf-8") as fh:
                if "checkpoint_" in fh.read():
                    return
        except OSError:
            pass
        time.sleep(0.1)


def train_loop_per_worker(config: Dict[str, Any]) -> List[dict]:
    """Ray Train worker function: DPO / MODPO / SPO steps with DeepSpeed; returns the metric history (rank 0).

    ``config`` keys: ``features`` (an object ref to the feature table, see :mod:`rcs_ray.train.refs`), ``train``
    (TrainConfig fields as a dict), ``policy`` (model dir), ``pad_token_id``,
    ``loss_kwargs`` (e.g. MODPO ``weights``, SPO ``alphas``), ``trust_remote_code``, ``attn_implementation``,
    ``tracking`` (:class:`rcs_ray.tracking.TrackingSettings` as a dict, or None: rank 0 logs every step to it),
    ``reference`` (None, or how the workers compute the reference log-probs: :mod:`rcs_ray.train.worker_refs`),
    ``fail_at_steps`` and ``fail_marker_dir`` (a test hook, see :func:`_maybe_fail`).

    Metrics: the loss's, ``lr``, ``seconds``, ``tokens_per_second``, and ``memory/*`` (the largest over the
    workers, :func:`rcs_ray.train.memory.memory_figures`).
    """
    import ray.train

    from rcs_ray import tracking
    from rcs_ray.train.deepspeed_engine import build_engine
    from rcs_ray.train.worker_refs import add_reference_logps

    train = TrainConfig.from_dict(config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    features = ray.get(config["features"])
    table = load_features(features)
    n = len(table["index"])
    per_epoch, total = schedule(n, train, world)
    engine, _keepalive = build_engine(
        config["policy"], train, world, total, config.get("trust_remote_code", False), config.get("attn_implementation")
    )
    step, history = _restore(engine, train)
    if config.get("reference") is not None:  # the reference is the starting policy: computed here, before step 1
        forward = functools.partial(reference_forward, engine, table, config["pad_token_id"])
        add_reference_logps(forward, table, features, config["reference"], step, rank, world)
    tracker = tracking.Tracker.open(config.get("tracking")) if rank == 0 else tracking.Tracker.none()
    resumed_from = step  # 0: a fresh run; else the checkpoint's step this run continued from
    engine.train()
    metrics: Dict[str, float] = {}
    while step < total:
        _maybe_fail(config, step + 1, rank, world)
        t0 = time.perf_counter()
        sums, tokens = _optimizer_step(engine, table, config, train, step, rank, world)
        step += 1
        metrics = _step_metrics(
            engine,
            sums,
            tokens,
            t0,
            train,
            world,
            step=step,
            total_steps=total,
            epoch=step / per_epoch,
            resumed_from=resumed_from,
        )
        _record(engine, train, rank, step, total, history, metrics, tracker)
    if not metrics:  # restored from the final checkpoint of a finished run: report (and export) it again
        _save(engine, train, rank, step, history, history[-1] if history else {"step": step}, final=True)
    tracker.close()
    return history


def _record(engine, train: TrainConfig, rank: int, step: int, total: int, history: List[dict], metrics, tracker):
    """A finished step's metrics: refused when the loss is not finite, kept in ``history``, sent to the tracker, and
    reported to Ray Train (with a checkpoint on a save step and the last step)."""
    import ray.train

    if not math.isfinite(metrics["loss"]):
        raise FloatingPointError(f"non-finite loss {metrics['loss']} at step {step}")
    history.append(metrics)
    tracker.log({f"train/{k}": v for k, v in metrics.items() if k not in ("step", "total_steps")}, step)
    if step == total or (train.save_steps and step % train.save_steps == 0):
        _save(engine, train, rank, step, history, metrics, final=step == total)
    elif step % train.log_steps == 0:
        ray.train.report(metrics)


def _restore(engine, train: TrainConfig) -> Tuple[int, List[dict]]:
    """The step and metric history of the checkpoint Ray Train resumes from, its DeepSpeed state loaded into
    ``engine``; ``(0, [])`` for a fresh run."""
    import ray.train

    step, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            _, client = engine.load_checkpoint(d, tag=DS_TAG, load_module_strict=not train.uses_lora)
        step, history = int(client["step"]), list(client["history"])
    return step, history


def _optimizer_step(
    engine, table, config: Dict[str, Any], train: TrainConfig, step: int, rank: int, world: int
) -> Tuple[np.ndarray, int]:
    """One optimizer step: ``train.gradient_accumulation_steps`` micro-batches of this worker's rows, each a
    backward and a DeepSpeed step; returns the summed :data:`METRIC_KEYS` and the tokens seen."""
    n = len(table["index"])
    sums, tokens = np.zeros(len(METRIC_KEYS)), 0
    for micro in range(train.gradient_accumulation_steps):
        batch = collate_rows(
            table, batch_rows(step, micro, rank, n, train, world), config["pad_token_id"], engine.device
        )
        chosen, rejected = pair_logps(engine, batch)
        loss, m = preference_loss(train.loss, chosen, rejected, batch, train.beta, config.get("loss_kwargs"))
        engine.backward(loss)
        engine.step()
        m["loss"] = float(loss.detach())
        sums += [m.get(k, 0.0) for k in METRIC_KEYS]
        tokens += int(batch["chosen_attention_mask"].sum() + batch["rejected_attention_mask"].sum())
    return sums, tokens


def _step_metrics(
    engine, sums: np.ndarray, tokens: int, t0: float, train: TrainConfig, world: int, **progress
) -> Dict[str, float]:
    """One step's metrics, the same on every worker: the loss's means over micro-batches and workers, ``progress``
    (step, total_steps, epoch, resumed_from), ``lr``, ``seconds`` since ``t0``, ``tokens_per_second`` and the
    workers' largest ``memory/*``."""
    from rcs_ray.train.memory import memory_figures

    means = _reduce(list(sums / train.gradient_accumulation_steps) + [tokens], engine.device, world)
    seconds = time.perf_counter() - t0
    metrics = dict(zip(METRIC_KEYS, means[:-1]))
    metrics.update(
        **progress, lr=float(engine.get_lr()[0]), seconds=seconds, tokens_per_second=means[-1] * world / seconds
    )
    memory = memory_figures(engine)
    metrics.update(zip(memory, _reduce(list(memory.values()), engine.device, world, op="max")))
    return metrics
