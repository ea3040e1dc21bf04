"""Preference losses over sequence log-prob tensors: DPO, MODPO and SPO, and a name -> function registry.

Every loss is a pure function ``(policy_*_logps, ref_*_logps, ..., beta) -> (loss, metrics)``:

- inputs are summed (or averaged) response log-probs of shape ``(B,)``, one entry per preference pair, computed by
  :func:`rcs_ray.modeling.logprobs.sequence_logps`; the reference ones (and any margin / earlier-stage reward) come
  from frozen models, computed under ``torch.no_grad`` or ahead of time;
- ``loss`` is a scalar tensor, the batch mean; ``metrics`` is a dict of python floats (detached, one device sync):
  ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracy``, ``logps/chosen``,
  ``logps/rejected`` (batch means), plus ``rewards/margin_term`` for MODPO and SPO;
- bad input (a wrong shape, a NaN or inf, a non-positive ``beta``) raises ``ValueError`` with a one-line message
  that names the argument.

Half-precision inputs are upcast to float32 before the log-sigmoid (the cast keeps the gradient).
Imports torch only.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from rcs_ray import registry as _registry
from rcs_ray.train.loss_inputs import Coefficients, check_beta, coefficients, pair_logps, paired_columns

__all__ = ["dpo_loss", "modpo_loss", "spo_loss", "LOSSES", "get_loss"]

Metrics = Dict[str, float]
LossOutput = Tuple[torch.Tensor, Metrics]


# ----------------------------------------------------------------------------------------------- shared core
def _metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    margin_term: Optional[torch.Tensor] = None,
) -> Metrics:
    """Batch means as python floats, gathered with one ``.tolist()`` (a single device sync)."""
    names = [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracy",
        "logps/chosen",
        "logps/rejected",
    ]
    values = [
        chosen_rewards.mean(),
        rejected_rewards.mean(),
        (chosen_rewards - rejected_rewards).mean(),
        (chosen_rewards > rejected_rewards).float().mean(),
        policy_chosen.mean(),
        policy_rejected.mean(),
    ]
    if margin_term is not None:
        names.append("rewards/margin_term")
        values.append(margin_term.mean())
    stacked = torch.stack([v.detach().to(torch.float64) for v in values])
    return dict(zip(names, stacked.tolist()))


def _offset_pair_loss(pc, pr, rc, rr, chosen_offset, rejected_offset, scale: float, beta: float) -> LossOutput:
    """``r = (beta * (log pi - log ref) - offset) / scale``; loss = mean -log sigmoid(r_chosen - r_rejected)."""
    chosen_rewards = (beta * (pc - rc) - chosen_offset) / scale
    rejected_rewards = (beta * (pr - rr) - rejected_offset) / scale
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    margin_term = (chosen_offset - rejected_offset) / scale
    return loss, _metrics(chosen_rewards, rejected_rewards, pc, pr, margin_term)


# ----------------------------------------------------------------------------------------------- losses
def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> LossOutput:
    r"""Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290).

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_i \log\sigma\big(\beta[(\log\pi_\theta(y_w) - \log\pi_{ref}(y_w))
                      - (\log\pi_\theta(y_l) - \log\pi_{ref}(y_l))]\big)

    computed with ``F.logsigmoid`` (stable for large logits of either sign).

    Args:
        policy_chosen_logps: (B,) log pi_theta(y_w | x), summed (or averaged) over response tokens.
        policy_rejected_logps: (B,) log pi_theta(y_l | x).
        ref_chosen_logps: (B,) log pi_ref(y_w | x) from the frozen reference.
        ref_rejected_logps: (B,) log pi_ref(y_l | x).
        beta: KL strength (> 0); also scales the implicit rewards.

    Returns:
        ``(loss, metrics)``: ``loss`` a scalar tensor (batch mean); ``metrics`` python floats:
        ``rewards/chosen`` and ``rewards/rejected`` (means of beta * (log pi - log pi_ref)), ``rewards/margins``,
        ``rewards/accuracy`` (fraction of pairs whose chosen reward > rejected reward), ``logps/chosen``,
        ``logps/rejected`` (means of the policy log-probs).

    Raises:
        ValueError: a tensor that is not (B,), batch sizes that differ, a NaN / inf entry, ``beta`` <= 0.
    """
    beta = check_beta(beta)
    pc, pr, rc, rr = pair_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen_rewards = beta * (pc - rc)
    rejected_rewards = beta * (pr - rr)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, _metrics(chosen_rewards, rejected_rewards, pc, pr)


def modpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_margin_rewards: torch.Tensor,
    rejected_margin_rewards: torch.Tensor,
    weights: Coefficients,
    beta: float = 0.1,
) -> LossOutput:
    r"""Multi-Objective DPO (Zhou et al. 2023, "Beyond One-Preference-Fits-All Alignment", arXiv 2310.03708).

    The objective being trained has weight ``w_0``; the other ``K-1`` objectives enter through frozen reward
    sources ``r_{-0}`` (explicit reward models or earlier implicit rewards) as a margin:

    .. math::
        r(x, y) = \frac{\beta(\log\pi_\theta(y|x) - \log\pi_{ref}(y|x)) - w_{1:}^\top r_{-0}(x, y)}{w_0}, \qquad
        \mathcal{L} = -\frac{1}{B}\sum_i \log\sigma\big(r(x, y_w) - r(x, y_l)\big)

    With ``K = 1`` (no margin columns) or zero margins and ``w_0 = 1`` this is exactly :func:`dpo_loss`.

    Args:
        policy_chosen_logps: (B,) log pi_theta(y_w | x).
        policy_rejected_logps: (B,) log pi_theta(y_l | x).
        ref_chosen_logps: (B,) log pi_ref(y_w | x).
        ref_rejected_logps: (B,) log pi_ref(y_l | x).
        chosen_margin_rewards: (B, K-1) frozen rewards of y_w on the other objectives.
        rejected_margin_rewards: (B, K-1) frozen rewards of y_l on the other objectives.
        weights: (K,) objective weights, a tensor or a sequence; ``weights[0]`` (> 0) belongs to the objective
            being trained, ``weights[1:]`` to the margin columns in order.
        beta: KL strength (> 0).

    Returns:
        ``(loss, metrics)`` with the :func:`dpo_loss` metric keys, where ``rewards/*`` are the MODPO rewards
        ``r`` above, plus ``rewards/margin_term``: the mean of ``w_{1:} . (r_{-0}(y_w) - r_{-0}(y_l)) / w_0``, the
        amount subtracted from each logit.

    Raises:
        ValueError: bad shapes (margin columns vs ``len(weights) - 1``), NaN / inf entries, ``weights[0] <= 0``,
            ``beta`` <= 0.
    """
    beta = check_beta(beta)
    pc, pr, rc, rr = pair_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    batch = pc.shape[0]
    mc, mr = paired_columns(
        "chosen_margin_rewards", chosen_margin_rewards, "rejected_margin_rewards", rejected_margin_rewards, batch
    )
    n_margin = mc.shape[1]
    w = coefficients("weights", weights, n_margin + 1, pc, f"K = 1 + {n_margin} margin columns")
    if not float(w[0]) > 0:
        raise ValueError(f"weights: weights[0] (the trained objective) must be > 0, got {float(w[0])}")
    return _offset_pair_loss(pc, pr, rc, rr, mc @ w[1:], mr @ w[1:], float(w[0]), beta)


def spo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    prev_chosen_implicit: Optional[torch.Tensor] = None,
    prev_rejected_implicit: Optional[torch.Tensor] = None,
    alphas: Optional[Coefficients] = None,
    beta: float = 0.1,
) -> LossOutput:
    r"""Sequential Preference Optimization, stage k (Lou et al. 2024, "SPO: Multi-Dimensional Preference Sequential
    Alignment With Implicit Reward Modeling", arXiv 2405.12739; AAAI 2025).

    SPO aligns one preference dimension per stage. Stage k starts from the previous stage's policy
    ``pi_{k-1}``, which is also its reference, and keeps the alignment reached on the earlier dimensions
    ``j < k`` through their implicit rewards ``r_j(x, y) = beta_j log(pi_j(y|x) / pi_{j-1}(y|x))``:

    .. math::
        \mathcal{L}_{SPO} = -\frac{1}{B}\sum_i \log\sigma\Big(
            \beta\log\frac{\pi_\theta(y_w|x)}{\pi_{k-1}(y_w|x)} - \beta\log\frac{\pi_\theta(y_l|x)}{\pi_{k-1}(y_l|x)}
            - \sum_{j<k} \alpha_j\,\big[r_j(x, y_w) - r_j(x, y_l)\big]\Big)

    This form is this project's derivation from the set-up the paper states, not from its equations (which were not
    available to check against): the derivation, how the earlier-stage term reweights pairs, and what was not
    checked are in docs/method.md. It is MODPO's margin form with ``w = (1, alpha)``, the previous policy as
    reference and the earlier objectives' rewards as margins. With no earlier stage (``k = 1``), zero earlier-stage
    rewards or ``alphas = 0`` it is exactly :func:`dpo_loss`.

    Args:
        policy_chosen_logps: (B,) log pi_theta(y_w | x).
        policy_rejected_logps: (B,) log pi_theta(y_l | x).
        ref_chosen_logps: (B,) log pi_{k-1}(y_w | x), the previous stage's policy (the SFT model at stage 1).
        ref_rejected_logps: (B,) log pi_{k-1}(y_l | x).
        prev_chosen_implicit: (B, k-1) frozen rewards ``R_j(x, y_w)`` of the objectives of stages ``j = 1..k-1``,
            recovered from their implicit rewards (:func:`rcs_ray.train.margins.implicit_margins`: a stage trained
            with SPO or MODPO keeps earlier rewards in its ``beta_j log(pi_j / pi_{j-1})``); ``None`` (with
            ``prev_rejected_implicit``) at stage 1.
        prev_rejected_implicit: (B, k-1) the same for y_l.
        alphas: (k-1,) coefficients ``alpha_j >= 0`` (a tensor, a sequence, or one number for every stage);
            required when there are earlier-stage columns.
        beta: KL strength of this stage (> 0).

    Returns:
        ``(loss, metrics)`` with the :func:`dpo_loss` keys, where ``rewards/*`` are the stage-k rewards
        ``beta log(pi_theta / pi_{k-1}) - sum_j alpha_j r_j``, plus ``rewards/margin_term``: the mean of
        ``sum_j alpha_j (r_j(y_w) - r_j(y_l))``.

    Raises:
        ValueError: bad shapes (earlier-stage columns vs ``len(alphas)``), only one of the two earlier-stage
            tensors given, NaN / inf entries, a negative alpha, ``beta`` <= 0.
    """
    beta = check_beta(beta)
    pc, pr, rc, rr = pair_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen_offset, rejected_offset = _earlier_stage_offsets(pc, prev_chosen_implicit, prev_rejected_implicit, alphas)
    return _offset_pair_loss(pc, pr, rc, rr, chosen_offset, rejected_offset, 1.0, beta)


def _earlier_stage_offsets(pc: torch.Tensor, prev_chosen, prev_rejected, alphas) -> Tuple[torch.Tensor, torch.Tensor]:
    """SPO's earlier-stage terms ``sum_j alpha_j r_j(y)`` of the chosen and rejected sides, checked (zeros at stage 1;
    see :func:`spo_loss` for the arguments and the errors)."""
    if (prev_chosen is None) != (prev_rejected is None):
        given = "prev_chosen_implicit" if prev_rejected is None else "prev_rejected_implicit"
        raise ValueError(f"{given}: given without its partner; pass both earlier-stage reward tensors or neither")
    if prev_chosen is None:
        zeros = torch.zeros_like(pc)
        return zeros, zeros
    ic, ir = paired_columns("prev_chosen_implicit", prev_chosen, "prev_rejected_implicit", prev_rejected, pc.shape[0])
    n_prev = ic.shape[1]
    if alphas is None:
        if n_prev:
            raise ValueError(f"alphas: required for {n_prev} earlier-stage reward columns")
        alphas = 0.0
    a = coefficients("alphas", alphas, n_prev, pc, "one per earlier-stage column", broadcast=True)
    if bool((a < 0).any()):
        raise ValueError(f"alphas: expected coefficients >= 0 (Lagrange multipliers), got {a.tolist()}")
    return ic @ a, ir @ a


# ----------------------------------------------------------------------------------------------- registry
# Each loss's registry entry (its function, hyperparameters and per-pair inputs) is in rcs_ray.registry, where the
# config checks read the names without importing torch.
LOSSES = _registry.LOSSES


def get_loss(name: str) -> Callable[..., LossOutput]:
    """Return the loss function registered under ``name`` (one of :data:`LOSSES`).

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    try:
        return LOSSES[name].load()
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None
