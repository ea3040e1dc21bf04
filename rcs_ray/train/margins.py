"""What each loss needs besides the log-probs, for one stage: its hyperparameters and its per-pair margin columns.

The loss registry (:data:`rcs_ray.registry.LOSSES`) names one ``prepare`` function per loss that needs more than
``beta``; each takes a :class:`LossContext` and returns :class:`LossInputs`. Pure numpy (no torch, no Ray):

- MODPO (:func:`modpo_inputs`): the rewards of the objectives the stage keeps (:func:`rcs_ray.config.scored_before`:
  those of the earlier stages other than the target, each once; never a later one), ``(N, M)`` per side, and the
  weights ``(M + 1,)`` with the target's weight first;
- SPO (:func:`spo_inputs`): the earlier stages' own rewards ``R_j`` (:func:`rcs_ray.config.aligned_before`: one per
  stage), ``(N, k)`` per side, recovered from the sequence log-probs of the policy chain ``pi_0 .. pi_k`` (each
  stage's implicit reward ``beta_j * (log pi_j - log pi_{j-1})`` less what its loss kept of the earlier rewards:
  :func:`stage_mix`, :func:`implicit_margins`; computed by the reference log-prob pass, so the margins are known
  only after it: :attr:`LossInputs.from_logps`), or with ``train.spo_reward_source: recorded`` the pairs' recorded
  rewards of the earlier stages' objectives as a stand-in; and ``alphas``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rcs_ray.config import TrainConfig, scored_before
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
        aligned_before: the objective of each stage before this one, in stage order, one per stage
            (:func:`rcs_ray.config.aligned_before`; MODPO's margins are :func:`rcs_ray.config.scored_before` of it).
        earlier_betas: each earlier stage's own ``train.beta`` (SPO's implicit rewards are scaled by them).
        earlier_trains: each earlier stage's train settings (which loss made its policy: what its implicit reward
            holds besides its own objective's, :func:`stage_mix`).
        policy_chain: returns ``pi_0 .. pi_k`` (the policy before stage 1, after each earlier stage, and the one this
            stage starts from); called only by a loss that needs it.
    """

    pairs: PairSet
    train: TrainConfig
    stage: int
    objective_names: List[str]
    aligned_before: List[str]
    earlier_betas: List[float] = field(default_factory=list)
    earlier_trains: List[TrainConfig] = field(default_factory=list)
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
        raise RcsInputError(
            f"{pairs.source}: train.loss={loss} needs the rewards of the earlier objectives {list(names)} "
            f"({list(REWARD_COLUMNS)} or chosen_scores / rejected_scores); sample this stage "
            f"(sample: true) to have them scored"
        )
    unknown = [n for n in names if n not in pairs.reward_names]
    if unknown:
        raise RcsInputError(
            f"{pairs.source}: train.loss={loss}: the earlier objective(s) {unknown} are not among "
            f"the pairs' rewards {pairs.reward_names}; sample this stage (sample: true) to have them "
            f"scored, or give data with those scores"
        )
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
        raise RcsInputError(
            f"{pairs.source}: train.loss=modpo needs the pairs' target objective (a 'target' column "
            f"or the stage's objective)"
        )
    others = scored_before(ctx.aligned_before, pairs.target)
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


Mix = Tuple[float, Tuple[float, ...]]  # (scale, coefficients on R_1 .. R_{j-1}): see stage_mix


