"""Typed configuration: dataclasses behind OmegaConf structured configs, YAML files, ``key=value`` overrides.

``load_config(path, overrides)`` merges, in order: the schema defaults, the YAML files named by ``extends:``
(relative to the file that names them), the file itself, then the overrides; it returns a validated
:class:`RunConfig` dataclass. Every problem is raised as :class:`~rcs_ray.errors.RcsInputError` with one line that
names the file and the key. Pass each piece of the system only its own sub-config.

Model and data paths may start with ``tinyworld:`` (e.g. ``tinyworld:policy``): they name assets of the embedded
tiny world, which are built (and cached) on first use; see :mod:`rcs_ray.tinyworld`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rcs_ray.errors import RcsInputError

OBJECTIVE_KINDS = ("rule", "classifier", "multi_head", "implicit")
ENGINES = ("hf", "vllm")
DATA_FORMATS = ("auto", "jsonl", "parquet", "hf")
PRESETS = ("pku_saferlhf", "helpsteer2", "ultrafeedback_binarized")
LOSS_NAMES = ("dpo", "modpo", "spo")
PRECISIONS = ("fp32", "bf16", "fp16")
STRATEGY_NAMES = ("rcs", "rc_random", "target_only", "weighted", "original", "filter_only")


@dataclass
class ModelConfig:
    """A local model in HF format (a directory ``from_pretrained`` can load), or a ``tinyworld:`` asset."""
    path: Optional[str] = None               # required by the commands that load the policy
    tokenizer: Optional[str] = None          # defaults to ``path``
    dtype: str = "float32"                   # float32 | bfloat16 | float16
    trust_remote_code: bool = False
    chat_template: bool = True               # format plain prompts with the tokenizer's chat template, if it has one


@dataclass
class ObjectiveConfig:
    """One objective k and the source of its reward r_k(x, y)."""
    name: str = MISSING
    kind: str = "rule"                       # rule | classifier | multi_head | implicit
    function: Optional[str] = None           # rule: "package.module:function"(prompt, response) -> float
    model: Optional[str] = None              # classifier / multi_head: RM dir; implicit: the aligned policy
    reference: Optional[str] = None          # implicit: the reference policy dir
    head: int = 0                            # output index of the RM head for this objective
    sign: float = 1.0                        # reward = sign * output (e.g. -1 for a "cost" model)
    beta: float = 0.1                        # implicit reward: beta * (log pi - log pi_ref)
    engine: str = "hf"                       # hf | vllm (vLLM pooling runner)
    batch_size: int = 16
    num_actors: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0


@dataclass
class DataConfig:
    """Where a stage's data comes from and how its columns map onto prompt / chosen / rejected."""
    path: Optional[str] = None               # jsonl | parquet | HF dataset dir (load_from_disk) | dir of files
    format: str = "auto"                     # auto | jsonl | parquet | hf
    preset: Optional[str] = None             # pku_saferlhf | helpsteer2 | ultrafeedback_binarized
    objective: Optional[str] = None          # preset: which label defines chosen/rejected (e.g. "harmless")
    columns: Dict[str, str] = field(default_factory=dict)  # canonical name -> column in the file
    score_names: Optional[List[str]] = None  # names of the K generic per-objective scores (else objective_0..)
    split: Optional[str] = None              # for a DatasetDict directory
    limit: Optional[int] = None              # read at most this many rows
    on_bad_row: str = "error"                # error | skip (skips are counted and reported)


@dataclass
class RCConfig:
    """How a prompt's candidate group is reduced to one pair."""
    strategy: str = "rcs"                    # rcs | rc_random | target_only | weighted | original | filter_only
    margin: float = 0.0                      # < 0 tolerates ties on the earlier objectives (integer rewards)
    enforce: Optional[List[str]] = None      # objective names; None: every objective up to the stage's own
    weights: Optional[List[float]] = None    # "weighted" strategy, one per objective
    include_original: bool = True            # add the dataset's chosen/rejected to the candidates


@dataclass
class AdaptiveConfig:
    """Adaptive resampling: prompts that fail with n samples get more, in rounds, up to ``n_max``."""
    enabled: bool = False
    n_max: int = 16
    rounds: int = 2


@dataclass
class SamplingConfig:
    engine: str = "hf"                       # hf | vllm
    n: int = 8                               # candidates per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int = 0
    batch_size: int = 16                     # prompts per batch
    num_actors: int = 1                      # generation actor-pool size
    num_gpus: float = 0.0                    # per generation actor
    tensor_parallel_size: int = 1
    num_cpus: float = 1.0                    # per generation actor
    vllm_max_model_len: Optional[int] = None
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)


