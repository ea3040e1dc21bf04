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

DS_TAG = "deepspeed"
HF_DIR = "hf_model"


def build_ds_config(train: TrainConfig, world_size: int) -> Dict[str, Any]:
    """The DeepSpeed config dict for ``train`` on ``world_size`` data-parallel workers.

    ZeRO stage, precision (fp32 | bf16 | fp16 with dynamic loss scaling), gradient accumulation, clipping
    (``max_grad_norm`` 0: none), an optional linear warm-up, and with ``offload_optimizer`` DeepSpeed's own AdamW on
    the CPU (DeepSpeedCPUAdam). Without offload the loop passes a client ``torch.optim.AdamW``.
    """
    zero: Dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bool(train.use_gpu)}
    cfg: Dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "train_batch_size": train.batch_size * train.gradient_accumulation_steps * world_size,
        "gradient_clipping": float(train.max_grad_norm),
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if train.precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif train.precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 16, "loss_scale_window": 100}
    if train.offload_optimizer:
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": train.learning_rate, "betas": [0.9, 0.999],
                                                         "eps": 1e-8, "weight_decay": 0.0}}
    if train.warmup_steps > 0:
        cfg["scheduler"] = {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": train.learning_rate,
                                                           "warmup_num_steps": train.warmup_steps,
                                                           "warmup_type": "linear"}}
    return cfg


def schedule(num_rows: int, train: TrainConfig, world_size: int) -> Tuple[int, int]:
    """``(steps_per_epoch, total_steps)``: ``total = max_steps`` when set, else ``num_epochs * steps_per_epoch``.

    Raises:
        ValueError: fewer pairs than one global batch.
    """
    global_batch = train.batch_size * train.gradient_accumulation_steps * world_size
    per_epoch = num_rows // global_batch
    if per_epoch == 0:
        raise ValueError(f"{num_rows} pairs are fewer than one global batch of {global_batch} (batch_size "
                         f"{train.batch_size} x accumulation {train.gradient_accumulation_steps} x {world_size} "
                         f"workers)")
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
    return order[start:start + train.batch_size]


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

    ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])          # (2B, T)
    mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
    labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits          # (2B, T, V)
    logps = sequence_logps(logits, labels)
    b = batch["chosen_input_ids"].shape[0]
    return logps[:b], logps[b:]


def preference_loss(loss_name: str, chosen, rejected, batch: Dict[str, Any], beta: float,
                    loss_kwargs: Optional[Dict[str, Any]] = None):
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


def load_features(shard) -> Dict[str, list]:
    """The whole feature dataset of a ``ray.train`` dataset shard as python columns, in ``index`` order."""
    import pyarrow as pa

    parts = list(shard.iter_batches(batch_size=None, batch_format="pyarrow"))
    table = pa.concat_tables(parts).sort_by("index")
    return {name: table.column(name).to_pylist() for name in table.column_names}


# ----------------------------------------------------------------------------------------------- the loop
def _reduce(values: List[float], device, world: int) -> List[float]:
    """Mean of a small vector over the workers (one all-reduce)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1 and dist.is_initialized():
        dist.all_reduce(t)
        t /= world
    return t.tolist()


METRIC_KEYS = ("loss", "rewards/accuracy", "rewards/margins", "rewards/chosen", "rewards/rejected",
               "logps/chosen", "logps/rejected", "rewards/margin_term")


def _engine(config: Dict[str, Any], train: TrainConfig, world: int):
    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM

    from rcs_ray.modeling.checkpoints import loading_problem
    from rcs_ray.storage import local_copy

    if not torch.cuda.is_available():
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False   # skip a ~45 s op build on CPU
    torch.manual_seed(train.seed)
    model, info = AutoModelForCausalLM.from_pretrained(local_copy(config["policy"]), dtype=torch.float32,
                                                       trust_remote_code=config.get("trust_remote_code", False),
                                                       output_loading_info=True)
    if loading_problem(info):
        raise RuntimeError(f"{config['policy']}: loaded with random weights for {loading_problem(info)}")
    model.config.use_cache = False
    optimizer = None if train.offload_optimizer else torch.optim.AdamW(
        model.parameters(), lr=train.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           model_parameters=None if optimizer else model.parameters(),
                                           config=build_ds_config(train, world))
    return engine


def _export(engine, train: TrainConfig, rank: int, out: str) -> None:
    """HF-format weights of the engine's module into ``out`` on rank 0 (ZeRO-3: gathered from every rank)."""
    import contextlib

    import deepspeed

    module = engine.module
    ctx = (deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
           if train.zero_stage == 3 else contextlib.nullcontext())
    with ctx:
        if rank == 0:
            module.save_pretrained(out, safe_serialization=True)


