"""The per-worker training loop: a DeepSpeed engine from :class:`~rcs_ray.config.TrainConfig`, preference batches
in a seeded order, metrics and resumable checkpoints through ``ray.train``.

Data order. Every worker holds the whole (small, tokenized) feature table. Epoch ``e`` visits the pairs in the order
``default_rng([seed, e]).permutation(N)``; optimizer step ``s`` takes the next ``G = batch_size * accumulation *
world`` of them (an incomplete tail is dropped) and worker ``r``'s micro step ``a`` the slice
``[(r * accumulation + a) * batch_size, ...)`` of that global batch (:func:`batch_rows`). The order depends on the
seed and step only, so a run restored from its step-``s`` checkpoint continues with exactly the batches an
uninterrupted run would have used.

Checkpoints. Every worker calls ``engine.save_checkpoint`` (ZeRO partitions live on every rank) into its own
temporary directory, with the step and metric history as DeepSpeed client state, and hands it to
``ray.train.report(metrics, checkpoint=Checkpoint.from_directory(...))``: Ray Train merges the workers' files into
one checkpoint directory in storage. A (re)started worker group loads ``ray.train.get_checkpoint()``. The last
checkpoint also holds ``hf_model/``: the weights in HF format (gathered from the partitions under ZeRO-3).

Only :func:`train_loop_per_worker` needs Ray / DeepSpeed (imported inside); the builders are plain Python.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from rcs_ray.config import TrainConfig
from rcs_ray.registry import LOSSES
from rcs_ray.train.deepspeed_engine import build_ds_config  # noqa: F401 - re-exported (benchmarks/dpo_step_variants.py)

DS_TAG = "deepspeed"
HF_DIR = "hf_model"


def schedule(num_rows: int, train: TrainConfig, world_size: int) -> Tuple[int, int]:
    """``(steps_per_epoch, total_steps)``: ``total = max_steps`` when set, else ``num_epochs * steps_per_epoch``.

    Raises:
        ValueError: fewer pairs than one global batch.
    """
    global_batch = train.batch_size * train.gradient_accumulation_steps * world_size
    per_epoch = num_rows // global_batch
    if per_epoch == 0:
        raise ValueError(
            f"{num_rows} pairs are fewer than one global batch of {global_batch} (batch_size "
            f"{train.batch_size} x accumulation {train.gradient_accumulation_steps} x {world_size} "
            f"workers)"
        )
    return per_epoch, (train.max_steps if train.max_steps is not None else train.num_epochs * per_epoch)


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, num_rows: int) -> np.ndarray:
    """(num_rows,) the seeded visiting order of epoch ``epoch``."""
    order = np.random.default_rng([seed, epoch]).permutation(num_rows)
    order.setflags(write=False)
    return order


def batch_rows(step: int, micro: int, rank: int, num_rows: int, train: TrainConfig, world_size: int) -> np.ndarray:
    """Row indices (batch_size,) of worker ``rank``'s micro step ``micro`` of optimizer step ``step``."""
    per_epoch, _ = schedule(num_rows, train, world_size)
    epoch, within = divmod(step, per_epoch)
    order = epoch_order(train.seed, epoch, num_rows)
    global_batch = train.batch_size * train.gradient_accumulation_steps * world_size
    start = within * global_batch + (rank * train.gradient_accumulation_steps + micro) * train.batch_size
    return order[start : start + train.batch_size]


# ----------------------------------------------------------------------------------------------- one step
def pair_logps(model, batch: Dict[str, Any]):
    """Policy log-probs of both sides in one forward pass.

    Args:
        model: a causal LM (or a DeepSpeed engine wrapping one).
        batch: from :func:`rcs_ray.modeling.logprobs.collate_pairs`: ``{side}_input_ids``, ``{side}_attention_mask``,
            ``{side}_labels`` (B, T) on the model's device.

    Returns:
        ``(chosen (B,), rejected (B,))`` summed response log-probs (float32 or wider).
    """
    import torch

    from rcs_ray.modeling.logprobs import sequence_logps

    ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])  # (2B, T)
    mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
    labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (2B, T, V)
    logps = sequence_logps(logits, labels)
    b = batch["chosen_input_ids"].shape[0]
    return logps[:b], logps[b:]


def reference_forward(engine, table: Dict[str, list], pad_token_id: int, rows: np.ndarray):
    """``(chosen (B,), rejected (B,))`` log-probs of ``rows`` under the engine's weights: eval mode, no grad."""
    import torch

    engine.eval()
    try:
        with torch.no_grad():
            return pair_logps(engine, collate_rows(table, rows, pad_token_id, engine.device))
    finally:
        engine.train()


def preference_loss(
    loss_name: str, chosen, rejected, batch: Dict[str, Any], beta: float, loss_kwargs: Optional[Dict[str, Any]] = None
):
    """The registered loss on one batch, called the same way for every loss: policy log-probs, the reference
    log-probs (B,) from ``batch``, ``beta``, the loss's hyperparameters ``loss_kwargs``, and its per-pair margin
    columns (B, M) from ``batch`` under the argument names its registry entry declares."""
    spec = LOSSES[loss_name]
    kwargs = dict(loss_kwargs or {})
    if spec.inputs is not None and "chosen_margin" in batch:
        kwargs[spec.inputs[0]], kwargs[spec.inputs[1]] = batch["chosen_margin"], batch["rejected_margin"]
    return spec.load()(chosen, rejected, batch["ref_chosen_logps"], batch["ref_rejected_logps"], beta=beta, **kwargs)


def collate_rows(table: Dict[str, list], rows: np.ndarray, pad_token_id: int, device) -> Dict[str, Any]:
    """Collate the given rows of a column dict (see :func:`load_features`) onto ``device``."""
    from rcs_ray.modeling.logprobs import collate_pairs

    extra = [k for k in ("ref_chosen_logps", "ref_rejected_logps", "chosen_margin", "rejected_margin") if k in table]
    feats = []
    for i in rows:
        f = {k: table[k][i] for k in extra}
        for side in ("chosen", "rejected"):
            ids = table[f"{side}_input_ids"][i]
            f[f"{side}_input_ids"], f[f"{side}_labels"] = ids, table[f"{side}_labels"][i]
            f[f"{side}_attention_mask"] = [1] * len(ids)
        feats.append(f)
    return {k: v.to(device) for k, v in collate_pairs(feats, pad_token_id, extra_keys=extra).items()}


def load_features(table) -> Dict[str, list]:
    """The whole feature table (a ``pyarrow.Table``) as python columns, in ``index`` order."""
    table = table.sort_by("index")
    return {name: table.column(name).to_pylist() for name in table.column_names}


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
    workers, :func:`rcs_ray.train.deepspeed_engine.memory_figures`).
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
    from rcs_ray.train.deepspeed_engine import memory_figures

    means = _reduce(list(sums / train.gradient_accumulation_steps) + [tokens], engine.device, world)
    seconds = time.perf_counter() - t0
    metrics = dict(zip(METRIC_KEYS, means[:-1]))
    metrics.update(
        **progress, lr=float(engine.get_lr()[0]), seconds=seconds, tokens_per_second=means[-1] * world / seconds
    )
    memory = memory_figures(engine)
    metrics.update(zip(memory, _reduce(list(memory.values()), engine.device, world, op="max")))
    return metrics