@dataclass
class TrainConfig:
    loss: str = "dpo"                        # dpo | modpo | spo
    beta: float = 0.1
    learning_rate: float = 5e-7
    num_epochs: int = 1
    max_steps: Optional[int] = None
    batch_size: int = 8                      # per worker, per micro step
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    zero_stage: int = 2
    precision: str = "fp32"                  # fp32 | bf16 | fp16
    offload_optimizer: bool = False
    num_workers: int = 2
    use_gpu: bool = False
    max_length: int = 512
    seed: int = 0
    modpo_weights: Optional[List[float]] = None
    warmup_steps: int = 0                    # linear warm-up from 0 to learning_rate, then constant
    save_steps: Optional[int] = None         # a resumable checkpoint every N steps (None: only at the end)
    keep_checkpoints: Optional[int] = 2      # newest checkpoints kept (None: all)
    max_failures: int = 0                    # worker-group restarts from the latest checkpoint (Ray Train)
    log_steps: int = 1                       # report metrics every N steps
    ref_batch_size: int = 16                 # pairs per batch of the reference log-prob stage
    ref_num_actors: int = 1                  # reference log-prob actor-pool size
    spo_alphas: Optional[List[float]] = None  # SPO: one per earlier stage (default 1.0 each)
    spo_reward_source: str = "implicit"      # implicit: beta*log(pi_j/pi_{j-1}) | recorded: the pairs' rewards
    spo_policies: Optional[List[str]] = None  # SPO implicit, stage k: pi_0..pi_{k-1} (default: from output_dir)


@dataclass
class StageConfig:
    """Stage k: align ``objective`` on ``data``; ``sample: false`` trains on the data as it is (stage 1)."""
    objective: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    sample: bool = True
    rc: RCConfig = field(default_factory=RCConfig)
    train: Dict[str, Any] = field(default_factory=dict)   # this stage's overrides of the top-level ``train``


@dataclass
class TinyWorldConfig:
    """The embedded synthetic world (see rcs_ray.tinyworld)."""
    seed: int = 0
    conflict: float = 0.9                    # 0: objectives independent; 1: fully driven by one latent
    reward_scale: str = "integer"            # integer | fine (finer rule rewards, fewer ties)
    cache_dir: str = ".cache/tinyworld"
    pairs_per_stage: int = 2048
    eval_prompts: int = 256
    pretrain_examples: int = 100_000         # generated examples the policy is pretrained on (batch 64)
    rm_examples: int = 16_384                # generated examples the multi-head reward model is trained on


@dataclass
class EvalConfig:
    """Held-out evaluation: n samples per prompt from each policy, scored on every objective."""
    prompts: DataConfig = field(default_factory=DataConfig)
    n: int = 4
    thresholds: Dict[str, float] = field(default_factory=dict)   # objective -> threshold of a "rate" (harmless: 0)


@dataclass
class RayConfig:
    address: Optional[str] = None            # None: start a local Ray
    num_cpus: Optional[int] = None
    object_store_memory_mb: Optional[int] = None


@dataclass
class RunConfig:
    name: str = "rcs"
    output_dir: str = "outputs/${name}"
    seed: int = 0
    policy: ModelConfig = field(default_factory=ModelConfig)
    objectives: List[ObjectiveConfig] = field(default_factory=list)
    stages: List[StageConfig] = field(default_factory=list)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tinyworld: TinyWorldConfig = field(default_factory=TinyWorldConfig)

    @property
    def objective_names(self) -> List[str]:
        return [o.name for o in self.objectives]


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise RcsInputError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RcsInputError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RcsInputError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    return data


def _layers(path: str, seen: tuple = ()) -> list[tuple[str, dict]]:
    """The YAML layers of ``path``, parents (``extends:``) first."""
    real = os.path.realpath(path)
    if real in seen:
        raise RcsInputError(f"{path}: 'extends' forms a cycle")
    data = _read_yaml(path)
    parents = data.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    layers = []
    for parent in parents:
        layers += _layers(os.path.join(os.path.dirname(path), parent), seen + (real,))
    return layers + [(path, data)]


