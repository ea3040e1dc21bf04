"""Steps 2 and 3 of a training stage (:mod:`rcs_ray.train.trainer`): what the loss needs besides the pairs and what
every pair brings to training.

- **loss inputs** -- the loss's hyperparameters and per-pair margin columns, prepared by the function its registry
  entry names (:func:`loss_inputs`; :mod:`rcs_ray.train.margins`); SPO's earlier-stage implicit rewards need the
  policy chain ``pi_0 .. pi_k`` (:func:`policy_chain`, built only when asked for: :class:`PolicyChain`);
- **reference features** -- tokens, the reference log-probs and the margin columns of every pair, in one cached Ray
  Data pass (:func:`reference_features`; :mod:`rcs_ray.train.refs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import pyarrow as pa

from rcs_ray import registry, storage
from rcs_ray.config import RunConfig, TrainConfig, aligned_before, stage_train
from rcs_ray.data.pairs import REF_COLUMNS, PairSet
from rcs_ray.errors import RcsInputError
from rcs_ray.run_layout import RunLayout
from rcs_ray.train import refs
from rcs_ray.train.margins import LossContext, LossInputs
from rcs_ray.train.ref_stages import TOKEN_COLUMNS
from rcs_ray.user_paths import resolve_model_dir


def policy_chain(cfg: RunConfig, k: int, policy: str, given: Optional[List[str]] = None) -> List[str]:
    """pi_0 .. pi_k: the policy before stage 1, after stages 1 .. k-1, and the policy stage k starts from.

    ``given`` (the workflow's own policies) wins, then ``train.spo_policies``, then ``policy.path`` followed by the
    run layout's stage models.

    Raises:
        RcsInputError: a chain of the wrong length, a missing model, one that does not end at ``policy``, or two
            equal neighbours (that stage's implicit reward would be 0).
    """
    tw, spo_policies = cfg.tinyworld, stage_train(cfg, k).spo_policies
    if given is not None:
        chain, key = list(given), "policy chain"
    elif spo_policies is not None:
        chain = [resolve_model_dir(p, f"train.spo_policies.{j}", tw) for j, p in enumerate(spo_policies)]
        key = "train.spo_policies"
    else:
        layout = RunLayout(cfg.output_dir)
        chain = [resolve_model_dir(cfg.policy.path, "policy.path", tw)]
        for j in range(1, k):
            path = layout.stage(j - 1).train.model
            if not storage.isdir(path):
                raise RcsInputError(
                    f"spo: stage {j}'s implicit reward needs its trained policy {path} (missing): "
                    f"train stage {j} first, set train.spo_policies, or "
                    f"train.spo_reward_source=recorded"
                )
            chain.append(storage.absolute(path))
        chain.append(policy)
        key = "policy chain"
    if len(chain) != k + 1:
        raise RcsInputError(f"{key}: stage {k + 1} needs {k + 1} models (pi_0..pi_{k}), got {len(chain)}")
    if chain[-1] != policy:
        raise RcsInputError(
            f"{key}: the last model {chain[-1]} must be the policy stage {k + 1} starts from "
            f"({policy}); pass --policy {chain[-1]}"
        )
    for j in range(1, len(chain)):
        if chain[j] == chain[j - 1]:
            raise RcsInputError(
                f"spo: pi_{j - 1} and pi_{j} are the same model {chain[j]}, so stage {j}'s implicit "
                f"reward would be 0: pass --policy (stage {k + 1} starts from stage {k}'s model) or "
                f"set train.spo_policies"
            )
    return chain


class PolicyChain:
    """SPO's policy chain, built (:func:`policy_chain`) only when the loss asks for it; ``used`` is the last one built
    (empty when none was), for the summary."""

    def __init__(self, cfg: RunConfig, k: int, policy: str, given: Optional[List[str]]):
        self.cfg, self.k, self.policy, self.given = cfg, k, policy, given
        self.used: List[str] = []

    def __call__(self) -> List[str]:
        self.used[:] = policy_chain(self.cfg, self.k, self.policy, self.given)
        return list(self.used)


def loss_inputs(cfg: RunConfig, t: TrainConfig, k: int, prs: PairSet, chain) -> LossInputs:
    """Step 2: the loss's hyperparameters and margin columns, from the function its registry entry names."""
    spec = registry.LOSSES[t.loss]
    if spec.prepare is None:
        return LossInputs()
    ctx = LossContext(
        pairs=prs,
        train=t,
        stage=k,
        objective_names=cfg.objective_names,
        aligned_before=aligned_before(cfg, k),
        earlier_betas=[stage_train(cfg, j).beta for j in range(k)],
        earlier_trains=[stage_train(cfg, j) for j in range(k)],
        policy_chain=chain,
    )
    return registry.resolve(spec.prepare, f"loss {t.loss!r}")(ctx)


def _floats(values) -> pa.Array:
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    return pa.array([list(map(float, row)) for row in values.reshape(len(values), -1)], type=pa.list_(pa.float64()))


@dataclass
class ReferenceFeatures:
    """Step 3's result: the feature table, and how its reference log-probs come.

    Attributes:
        table: tokens, margin columns and (unless ``workers_key``) the reference log-probs of every pair.
        how: ``precomputed`` (the pairs carry them), ``cached`` (an earlier run's), ``separate`` (a Ray Data pass
            just now) or ``training workers`` (they compute them before step 1: :mod:`rcs_ray.train.worker_refs`).
        workers_key: with ``training workers``, the cache key the workers write ``features.parquet`` under.
    """

    table: pa.Table
    how: str
    workers_key: Optional[str] = None


def reference_features(
    prs: PairSet,
    inputs: LossInputs,
    reference: str,
    settings: refs.FeatureSettings,
    cache_dir: str,
    progress: bool,
    in_workers: bool = False,
) -> ReferenceFeatures:
    """Step 3: tokens, reference log-probs and margin columns of every pair (cached in ``cache_dir``).

    The reference runs unless the pairs carry its log-probs; every model the loss asks for runs once, whatever the
    number of columns that name it. ``in_workers``: the reference is the policy the training workers start from, so
    when the loss needs no other model, the pairs are only tokenized here and the workers compute the reference
    log-probs (no reference model loaded by a pass of its own).
    """
    extra: Dict[str, pa.Array] = {}
    if prs.has_ref_logps:
        for c in REF_COLUMNS:
            extra[c] = pa.array([r[c] for r in prs.rows], type=pa.float64())
    if inputs.margins is not None:
        extra["chosen_margin"], extra["rejected_margin"] = (_floats(m) for m in inputs.margins)
    if in_workers and not prs.has_ref_logps and not inputs.models and inputs.from_logps is None:
        table, key = refs.features_for_workers(prs.table(extra), reference, settings, cache_dir, progress)
        return ReferenceFeatures(_keep(table), "cached" if key is None else "training workers", key)
    wanted = {} if prs.has_ref_logps else {"ref": reference}
    wanted.update(inputs.models)
    column_of: Dict[str, str] = {}  # requested prefix -> the prefix whose model computes it
    models: Dict[str, str] = {}
    for prefix, path in wanted.items():
        same = next((p for p, m in models.items() if m == path), None)
        column_of[prefix] = same or prefix
        if same is None:
            models[prefix] = path
    features, reused = refs.compute_features(prs.table(extra), models, settings, cache_dir=cache_dir, progress=progress)
    if inputs.from_logps is not None:
        logps = {p: refs.logps_columns(features, column_of[p]) for p in inputs.models}
        chosen, rejected = inputs.from_logps(logps)
        features = features.append_column("chosen_margin", _floats(chosen))
        features = features.append_column("rejected_margin", _floats(rejected))
    how = "precomputed" if not models else "cached" if reused else "separate"
    return ReferenceFeatures(_keep(features), how)


def _keep(features: pa.Table) -> pa.Table:
    """The columns the workers read: ``index``, the tokens, the reference log-probs and the margins present."""
    keep = ["index", *TOKEN_COLUMNS] + [
        c for c in (*REF_COLUMNS, "chosen_margin", "rejected_margin") if c in features.column_names
    ]
    return features.select(keep)