def stage_mix(
    trains: Sequence[TrainConfig], objectives: Sequence[str], objective_names: Sequence[str] = ()
) -> List[Mix]:
    """What each stage's implicit reward holds: ``beta_j log(pi_j / pi_{j-1}) = scale_j R_j + sum_i c_ji R_i``
    (i < j), by the loss stage j trained with (each loss's optimum, up to a term of x alone):

    - DPO: ``(1, 0)``: the policy's implicit reward is the objective's reward;
    - SPO with ``alphas``: ``(1, alphas)`` (:func:`rcs_ray.train.losses.spo_loss`: the earlier rewards stay in it);
    - MODPO with ``weights`` (target first): ``(w_0, w_i)`` on the earlier stages' objectives (each objective once:
      its first stage), the margins MODPO subtracted.

    Args:
        trains: the train settings of stages 1..k, in order.
        objectives: their objectives, in stage order.
        objective_names: the config's objectives (the order of ``train.modpo_weights``).
    """
    out = []
    for j, (t, target) in enumerate(zip(trains, objectives)):
        c = np.zeros(j)
        if t.loss == "spo" and j:
            c[:] = list(t.spo_alphas) if t.spo_alphas is not None else [1.0] * j
            out.append((1.0, tuple(c)))
            continue
        if t.loss != "modpo" or not j:
            out.append((1.0, tuple(c)))
            continue
        kept = scored_before(objectives[:j], target)
        names = [target, *kept]
        w = dict(zip(names, [1.0 / len(names)] * len(names)))
        if t.modpo_weights is not None:
            w = dict(zip(objective_names, map(float, t.modpo_weights)))
        for name in kept:
            c[list(objectives).index(name)] = w[name]
        out.append((w[target], tuple(c)))
    return out


def implicit_margins(
    chosen_logps: Sequence[np.ndarray], rejected_logps: Sequence[np.ndarray], betas, mix: Optional[Sequence[Mix]] = None
) -> Margins:
    """SPO's margins: the earlier objectives' own rewards ``R_j``, j = 1..k, recovered from the policy chain.

    ``beta_j (log pi_j - log pi_{j-1})`` is stage j's implicit reward; it equals ``R_j`` only when stage j trained
    with DPO. A stage trained with SPO or MODPO kept the earlier rewards in it (``mix``, :func:`stage_mix`), so
    ``R_j = (beta_j log(pi_j / pi_{j-1}) - sum_{i<j} c_ji R_i) / scale_j``, in stage order (summing the raw implicit
    rewards would count R_1 twice at stage 3 after an SPO stage 2).

    Args:
        chosen_logps: k+1 arrays (N,): log pi_0(y_w|x) .. log pi_k(y_w|x) of the policy chain.
        rejected_logps: the same for y_l.
        betas: beta_1 .. beta_k, each earlier stage's own ``train.beta`` (one number: the same for every stage).
        mix: per earlier stage ``(scale, coefficients)``; None: every stage trained with DPO.

    Returns:
        ``(chosen (N, k), rejected (N, k))``.
    """

    def recover(logps):
        lp = np.stack([np.asarray(x, dtype=np.float64) for x in logps], axis=1)
        raw = np.broadcast_to(np.asarray(betas, dtype=np.float64), (lp.shape[1] - 1,)) * np.diff(lp, axis=1)
        out = np.zeros_like(raw)
        for j in range(raw.shape[1]):
            scale, coeffs = mix[j] if mix is not None else (1.0, ())
            earlier = out[:, :j] @ np.asarray(coeffs, dtype=np.float64)[:j] if j and len(coeffs) else 0.0
            out[:, j] = (raw[:, j] - earlier) / scale
        return out

    return recover(chosen_logps), recover(rejected_logps)


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
    earlier = list(ctx.aligned_before)
    if t.spo_reward_source == "recorded":
        return LossInputs(params={"alphas": alphas}, margin_names=earlier, margins=_rewards(ctx.pairs, earlier, "spo"))
    chain = ctx.policy_chain()
    prefixes = [f"spo{j}" for j in range(len(chain))]
    betas = list(ctx.earlier_betas) if len(ctx.earlier_betas) == k else [t.beta] * k
    mix = stage_mix(ctx.earlier_trains, earlier, ctx.objective_names) if len(ctx.earlier_trains) == k else None

    def from_logps(logps: Dict[str, Margins]) -> Margins:
        return implicit_margins([logps[p][0] for p in prefixes], [logps[p][1] for p in prefixes], betas, mix)

    return LossInputs(
        params={"alphas": alphas}, margin_names=earlier, models=dict(zip(prefixes, chain)), from_logps=from_logps
    )
