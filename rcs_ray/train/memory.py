"""What a training worker's memory holds, as the ``memory/*`` metrics of every step: the parameters it materialised
at load (ZeRO-3: its shard only), its model state now (parameters and ZeRO's flat copies, gradients, optimizer
moments; each storage counted once) and its peak RSS.
"""

from __future__ import annotations

import resource
from typing import Dict

MB = 1 << 20


def param_bytes(model) -> int:
    """Bytes of the parameters this process holds (ZeRO-3: its partitions only)."""
    total = 0
    for p in model.parameters():
        local = getattr(p, "ds_tensor", None)
        t = local if local is not None else p
        total += t.numel() * t.element_size()
    return total


def _tensors(obj, seen: set, depth: int = 0):
    import torch

    if depth > 4:
        return
    if isinstance(obj, torch.Tensor):
        if obj.numel() and obj.untyped_storage().data_ptr() not in seen:
            seen.add(obj.untyped_storage().data_ptr())
            yield obj.untyped_storage().nbytes()
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, seen, depth + 1)


def state_bytes(engine) -> int:
    """Bytes of model state this rank holds: parameters (and ZeRO's flat copies of them), gradients and the
    optimizer's moments, each storage counted once."""
    seen: set = set()
    total = sum(
        _tensors(
            [p.ds_tensor if getattr(p, "ds_tensor", None) is not None else p for p in engine.module.parameters()], seen
        )
    )
    total += sum(_tensors([p.grad for p in engine.module.parameters() if p.grad is not None], seen))
    opt = engine.optimizer
    for holder in (opt, getattr(opt, "optimizer", None)):
        if holder is None:
            continue
        total += sum(_tensors(list(getattr(holder, "state", {}).values()), seen))
        for name in (
            "single_partition_of_fp32_groups",
            "fp32_partitioned_groups_flat",
            "bit16_groups_flat",
            "averaged_gradients",
            "fp16_partitioned_groups_flat",
        ):
            total += sum(_tensors(getattr(holder, name, None), seen))
    return total


def memory_figures(engine) -> Dict[str, float]:
    """``memory/*`` metrics of this worker: parameters materialised at load, model state now, peak RSS (MB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    module = engine.module
    at_load = getattr(module, "rcs_params_at_load", None)
    if at_load is None:
        at_load = getattr(getattr(module, "base_model", None), "rcs_params_at_load", 0)
    trainable = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in module.parameters() if p.requires_grad)
    return {
        "memory/params_at_load_mb": at_load / MB,
        "memory/model_state_mb": state_bytes(engine) / MB,
        "memory/rss_peak_mb": rss,
        "memory/trainable_params": float(trainable),
    }
