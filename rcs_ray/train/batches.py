"""What a training step computes on: the seeded data order, one batch's rows and tensors, both sides' log-probs,
and the registered loss. Plain Python and torch (no Ray, no DeepSpeed): the loop (:mod:`rcs_ray.train.loop`), the
workers' reference pass (:mod:`rcs_ray.train.worker_refs`), the checks and the planner use it.

Data order. Every worker holds the whole (small, tokenized) feature table. Epoch ``e`` visits the pairs in the order
``default_rng([seed, e]).permutation(N)``; optimizer step ``s`` takes the next ``G = batch_size * accumulation *
world`` of them (an incomplete tail is dropped) and worker ``r``'s micro step ``a`` the slice
``[(r * accumulation + a) * batch_size, ...)`` of that global batch (:func:`batch_rows`). The order depends on the
seed and step only, so a run restored from its step-``s`` checkpoint continues with exactly the batches an
uninterrupted run would have used.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import numpy as np

from rcs_ray.config import TrainConfig
from rcs_ray.registry import LOSSES


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
