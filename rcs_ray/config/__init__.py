"""Typed configuration: dataclasses behind OmegaConf structured configs, YAML files, ``key=value`` overrides.

``load_config(path, overrides)`` merges, in order: the schema defaults, the YAML files named by ``extends:``
(relative to the file that names them), the file itself, then the overrides; it returns a validated
:class:`RunConfig` dataclass. Every problem is raised as :class:`~rcs_ray.errors.RcsInputError` with one line that
names the file and the key. Pass each piece of the system only its own sub-config.

Each section's dataclass sits in its own module with the docs of its fields (``doc_field``: what
``rcs-ray config --explain KEY`` prints) and its ``check``:

- :mod:`rcs_ray.config.model` -- ``policy:`` (:class:`ModelConfig`);
- :mod:`rcs_ray.config.objectives` -- ``objectives:``, ``eval.judge`` (:class:`ObjectiveConfig`, :class:`JudgeConfig`);
- :mod:`rcs_ray.config.stage` -- ``stages:`` (:class:`StageConfig`; its typed ``train:``, :class:`StageTrainConfig`);
- :mod:`rcs_ray.config.data` -- a dataset (:class:`DataConfig`); :mod:`rcs_ray.config.rc` -- ``stages.N.rc``;
- :mod:`rcs_ray.config.sampling` -- ``sampling:``; :mod:`rcs_ray.config.train` -- ``train:`` (and ``train.lora``);
- :mod:`rcs_ray.config.run` -- :class:`RunConfig` and ``eval:``, ``tracking:``, ``ray:``, ``tinyworld:``.

And around them:

- :mod:`rcs_ray.config.fields` -- ``doc_field`` and the ``Checker`` every ``check`` reports through;
- :mod:`rcs_ray.config.loader` -- YAML, ``extends``, overrides (``load_config``, ``to_yaml``, ``to_dict``);
- :mod:`rcs_ray.config.checks` -- ``validate``: every component's check, then the checks across sections;
- :mod:`rcs_ray.config.explain` -- ``explain(key)``: a key's type, default and doc;
- :mod:`rcs_ray.config.stages` -- per-stage views: ``stage_index``, ``stage_objectives``, ``stage_train``, and the
  two meanings of "earlier objectives": ``aligned_before`` (one per earlier stage) and ``scored_before`` (those a
  stage keeps).

Model and data paths may start with ``tinyworld:`` (e.g. ``tinyworld:policy``): they name assets of the embedded
tiny world, which are built (and cached) on first use; see :mod:`rcs_ray.tinyworld`.
"""

from rcs_ray.config.checks import validate
from rcs_ray.config.data import DATA_FORMATS, PRESETS, DataConfig
from rcs_ray.config.explain import explain
from rcs_ray.config.loader import load_config, to_dict, to_yaml
from rcs_ray.config.model import ModelConfig
from rcs_ray.config.objectives import CHAT_TEMPLATES, OBJECTIVE_KINDS, OUTPUTS, JudgeConfig, ObjectiveConfig
from rcs_ray.config.rc import STRATEGY_NAMES, RCConfig
from rcs_ray.config.run import EvalConfig, RayConfig, RunConfig, TinyWorldConfig, TrackingConfig
from rcs_ray.config.sampling import ENGINES, AdaptiveConfig, SamplingConfig
from rcs_ray.config.stage import StageConfig, StageTrainConfig
from rcs_ray.config.stages import (
    aligned_before,
    scored_before,
    stage_index,
    stage_objectives,
    stage_train,
    with_stage_train,
)
from rcs_ray.config.train import LOSS_NAMES, PRECISIONS, LoraConfig, TrainConfig

__all__ = [
    "CHAT_TEMPLATES",
    "DATA_FORMATS",
    "ENGINES",
    "LOSS_NAMES",
    "OBJECTIVE_KINDS",
    "OUTPUTS",
    "PRECISIONS",
    "PRESETS",
    "STRATEGY_NAMES",
    "AdaptiveConfig",
    "DataConfig",
    "EvalConfig",
    "JudgeConfig",
    "LoraConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "RayConfig",
    "RCConfig",
    "RunConfig",
    "SamplingConfig",
    "StageConfig",
    "StageTrainConfig",
    "TinyWorldConfig",
    "TrackingConfig",
    "TrainConfig",
    "aligned_before",
    "explain",
    "load_config",
    "scored_before",
    "stage_index",
    "stage_objectives",
    "stage_train",
    "to_dict",
    "to_yaml",
    "validate",
    "with_stage_train",
]