def _one_line(exc: Exception) -> str:
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0].strip()
    msg = re.sub(r"\s*full_key:.*$", "", msg)
    return f"key '{key}': {msg}" if key else msg


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load, merge, override and validate a config; see the module docstring.

    Raises:
        RcsInputError: one line naming the file and key at fault.
    """
    merged = OmegaConf.structured(RunConfig)
    for source, data in (_layers(path) if path else []):
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(data))
        except OmegaConfBaseException as exc:
            raise RcsInputError(f"{source}: {_one_line(exc)}") from None
    for item in overrides:
        if "=" not in item:
            raise RcsInputError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        try:
            OmegaConf.update(merged, key.strip(), value, merge=True)
        except (OmegaConfBaseException, IndexError, KeyError, ValueError, TypeError) as exc:
            raise RcsInputError(f"override {item!r}: {_one_line(exc)}") from None
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise RcsInputError(f"{path or 'config'}: {_one_line(exc)}") from None
    source = path or "config"
    validate(cfg, source=f"{source} (with overrides)" if overrides else source)
    return cfg


def to_yaml(cfg: Any) -> str:
    """The config as YAML (for manifests and logs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Any) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, msg: str):
        raise RcsInputError(f"{self.source}: key '{key}': {msg}")

    def choice(self, key: str, value, choices):
        if value not in choices:
            self.fail(key, f"{value!r} is not one of {list(choices)}")

    def at_least(self, key: str, value, low):
        if value is None or value < low:
            self.fail(key, f"must be >= {low}, got {value}")

    def finite(self, key: str, value):
        if value is None or not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value}")


def validate(cfg: RunConfig, source: str = "config") -> None:
    """Check values the schema's types cannot: choices, ranges, cross-references. Raises RcsInputError."""
    c = _Checker(source)
    names = cfg.objective_names
    if len(set(names)) != len(names):
        c.fail("objectives", f"objective names must be unique, got {names}")
    for i, obj in enumerate(cfg.objectives):
        key = f"objectives.{i}"
        c.choice(f"{key}.kind", obj.kind, OBJECTIVE_KINDS)
        c.choice(f"{key}.engine", obj.engine, ENGINES)
        c.finite(f"{key}.sign", obj.sign)
        if obj.sign == 0:
            c.fail(f"{key}.sign", "must be non-zero")
        c.at_least(f"{key}.head", obj.head, 0)
        c.at_least(f"{key}.batch_size", obj.batch_size, 1)
        c.at_least(f"{key}.num_actors", obj.num_actors, 1)
        if obj.kind == "rule" and not (obj.function and re.fullmatch(r"[\w.]+:\w+", obj.function)):
            c.fail(f"{key}.function", f"a rule objective needs 'package.module:function', got {obj.function!r}")
        if obj.kind in ("classifier", "multi_head", "implicit") and not obj.model:
            c.fail(f"{key}.model", f"a {obj.kind} objective needs a model path")
        if obj.kind == "implicit":
            if not obj.reference:
                c.fail(f"{key}.reference", "an implicit objective needs a reference model path")
            if not obj.beta > 0:
                c.fail(f"{key}.beta", f"must be > 0, got {obj.beta}")
    for i, stage in enumerate(cfg.stages):
        key = f"stages.{i}"
        if stage.objective not in names:
            c.fail(f"{key}.objective", f"{stage.objective!r} is not an objective; objectives are {names}")
        _validate_data(c, f"{key}.data", stage.data)
        rc = stage.rc
        c.choice(f"{key}.rc.strategy", rc.strategy, STRATEGY_NAMES)
        c.finite(f"{key}.rc.margin", rc.margin)
        for name in rc.enforce or []:
            if name not in names:
                c.fail(f"{key}.rc.enforce", f"{name!r} is not an objective; objectives are {names}")
        if rc.weights is not None and len(rc.weights) != len(names):
            c.fail(f"{key}.rc.weights", f"needs {len(names)} weights (one per objective), got {len(rc.weights)}")
    s = cfg.sampling
    c.choice("sampling.engine", s.engine, ENGINES)
    c.at_least("sampling.n", s.n, 1)
    c.at_least("sampling.temperature", s.temperature, 0.0)
    if not 0 < s.top_p <= 1:
        c.fail("sampling.top_p", f"must be in (0, 1], got {s.top_p}")
    c.at_least("sampling.max_tokens", s.max_tokens, 1)
    c.at_least("sampling.batch_size", s.batch_size, 1)
    c.at_least("sampling.num_actors", s.num_actors, 1)
    c.at_least("sampling.num_gpus", s.num_gpus, 0)
    c.at_least("sampling.tensor_parallel_size", s.tensor_parallel_size, 1)
    if s.adaptive.enabled:
        c.at_least("sampling.adaptive.n_max", s.adaptive.n_max, s.n)
        c.at_least("sampling.adaptive.rounds", s.adaptive.rounds, 1)
    _validate_train(c, "train", cfg.train, names)
    for i, stage in enumerate(cfg.stages):
        if stage.train:
            try:
                merged = stage_train(cfg, i)
            except RcsInputError as exc:
                raise RcsInputError(f"{source}: {exc}") from None
            _validate_train(c, f"stages.{i}.train", merged, names)
    _validate_data(c, "eval.prompts", cfg.eval.prompts)
    c.at_least("eval.n", cfg.eval.n, 1)
    for name, value in cfg.eval.thresholds.items():
        if name not in names:
            c.fail(f"eval.thresholds.{name}", f"not an objective; objectives are {names}")
        c.finite(f"eval.thresholds.{name}", value)
    w = cfg.tinyworld
    if not 0 <= w.conflict <= 1:
        c.fail("tinyworld.conflict", f"must be in [0, 1], got {w.conflict}")
    c.choice("tinyworld.reward_scale", w.reward_scale, ("integer", "fine"))
    c.at_least("tinyworld.pairs_per_stage", w.pairs_per_stage, 1)


