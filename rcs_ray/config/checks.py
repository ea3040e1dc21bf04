"""Checks of a loaded config that its types cannot express: choices, ranges, cross-references.

Each component checks itself (``check`` beside its fields: :mod:`rcs_ray.config.model`, ``objectives``, ``stage``,
``data``, ``rc``, ``sampling``, ``train``, ``run``); :func:`validate` runs them in order and adds the checks across
sections (unique objective names, ``from_stage``, each stage's merged ``train``). Every failure is an
:class:`~rcs_ray.errors.RcsInputError` with one line naming the file and the key.
"""

from __future__ import annotations

from rcs_ray.config.fields import Checker
from rcs_ray.config.objectives import ObjectiveConfig, check_shared_models
from rcs_ray.config.path_checks import validate_model_paths
from rcs_ray.config.run import RunConfig
from rcs_ray.config.stages import stage_objectives, stage_train
from rcs_ray.errors import RcsInputError


def validate(cfg: RunConfig, source: str = "config") -> None:
    """Check values the schema's types cannot: choices, ranges, cross-references.

    Args:
        cfg: the loaded config.
        source: the file (and "with overrides") the messages name.

    Raises:
        RcsInputError: the first problem, one line naming the file and the key.
    """
    c = Checker(source)
    names = cfg.objective_names
    if len(set(names)) != len(names):
        c.fail("objectives", f"objective names must be unique, got {names}")
    for i, obj in enumerate(cfg.objectives):
        obj.check(c, f"objectives.{i}")
    check_shared_models(c, cfg.objectives)
    for i, obj in enumerate(cfg.objectives):
        c.resources(f"objectives.{i}.resources", obj.resources)
    for i, stage in enumerate(cfg.stages):
        stage.check(c, f"stages.{i}", names, cfg.train.loss)
    for i, obj in enumerate(cfg.objectives):
        _check_from_stage(c, f"objectives.{i}", obj, cfg)
    cfg.sampling.check(c, "sampling")
    cfg.policy.check(c, "policy")
    validate_model_paths(c, cfg)
    cfg.tracking.check(c, "tracking")
    cfg.train.check(c, "train", names)
    for i, stage in enumerate(cfg.stages):
        if stage.train.overrides():
            try:
                merged = stage_train(cfg, i)
            except RcsInputError as exc:
                raise RcsInputError(f"{source}: {exc}") from None
            merged.check(c, f"stages.{i}.train", names)
    cfg.eval.check(c, names, "eval")
    cfg.tinyworld.check(c, "tinyworld")


def _check_from_stage(c: Checker, key: str, obj: ObjectiveConfig, cfg: RunConfig) -> None:
    """``from_stage: j`` names a stage, and every sampled stage that scores the objective comes after it."""
    j = obj.from_stage
    if j is None:
        return
    if not 1 <= j <= len(cfg.stages):
        c.fail(f"{key}.from_stage", f"{j} is not a stage (1..{len(cfg.stages)})")
    for k, st in enumerate(cfg.stages):
        if st.sample and obj.name in [o.name for o in stage_objectives(cfg, k)] and k + 1 <= j:
            c.fail(
                f"{key}.from_stage",
                f"stage {k + 1} scores {obj.name!r} but stage {j}'s policy does not exist "
                f"yet then: from_stage must be an earlier stage",
            )
