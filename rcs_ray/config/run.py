"""The whole run's config (:class:`RunConfig`) and its small sections: evaluation (``eval:``, read by
:mod:`rcs_ray.evaluate`), trackers (``tracking:``, :mod:`rcs_ray.tracking`), Ray (``ray:``, :mod:`rcs_ray.ray_runtime`)
and the tiny world (``tinyworld:``, :mod:`rcs_ray.tinyworld`). The other sections live beside their own checks:
:mod:`~rcs_ray.config.model`, :mod:`~rcs_ray.config.objectives`, :mod:`~rcs_ray.config.stage` (with
:mod:`~rcs_ray.config.data` and :mod:`~rcs_ray.config.rc`), :mod:`~rcs_ray.config.sampling`,
:mod:`~rcs_ray.config.train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from rcs_ray.config.data import DataConfig
from rcs_ray.config.fields import Checker, doc_field
from rcs_ray.config.model import ModelConfig
from rcs_ray.config.objectives import ObjectiveConfig
from rcs_ray.config.sampling import SamplingConfig
from rcs_ray.config.stage import StageConfig
from rcs_ray.config.train import TrainConfig


@dataclass
class TinyWorldConfig:
    """The embedded synthetic world (see rcs_ray.tinyworld)."""

    seed: int = doc_field(0, "The world's seed (its models, prompts and datasets).")
    conflict: float = doc_field(0.9, "0: objectives independent; 1: fully driven by one latent.")
    reward_scale: str = doc_field("integer", "integer | fine (finer rule rewards, fewer ties).")
    cache_dir: str = doc_field(".cache/tinyworld", "Where built worlds are cached (keyed by the other fields).")
    pairs_per_stage: int = doc_field(2048, "Preference pairs in each stage's dataset.")
    eval_prompts: int = doc_field(256, "Held-out evaluation prompts.")
    pretrain_examples: int = doc_field(100_000, "Generated examples the policy is pretrained on (batch 64).")
    rm_examples: int = doc_field(16_384, "Generated examples the multi-head reward model is trained on.")

    def check(self, c: Checker, key: str = "tinyworld") -> None:
        """Ranges and choices. Raises RcsInputError naming the key."""
        if not 0 <= self.conflict <= 1:
            c.fail(f"{key}.conflict", f"must be in [0, 1], got {self.conflict}")
        c.choice(f"{key}.reward_scale", self.reward_scale, ("integer", "fine"))
        c.at_least(f"{key}.pairs_per_stage", self.pairs_per_stage, 1)


@dataclass
class EvalConfig:
    """Held-out evaluation: n samples per prompt from each policy, scored on every objective."""

    prompts: DataConfig = doc_field(factory=DataConfig, doc="The held-out prompts.")
    n: int = doc_field(4, "Samples per prompt from each policy.")
    thresholds: Dict[str, float] = doc_field(factory=dict, doc='Objective -> threshold of a "rate" (harmless: 0).')
    judge: Optional[ObjectiveConfig] = doc_field(
        None, "An independent reward (e.g. kind: judge) reported beside the objectives."
    )

    def check(self, c: Checker, names: List[str], key: str = "eval") -> None:
        """The prompts' data config, the judge (its own name), n, thresholds of known objectives.

        Raises:
            RcsInputError: one line naming the key at fault.
        """
        self.prompts.check(c, f"{key}.prompts")
        if self.judge is not None:
            self.judge.check(c, f"{key}.judge")
            if self.judge.name in names:
                c.fail(f"{key}.judge.name", f"{self.judge.name!r} is an objective's name; the judge needs its own")
        c.at_least(f"{key}.n", self.n, 1)
        for name, value in self.thresholds.items():
            if name not in names:
                c.fail(f"{key}.thresholds.{name}", f"not an objective; objectives are {names}")
            c.finite(f"{key}.thresholds.{name}", value)


@dataclass
class TrackingConfig:
    """Where ``train.report_to`` trackers write: one run per stage (and one for sampling stats / eval) per workflow.

    A key left None takes the tracker's environment variable, else the default (rcs_ray.tracking); config wins.
    """

    dir: Optional[str] = doc_field(None, "TensorBoard, W&B, the default MLflow store; None: <output_dir>/tracking.")
    mlflow_uri: Optional[str] = doc_field(None, "None: $MLFLOW_TRACKING_URI, else a local file store under dir.")
    project: Optional[str] = doc_field(
        None,
        "MLflow experiment / W&B project; None: $MLFLOW_EXPERIMENT_NAME / "
        "$WANDB_PROJECT, else name (W&B files: dir, else $WANDB_DIR).",
    )
    wandb_mode: Optional[str] = doc_field(None, "offline | online | disabled; None: $WANDB_MODE, else offline.")
    wandb_entity: Optional[str] = doc_field(None, "W&B team / user; None: $WANDB_ENTITY, else the account's default.")

    def check(self, c: Checker, key: str = "tracking") -> None:
        """The W&B mode. Raises RcsInputError naming the key."""
        if self.wandb_mode is not None:  # None: $WANDB_MODE, else offline (rcs_ray.tracking)
            c.choice(f"{key}.wandb_mode", self.wandb_mode, ("offline", "online", "disabled"))


@dataclass
class RayConfig:
    """The Ray cluster a command joins or starts."""

    address: Optional[str] = doc_field(None, "The address of a Ray cluster to join; None: start a local Ray.")
    num_cpus: Optional[int] = doc_field(None, "A local Ray's CPUs; None: Ray's default (every core).")
    object_store_memory_mb: Optional[int] = doc_field(
        None, "A local Ray's object store size in MiB; None: Ray's default."
    )
    keep_models: bool = doc_field(
        True,
        "Keep loaded models while they are used: a stage's engines for all its adaptive rounds, a reward model for "
        "every stage and evaluation that scores with it (released before training when the trainer would not fit "
        "beside them). false: every pass loads its own.",
    )


@dataclass
class RunConfig:
    """A whole run: the policy, the K objectives, the K stages and the settings they share."""

    name: str = doc_field("rcs", "The run's name (the default output_dir, the trackers' project).")
    output_dir: str = doc_field("outputs/${name}", "Where the run writes: a directory or a URI (s3://, gs://).")
    seed: int = doc_field(
        0,
        "A run-wide seed, recorded with the config; the seeds in effect are sampling.seed, "
        "train.seed and tinyworld.seed.",
    )
    policy: ModelConfig = doc_field(factory=ModelConfig, doc="The policy every stage samples from and trains.")
    objectives: List[ObjectiveConfig] = doc_field(factory=list, doc="The K objectives and their reward sources.")
    stages: List[StageConfig] = doc_field(factory=list, doc="The K stages, in order: each aligns one objective.")
    sampling: SamplingConfig = doc_field(factory=SamplingConfig, doc="Candidate generation (sampled stages).")
    train: TrainConfig = doc_field(factory=TrainConfig, doc="Training, for every stage (a stage's train overrides it).")
    eval: EvalConfig = doc_field(factory=EvalConfig, doc="Held-out evaluation (rcs-ray eval).")
    ray: RayConfig = doc_field(factory=RayConfig, doc="The Ray cluster.")
    tracking: TrackingConfig = doc_field(factory=TrackingConfig, doc="Where train.report_to trackers write.")
    tinyworld: TinyWorldConfig = doc_field(
        factory=TinyWorldConfig, doc="The embedded synthetic world (tinyworld: paths)."
    )

    @property
    def objective_names(self) -> List[str]:
        return [o.name for o in self.objectives]