def _validate_train(c: _Checker, key_prefix: str, t: TrainConfig, names: List[str]) -> None:
    c.choice(f"{key_prefix}.loss", t.loss, LOSS_NAMES)
    c.choice(f"{key_prefix}.precision", t.precision, PRECISIONS)
    c.choice(f"{key_prefix}.zero_stage", t.zero_stage, (0, 1, 2, 3))
    if not t.beta > 0:
        c.fail(f"{key_prefix}.beta", f"must be > 0, got {t.beta}")
    if not t.learning_rate > 0:
        c.fail(f"{key_prefix}.learning_rate", f"must be > 0, got {t.learning_rate}")
    for key in ("num_epochs", "batch_size", "gradient_accumulation_steps", "num_workers", "max_length"):
        c.at_least(f"{key_prefix}.{key}", getattr(t, key), 1)
    if t.max_steps is not None:
        c.at_least(f"{key_prefix}.max_steps", t.max_steps, 1)
    if t.modpo_weights is not None and len(t.modpo_weights) != len(names):
        c.fail(f"{key_prefix}.modpo_weights",
               f"needs {len(names)} weights (one per objective), got {len(t.modpo_weights)}")
    c.at_least(f"{key_prefix}.max_grad_norm", t.max_grad_norm, 0.0)
    for key in ("warmup_steps", "max_failures"):
        c.at_least(f"{key_prefix}.{key}", getattr(t, key), 0)
    for key in ("log_steps", "ref_batch_size", "ref_num_actors"):
        c.at_least(f"{key_prefix}.{key}", getattr(t, key), 1)
    for key in ("save_steps", "keep_checkpoints"):
        if getattr(t, key) is not None:
            c.at_least(f"{key_prefix}.{key}", getattr(t, key), 1)
    if t.offload_optimizer and t.zero_stage == 0:
        c.fail(f"{key_prefix}.offload_optimizer",
               "needs train.zero_stage >= 1 (DeepSpeed offloads ZeRO optimizer states)")
    c.choice(f"{key_prefix}.spo_reward_source", t.spo_reward_source, ("implicit", "recorded"))
    for a in t.spo_alphas or []:
        if not (math.isfinite(a) and a >= 0):
            c.fail(f"{key_prefix}.spo_alphas", f"must be finite and >= 0, got {t.spo_alphas}")


def stage_train(cfg: RunConfig, stage: int) -> TrainConfig:
    """The train config of stage ``stage`` (0-based): the top-level ``train`` with the stage's overrides."""
    overrides = cfg.stages[stage].train
    if not overrides:
        return cfg.train
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cfg.train), overrides))
    except OmegaConfBaseException as exc:
        raise RcsInputError(f"stages.{stage}.train: {_one_line(exc)}") from None


def with_stage_train(cfg: RunConfig, stage: int) -> RunConfig:
    """``cfg`` whose ``train`` is stage ``stage``'s (what the trainer of that stage reads)."""
    return dataclasses.replace(cfg, train=stage_train(cfg, stage))


def _validate_data(c: _Checker, key: str, data: DataConfig) -> None:
    c.choice(f"{key}.format", data.format, DATA_FORMATS)
    if data.preset is not None:
        c.choice(f"{key}.preset", data.preset, PRESETS)
    c.choice(f"{key}.on_bad_row", data.on_bad_row, ("error", "skip"))
    if data.limit is not None:
        c.at_least(f"{key}.limit", data.limit, 1)
