"""Checked inputs of the preference losses (:mod:`rcs_ray.train.losses`): every tensor a loss takes is validated
and shaped here, and bad input raises ``ValueError`` with a one-line message naming the argument. Half-precision
inputs are upcast to float32 (the cast keeps the gradient). Imports torch only."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

Coefficients = Union[float, Sequence[float], torch.Tensor]


def check_beta(beta: float) -> float:
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta: expected a positive number, got {beta!r}") from None
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta: expected a positive finite number, got {beta}")
    return beta


def check_finite(name: str, t: torch.Tensor) -> None:
    bad = ~torch.isfinite(t.detach())
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        where_s = where[0] if len(where) == 1 else where
        raise ValueError(f"{name}: non-finite value {t.detach()[where].item()} at index {where_s}")


def as_float(t: torch.Tensor) -> torch.Tensor:
    """Upcast float16 / bfloat16 to float32 (differentiable); leave float32 / float64 as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def logps(name: str, t, batch: Optional[int] = None) -> torch.Tensor:
    """Validate a ``(B,)`` floating tensor of finite log-probs (``B`` = ``batch`` when given)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape (B,), got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating tensor, got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty tensor of shape (B,), got shape {tuple(t.shape)}")
    if batch is not None and t.shape[0] != batch:
        raise ValueError(f"{name}: expected shape ({batch},) like policy_chosen_logps, got {tuple(t.shape)}")
    check_finite(name, t)
    return as_float(t)


def pair_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    pc = logps("policy_chosen_logps", policy_chosen_logps)
    batch = pc.shape[0]
    pr = logps("policy_rejected_logps", policy_rejected_logps, batch)
    rc = logps("ref_chosen_logps", ref_chosen_logps, batch)
    rr = logps("ref_rejected_logps", ref_rejected_logps, batch)
    return pc, pr, rc, rr


def columns(name: str, t, batch: int) -> torch.Tensor:
    """Validate a ``(B, M)`` floating tensor of finite rewards (``M`` may be 0)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape (B, M), got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating tensor, got dtype {t.dtype}")
    if t.ndim != 2 or t.shape[0] != batch:
        raise ValueError(f"{name}: expected shape ({batch}, M) (one row per pair), got {tuple(t.shape)}")
    check_finite(name, t)
    return as_float(t)


def paired_columns(chosen_name: str, chosen, rejected_name: str, rejected, batch: int):
    """Validated (B, J) chosen / rejected column tensors of the same shape."""
    c, r = columns(chosen_name, chosen, batch), columns(rejected_name, rejected, batch)
    if c.shape != r.shape:
        raise ValueError(f"{rejected_name}: shape {tuple(r.shape)} differs from {chosen_name} {tuple(c.shape)}")
    return c, r


def coefficients(
    name: str, values: Coefficients, size: int, like: torch.Tensor, what: str, broadcast: bool = False
) -> torch.Tensor:
    """A finite 1-D float tensor of ``size`` entries on ``like``'s device (``what`` explains ``size``).

    With ``broadcast``, a single python number stands for ``size`` equal entries.
    """
    if broadcast and isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [float(values)] * size
    try:
        out = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}: expected a sequence of {size} numbers ({what}), got {values!r}") from None
    if out.ndim != 1 or out.shape[0] != size:
        got = str(out.shape[0]) if out.ndim == 1 else f"shape {tuple(out.shape)}"
        raise ValueError(f"{name}: expected {size} entries ({what}), got {got}")
    check_finite(name, out)
    return out