def _save(engine, train: TrainConfig, rank: int, step: int, history: list, metrics: dict, final: bool) -> None:
    import ray.train

    with tempfile.TemporaryDirectory(prefix="rcs-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=DS_TAG, client_state={"step": step, "history": history})
        if final:
            _export(engine, train, rank, os.path.join(tmp, HF_DIR))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _maybe_fail(config: Dict[str, Any], step: int, rank: int, world: int) -> None:
    """Test hook: the last worker raises before each step in ``config["fail_at_steps"]``, once per step (a marker
    file in ``config["fail_marker_dir"]`` remembers it across worker-group restarts and job restarts)."""
    if rank != world - 1 or step not in (config.get("fail_at_steps") or ()):
        return
    marker = os.path.join(config["fail_marker_dir"], f"failed-before-step-{step}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError(f"injected worker failure before step {step} (test hook)")


def train_loop_per_worker(config: Dict[str, Any]) -> List[dict]:
    """Ray Train worker function: DPO / MODPO / SPO steps with DeepSpeed; returns the metric history (rank 0).

    ``config`` keys: ``train`` (TrainConfig fields as a dict), ``policy`` (model dir), ``pad_token_id``,
    ``loss_kwargs`` (e.g. MODPO ``weights``, SPO ``alphas``), ``trust_remote_code``, ``fail_at_steps`` and
    ``fail_marker_dir`` (a test hook, see :func:`_maybe_fail`).
    """
    import ray.train

    train = TrainConfig(**config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    table = load_features(ray.train.get_dataset_shard("train"))
    n = len(table["index"])
    per_epoch, total = schedule(n, train, world)
    engine = _engine(config, train, world)
    step, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            _, client = engine.load_checkpoint(d, tag=DS_TAG)
        step, history = int(client["step"]), list(client["history"])
    resumed_from = step                      # 0: a fresh run; else the checkpoint's step this run continued from
    engine.train()
    loss_name, beta = train.loss, train.beta
    metrics: Dict[str, float] = {}
    while step < total:
        _maybe_fail(config, step + 1, rank, world)
        t0, sums, tokens = time.perf_counter(), np.zeros(len(METRIC_KEYS)), 0
        for micro in range(train.gradient_accumulation_steps):
            batch = collate_rows(table, batch_rows(step, micro, rank, n, train, world), config["pad_token_id"],
                                 engine.device)
            chosen, rejected = pair_logps(engine, batch)
            loss, m = preference_loss(loss_name, chosen, rejected, batch, beta, config.get("loss_kwargs"))
            engine.backward(loss)
            engine.step()
            m["loss"] = float(loss.detach())
            sums += [m.get(k, 0.0) for k in METRIC_KEYS]
            tokens += int(batch["chosen_attention_mask"].sum() + batch["rejected_attention_mask"].sum())
        step += 1
        means = _reduce(list(sums / train.gradient_accumulation_steps) + [tokens], engine.device, world)
        seconds = time.perf_counter() - t0
        metrics = dict(zip(METRIC_KEYS, means[:-1]))
        metrics.update(step=step, total_steps=total, epoch=step / per_epoch, resumed_from=resumed_from,
                       lr=float(engine.get_lr()[0]), seconds=seconds, tokens_per_second=means[-1] * world / seconds)
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"non-finite loss {metrics['loss']} at step {step}")
        history.append(metrics)
        if step == total or (train.save_steps and step % train.save_steps == 0):
            _save(engine, train, rank, step, history, metrics, final=step == total)
        elif step % train.log_steps == 0:
            ray.train.report(metrics)
    if not metrics:     # restored from the final checkpoint of a finished run: report (and export) it again
        _save(engine, train, rank, step, history, history[-1] if history else {"step": step}, final=True)
    return history
