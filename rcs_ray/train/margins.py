"""What each loss needs besides the log-probs, for one stage: its hyperparameters and its per-pair margin columns.

The loss registry (:data:`rcs_ray.registry.LOSSES`) names one ``prepare`` function per loss that needs more than
``beta``; each takes a :class:`LossContext` and returns :class:`LossInputs`. Pure numpy (no torch, no Ray):

- MODPO (:func:`modpo_inputs`): the rewards of the objectives of the earlier stages (never a later one), ``(N, M)``
  per side, and the weights ``(M + 1,)`` with the target's weight first;
- SPO (:func:`spo_inputs`): the earlier stages' implicit rewards ``beta_j * (log pi_j - log pi_{j-1})`` (each stage's
  own beta_j), ``(N, k)``
  per side, from sequence log-probs of the policy chain ``pi_0 .. pi_k`` (computed by the reference log-prob pass,
  so the margins are known only after it: :attr:`LossInputs.from_logps`), or with ``train.spo_reward_source:
  recorded`` the pairs' recorded rewards of the earlier stages' objectives as a stand-in; and ``alphas``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rcs_ray.config import TrainConfig
from rcs_ray.data.pairs import REWARD_COLUMNS, PairSet
from rcs_ray.errors import RcsInputError

Margins = Tuple[np.ndarray, np.ndarray]


@dataclass
class LossContext:
    """What a loss's preparation may use.

    Attributes:
        pairs: the stage's validated pairs.
        train: the stage's train settings.
        stage: the 0-based stage index.
        objective_names: the config's objectives, in config order (``train.modpo_weights`` follows it).
        earlier_objectives: the objectives of the stages before this one, in stage order (one per stage).
        earlier_betas: each earlier stage's own ``train.beta`` (SPO's implicit rewards are scaled by them).
        policy_chain: returns ``pi_0 .. pi_k`` (the policy before stage 1, after each earlier stage, and the one this
            stage starts from); called only by a loss that needs it.
    """
    pairs: PairSet
    train: TrainConfig
    stage: int
    objective_names: List[str]
    earlier_objectives: List[str]
    earlier_betas: List[float] = field(default_factory=list)
    policy_chain: Callable[[], List[str]] = lambda: []


@dataclass
class LossInputs:
    """A loss's inputs for one stage.

    Attributes:
        params: hyperparameters passed to the loss function as keyword arguments (JSON-able, recorded in the summary).
        margin_names: what the margin columns are (objective names).
        margins: ``(chosen (N, M), rejected (N, M))`` known before the reference pass, or ``None``.
        models: extra log-prob columns the reference pass must compute: column prefix -> model.
        from_logps: ``(prefix -> (chosen (N,), rejected (N,)) log-probs) -> margins``, once ``models`` are computed.
    """
    params: Dict = field(default_factory=dict)
    margin_names: List[str] = field(default_factory=list)
    margins: Optional[Margins] = None
    models: Dict[str, str] = field(default_factory=dict)
    from_logps: Optional[Callable[[Dict[str, Margins]], Margins]] = None


def _rewards(pairs: PairSet, names: Sequence[str], loss: str) -> Margins:
    """(N, len(names)) chosen and rejected rewards of the named objectives."""
    n = len(pairs.rows)
    if not names:
        return np.zeros((n, 0)), np.zeros((n, 0))
    if not pairs.reward_names:
        raise RcsInputError(f"{pairs.source}: train.loss={loss} needs the rewards of the earlier objectives {list(names)} "
                            f"({list(REWARD_COLUMNS)} or chosen_scores / rejected_scores); sample this stage "
                            f"(sample: true) to have them scored")
    unknown = [n for n in names if n not in pairs.reward_names]
    if unknown:
        raise RcsInputError(f"{pairs.source}: train.loss={loss}: the earlier objective(s) {unknown} are not among "
                            f"the pairs' rewards {pairs.reward_names}; sample this stage (sample: true) to have them "
                            f"scored, or give data with those scores")
    idx = [pairs.reward_names.index(n) for n in names]
    chosen = np.array([r["chosen_rewards"] for r in pairs.rows], dtype=np.float64).reshape(n, -1)
    rejected = np.array([r["rejected_rewards"] for r in pairs.rows], dtype=np.float64).reshape(n, -1)
    return chosen[:, idx], rejected[:, idx]


def modpo_inputs(ctx: LossContext) -> LossInputs:
    """MODPO: margin rewards of the earlier stages' objectives; ``weights`` with the target's first. At stage 1
    there are none (MODPO is DPO there); a later objective is never a margin.

    ``train.modpo_weights`` gives one weight per configured objective; default equal weights over the target and the
    earlier objectives.

    Raises:
        RcsInputError: no rewards or no target in the pairs, a weight missing for an objective of the pairs, a target
            weight <= 0.
    """
    pairs = ctx.pairs
    if pairs.target is None:
        raise RcsInputError(f"{pairs.source}: train.loss=modpo needs the pairs' target objective (a 'target' column "
                            f"or the stage's objective)")
    others = [n for n in dict.fromkeys(ctx.earlier_objectives) if n != pairs.target]
    chosen, rejected = _rewards(pairs, others, "modpo")
    names = [pairs.target] + others
    weights = ctx.train.modpo_weights
    if weights is None:
        w = [1.0 / len(names)] * len(names)
    else:
        by_name = dict(zip(ctx.objective_names, weights))
        missing = [n for n in names if n not in by_name]
        if missing:
            raise RcsInputError(f"train.modpo_weights: no weight for objective(s) {missing} of {pairs.source}")
        w = [float(by_name[n]) for n in names]
        if not w[0] > 0:
            raise RcsInputError(f"train.modpo_weights: the target {pairs.target!r} needs a weight > 0, got {w[0]}")
    return LossInputs(params={"weights": w}, margin_names=others, margins=(chosen, rejected))


def implicit_margins(chosen_logps: Sequence[np.ndarray], rejected_logps: Sequence[np.ndarray],
                     betas) -> Margins:
    """SPO's earlier-stage implicit rewards ``r_j = beta_j * (log pi_j - log pi_{j-1})``, j = 1..k.

    Args:
        chosen_logps: k+1 arrays (N,): log pi_0(y_w|x) .. log pi_k(y_w|x) of the policy chain.
        rejected_logps: the same for y_l.
        betas: beta_1 .. beta_k, each earlier stage's own ``train.beta`` (one number: the same for every stage).

    Returns:
        ``(chosen (N, k), rejected (N, k))``.
    """
    c = np.stack([np.asarray(x, dtype=np.float64) for x in chosen_logps], axis=1)
    r = np.stack([np.asarray(x, dtype=np.float64) for x in rejected_logps], axis=1)
    b = np.broadcast_to(np.asarray(betas, dtype=np.float64), (c.shape[1] - 1,))
    return b * np.diff(c, axis=1), b * np.diff(r, axis=1)


def spo_inputs(ctx: LossContext) -> LossInputs:
    """SPO at stage k: ``alphas`` (``train.spo_alphas``, default 1.0 per earlier stage) and the earlier stages'
    rewards as margins; stage 1 needs nothing (SPO is DPO there).

    Raises:
        RcsInputError: ``spo_alphas`` of the wrong length; with ``recorded``, rewards missing for an earlier
            objective; with ``implicit``, a policy chain that cannot be built.
    """
    k, t = ctx.stage, ctx.train
    if k == 0:
        return LossInputs()
    alphas = list(t.spo_alphas) if t.spo_alphas is not None else [1.0] * k
    if len(alphas) != k:
        raise RcsInputError(f"train.spo_alphas: stage {k + 1} has {k} earlier stage(s), got {len(alphas)} alphas")
    earlier = list(ctx.earlier_objectives)
    if t.spo_reward_source == "recorded":
        return LossInputs(params={"alphas": alphas}, margin_names=earlier, margins=_rewards(ctx.pairs, earlier, "spo"))
    chain = ctx.policy_chain()
    prefixes = [f"spo{j}" for j in range(len(chain))]
    betas = list(ctx.earlier_betas) if len(ctx.earlier_betas) == k else [t.beta] * k

    def from_logps(logps: Dict[str, Margins]) -> Margins:
        return implicit_margins([logps[p][0] for p in prefixes], [logps[p][1] for p in prefixes], betas)

    return LossInputs(params={"alphas": alphas}, margin_names=earlier, models=dict(zip(prefixes, chain)),
                      from_logps=from_logps)
