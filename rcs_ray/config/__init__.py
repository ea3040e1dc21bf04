"""Typed configuration: dataclasses behind OmegaConf structured configs, YAML files, ``key=value`` overrides.

``load_config(path, overrides)`` merges, in order: the schema defaults, the YAML files named by ``extends:``
(relative to the file that names them), the file itself, then the overrides; it returns a validated
:class:`RunConfig` dataclass. Every problem is raised as :class:`~rcs_ray.errors.RcsInputError` with one line that
names the file and the key. Pass each piece of the system only its own sub-config.

- :mod:`rcs_ray.config.schema` -- the dataclasses (one per section) and the choices they accept;
- :mod:`rcs_ray.config.loader` -- YAML, ``extends``, overrides (``load_config``, ``to_yaml``, ``to_dict``);
- :mod:`rcs_ray.config.checks` -- ``validate``: choices, ranges, cross-references;
- :mod:`rcs_ray.config.stages` -- per-stage views: ``stage_index``, ``stage_objectives``, ``stage_train``.

Model and data paths may start with ``tinyworld:`` (e.g. ``tinyworld:policy``): they name assets of the embedded
tiny world, which are built (and cached) on first use; see :mod:`rcs_ray.tinyworld`.
"""

from rcs_ray.config.checks import validate
from rcs_ray.config.loader import load_config, to_dict, to_yaml
from rcs_ray.config.schema import (CHAT_TEMPLATES, DATA_FORMATS, ENGINES, LOSS_NAMES, OBJECTIVE_KINDS, OUTPUTS,
                                   PRECISIONS, PRESETS, STRATEGY_NAMES, AdaptiveConfig, DataConfig, EvalConfig,
                                   JudgeConfig, ModelConfig, ObjectiveConfig, RayConfig, RCConfig, RunConfig,
                                   SamplingConfig, StageConfig, TinyWorldConfig, TrainConfig, LoraConfig,
                                   TrackingConfig)
from rcs_ray.config.stages import (earlier_objectives, stage_index, stage_objectives, stage_train,
                                   with_stage_train)

__all__ = ["CHAT_TEMPLATES", "DATA_FORMATS", "ENGINES", "LOSS_NAMES", "OBJECTIVE_KINDS", "OUTPUTS", "PRECISIONS",
           "PRESETS", "STRATEGY_NAMES", "AdaptiveConfig", "DataConfig", "EvalConfig", "JudgeConfig", "ModelConfig", "ObjectiveConfig", "RayConfig", "RCConfig",
           "RunConfig", "SamplingConfig", "StageConfig", "TinyWorldConfig", "TrainConfig", "LoraConfig", "TrackingConfig", "load_config",
           "earlier_objectives", "stage_index", "stage_objectives", "stage_train", "to_dict", "to_yaml", "validate", "with_stage_train"]
