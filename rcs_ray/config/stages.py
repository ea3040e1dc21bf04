"""Per-stage views of a run config: which stage a command means, the objectives a stage scores, its train settings."""

from __future__ import annotations

import dataclasses
import re
from typing import List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rcs_ray.config.objectives import ObjectiveConfig
from rcs_ray.config.run import RunConfig
from rcs_ray.config.train import TrainConfig
from rcs_ray.errors import RcsInputError


def one_line(exc: Exception, prefix: str = "") -> str:
    """An OmegaConf error as one line naming its key as a user writes it (``stages.0.rc``, not ``stages[0].rc``);
    ``prefix``: where the node that failed sits (``stages.0.``), for an error OmegaConf names from that node down."""
    key = getattr(exc, "full_key", None)
    key = prefix + re.sub(r"\[(\d+)\]", r".\1", key) if key else key
    msg = str(exc).splitlines()[0].strip()
    msg = re.sub(r"\s*full_key:.*$", "", msg)
    return f"key '{key}': {msg}" if key else msg


def stage_index(cfg: RunConfig, stage: Optional[int], default: str = "first") -> int:
    """The 0-based stage a command works on.

    Args:
        cfg: the run config.
        stage: the stage asked for (0-based; ``--stage`` minus one), or ``None``.
        default: with ``stage=None``: ``"first"`` (stage 0) or ``"first_sampled"`` (the first ``sample: true``).

    Raises:
        RcsInputError: ``stage`` out of range, or no sampled stage for ``"first_sampled"``.
    """
    if stage is None:
        if default == "first":
            return 0
        for i, s in enumerate(cfg.stages):
            if s.sample:
                return i
        raise RcsInputError("no stage with 'sample: true' in the config; pass --stage")
    if not 0 <= stage < len(cfg.stages):
        raise RcsInputError(f"--stage {stage + 1} out of range: the config has {len(cfg.stages)} stage(s)")
    return stage


# "Earlier objectives" has two meanings; each has its name here, and every module asks these two functions.
def aligned_before(cfg: RunConfig, stage: int) -> List[str]:
    """The objective of each stage before ``stage``, in stage order, one per stage (an objective aligned twice is
    listed twice): the history of the policy stage ``stage`` starts from. SPO has one implicit reward per entry
    (:mod:`rcs_ray.train.margins`); the train step's fingerprint records it (:mod:`rcs_ray.fingerprints`)."""
    return [s.objective for s in cfg.stages[:stage]]


def scored_before(aligned: Sequence[str], target: str) -> List[str]:
    """The objectives a stage keeps while it aligns ``target``: those of ``aligned`` (:func:`aligned_before`) other
    than ``target``, each once, in the order first aligned. Its sampling scores them before the target
    (:func:`stage_objectives`), its RC step holds pairs consistent on them (unless ``rc.enforce`` names others) and
    MODPO takes their rewards as margins (:mod:`rcs_ray.train.margins`)."""
    return [name for name in dict.fromkeys(aligned) if name != target]


def stage_objectives(cfg: RunConfig, stage: int) -> List[ObjectiveConfig]:
    """The objectives stage ``stage`` scores, in stage order: :func:`scored_before` then the stage's own, plus any
    enforced objective named beyond them. Their order in ``objectives:`` does not matter."""
    names = cfg.objective_names
    target = cfg.stages[stage].objective
    upto = scored_before(aligned_before(cfg, stage), target) + [target]
    extra = [n for n in (cfg.stages[stage].rc.enforce or []) if n not in upto]
    return [cfg.objectives[names.index(n)] for n in upto + extra]


def stage_train(cfg: RunConfig, stage: int) -> TrainConfig:
    """The train config of stage ``stage`` (0-based): the top-level ``train`` with the stage's overrides (the fields
    its ``train:`` sets, :class:`~rcs_ray.config.stage.StageTrainConfig`) merged on."""
    overrides = cfg.stages[stage].train.overrides()
    if not overrides:
        return cfg.train
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cfg.train), overrides))
    except OmegaConfBaseException as exc:
        raise RcsInputError(f"stages.{stage}.train: {one_line(exc)}") from None


def with_stage_train(cfg: RunConfig, stage: int) -> RunConfig:
    """``cfg`` whose ``train`` is stage ``stage``'s (what the trainer of that stage reads)."""
    return dataclasses.replace(cfg, train=stage_train(cfg, stage))
