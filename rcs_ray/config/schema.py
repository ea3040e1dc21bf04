"""The config schema: one dataclass per section, merged and validated by :mod:`rcs_ray.config.loader`.

The names a choice may take come from the registries they name (:mod:`rcs_ray.registry` for losses, engines and
reward sources, :data:`rcs_ray.selection.STRATEGIES` for selection strategies), so a new part is accepted where it is
registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from rcs_ray import registry, selection

OBJECTIVE_KINDS = tuple(registry.REWARD_SOURCES)
OUTPUTS = ("auto", "logits", "rewards", "score", "end_scores")
CHAT_TEMPLATES = ("auto", "own", "policy", "none")         # or a Jinja template
ENGINES = tuple(registry.ENGINES)
LOSS_NAMES = tuple(registry.LOSSES)
STRATEGY_NAMES = tuple(selection.STRATEGIES)
DATA_FORMATS = ("auto", "jsonl", "parquet", "hf")
PRESETS = ("pku_saferlhf", "helpsteer2", "ultrafeedback_binarized")   # rcs_ray.data.presets (tied by a test)
PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULERS = ("constant", "linear", "cosine")          # after train.warmup_steps of linear warm-up
TRACKERS = ("tensorboard", "mlflow", "wandb")              # train.report_to (rcs_ray.tracking)
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
QUANTIZATIONS = ("4bit", "8bit")                           # QLoRA: bitsandbytes, CUDA only
# apply_chat_template arguments the prompt rule sets itself (rcs_ray.prompting): not policy.chat_template_kwargs
RULE_TEMPLATE_ARGS = ("conversation", "add_generation_prompt", "continue_final_message", "tokenize", "return_dict",
                      "return_tensors", "return_assistant_tokens_mask", "padding", "truncation", "max_length",
                      "chat_template", "tokenizer_kwargs")


@dataclass
class ModelConfig:
    """A local model in HF format (a directory ``from_pretrained`` can load), or a ``tinyworld:`` asset."""
    path: Optional[str] = None               # required by the commands that load the policy
    tokenizer: Optional[str] = None          # defaults to ``path``
    dtype: str = "float32"                   # float32 | bfloat16 | float16
    trust_remote_code: bool = False
    chat_template: bool = True               # format plain prompts with the tokenizer's chat template, if it has one
    system_prompt: Optional[str] = None      # a system message put first in every prompt that has none (needs a
    #                                          chat template); read alike by generation, scoring and training
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)   # extra template variables wherever the
    #                                          policy's template renders (e.g. enable_thinking: false)
    attn_implementation: Optional[str] = None  # sdpa | eager | flash_attention_2 (CUDA + flash-attn); None: HF's default


@dataclass
class JudgeConfig:
    """An LLM-as-judge reward (``kind: judge``): the judge reads ``template`` and answers with a score."""
    template: str = ("Rate how well the response answers the request, from 1 (worst) to 10 (best).\n\n"
                     "Request: {prompt}\n\nResponse: {response}\n\nAnswer with the number only. Score:")
    mode: str = "expected"                   # expected: sum_s s * P(s) over the score tokens | parse: from the text
    scores: List[float] = field(default_factory=lambda: [float(i) for i in range(1, 11)])
    pattern: str = r"(-?\d+(?:\.\d+)?)"        # parse: the first match's group 1 is the score
    max_tokens: int = 16                     # parse: tokens the judge may write


@dataclass
class ObjectiveConfig:
    """One objective k and the source of its reward r_k(x, y).

    A model-based source (``classifier``, ``multi_head``, ``implicit``, ``judge``) loads with its own settings, not
    the policy's: ``trust_remote_code``, ``dtype``, ``max_length``, ``chat_template``, ``model_kwargs`` (extra
    ``from_pretrained`` arguments), ``engine_kwargs`` (extra ``vllm.LLM`` arguments). ``output`` says what the
    reward model's forward pass is read from (see :mod:`rcs_ray.modeling.reward_models`).
    """
    name: str = MISSING
    kind: str = "rule"                       # rule | classifier | multi_head | implicit | judge
    function: Optional[str] = None           # rule: "package.module:function"(prompt, response) -> float
    model: Optional[str] = None              # a reward model, the aligned policy (implicit) or the judge; dir or Hub ID
    reference: Optional[str] = None          # implicit: the reference policy
    tokenizer: Optional[str] = None          # default: the model's
    output: str = "auto"                     # auto | logits | rewards | score | end_scores
    head: int = 0                            # index into the output (a label, an objective of a multi-objective RM)
    sign: float = 1.0                        # reward = sign * output (e.g. -1 for a "cost" model)
    beta: Optional[float] = None             # implicit reward: beta * (log pi - log pi_ref); None: 0.1, or with
    #                                          from_stage the beta stage j trained with
    from_stage: Optional[int] = None         # implicit: r_j = beta_j * log(pi_j / pi_{j-1}) from the workflow's own
    #                                          policies before and after stage j (1-based): no model paths needed
    engine: str = "hf"                       # hf | vllm (vLLM pooling runner; judge: generation)
    dtype: str = "float32"                   # float32 | bfloat16 | float16
    trust_remote_code: bool = False          # load custom model code shipped with the model (e.g. ArmoRM)
    max_length: Optional[int] = None         # tokens of prompt + response read (longer: cut from the left); None: the
    #                                          model's limit
    chat_template: str = "auto"              # auto | own | policy | none | a Jinja template
    model_kwargs: Dict[str, Any] = field(default_factory=dict)    # extra from_pretrained keyword arguments
    engine_kwargs: Dict[str, Any] = field(default_factory=dict)   # extra vllm.LLM keyword arguments
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    batch_size: int = 16
    num_actors: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    resources: Dict[str, float] = field(default_factory=dict)   # custom Ray resources per scorer actor


@dataclass
class DataConfig:
    """Where a stage's data comes from and how its columns map onto prompt / chosen / rejected."""
    path: Optional[str] = None               # jsonl | parquet | HF dataset dir (load_from_disk) | dir of files |
    #                                          a Hub dataset: hf://org/name[@revision] (bare org/name: local if it exists)
    format: str = "auto"                     # auto | jsonl | parquet | hf
    preset: Optional[str] = None             # pku_saferlhf | helpsteer2 | ultrafeedback_binarized
    objective: Optional[str] = None          # preset: which label defines chosen/rejected (e.g. "harmless")
    columns: Dict[str, str] = field(default_factory=dict)  # canonical name -> column in the file
    score_names: Optional[List[str]] = None  # names of the K generic per-objective scores (else objective_0..)
    split: Optional[str] = None              # for a DatasetDict directory or a Hub dataset (default: train)
    config_name: Optional[str] = None        # a Hub dataset: which of its configs (load_dataset's name)
    data_files: Any = None                   # a Hub dataset: files (globs) in the repository, for split train, or
    #                                          {split: file(s)} (load_dataset's data_files)
    limit: Optional[int] = None              # read at most this many rows
    on_bad_row: str = "error"                # error | skip (skips are counted and reported)


@dataclass
class RCConfig:
    """How a prompt's candidate group is reduced to a pair (``rs_dpo``: to every pair above a threshold)."""
    strategy: str = "rcs"                    # rcs | rc_random | target_only | weighted | rs_dpo | original | filter_only
    margin: float = 0.0                      # < 0 tolerates ties on the earlier objectives (integer rewards)
    enforce: Optional[List[str]] = None      # objective names; None: every objective up to the stage's own
    weights: Optional[List[float]] = None    # "weighted" strategy, one per objective
    rs_tau: float = 1.0                      # rs_dpo: keep every pair with sigmoid(target gap / rs_tau) > rs_eta
    rs_eta: float = 0.85                     #   (several per prompt); rs_eta in [0.5, 1)
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
    top_k: int = 0                           # sample among the k most likely tokens (0: off)
    min_p: float = 0.0                       # drop tokens less likely than min_p x the most likely one (0: off)
    repetition_penalty: float = 1.0          # > 1 discourages tokens already in the prompt or the response (1: off)
    stop: List[str] = field(default_factory=list)   # stop strings: a response ends before the first one (which is
    #                                          not kept) and counts as finished
    truncated: str = "not_chosen"            # a sample cut at max_tokens: not_chosen (only the rejected side) |
    #                                          drop (never in a pair) | keep (like any candidate); rcs_ray.selection
    max_tokens: int = 64
    seed: int = 0
    batch_size: int = 16                     # prompts per batch
    num_actors: int = 1                      # generation actor-pool size
    max_concurrent_batches: int = 4          # batches in flight per generation actor for engines with submit
    #                                          (vLLM: one continuous batch); hf and other blocking engines: 1
    num_gpus: float = 0.0                    # per generation actor (tensor_parallel_size > 1: per TP worker)
    tensor_parallel_size: int = 1            # > 1: one placement group of this many GPU bundles per engine
    placement_strategy: str = "STRICT_PACK"  # of an engine's TP bundles: STRICT_PACK (one node) | PACK | SPREAD
    num_cpus: float = 1.0                    # per generation actor
    resources: Dict[str, float] = field(default_factory=dict)   # custom Ray resources per generation actor
    vllm_max_model_len: Optional[int] = None
    engine_kwargs: Dict[str, Any] = field(default_factory=dict)   # extra vllm.LLM keyword arguments
    #                                        (gpu_memory_utilization, enable_prefix_caching, max_num_seqs, ...)
    store_candidates: bool = True            # write candidates.parquet (every group's m x K rewards: rcs-ray select)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)


@dataclass
class LoraConfig:
    """LoRA adapters via PEFT (``r: 0``: off, every parameter trains). The stage exports the merged model."""
    r: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Optional[List[str]] = None   # None: every linear layer but the output head ("all-linear")
    quantization: Optional[str] = None           # QLoRA: 4bit | 8bit base weights (bitsandbytes, CUDA, ZeRO <= 2)


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
    resources_per_worker: Dict[str, float] = field(default_factory=dict)  # custom Ray resources per train worker
    backend: Optional[str] = None            # torch.distributed backend: None = nccl with GPUs, gloo without
    max_length: int = 512
    seed: int = 0
    modpo_weights: Optional[List[float]] = None
    warmup_steps: int = 0                    # linear warm-up from 0 to learning_rate, then lr_scheduler
    lr_scheduler: str = "constant"           # constant | linear | cosine (to 0 at the last step)
    weight_decay: float = 0.0                # AdamW decoupled weight decay (matrices only: no biases or norms)
    gradient_checkpointing: bool = False     # recompute activations in the backward pass (less memory, ~30% slower)
    lora: LoraConfig = field(default_factory=LoraConfig)
    report_to: List[str] = field(default_factory=list)   # tensorboard | mlflow | wandb (see the top-level tracking)
    save_steps: Optional[int] = None         # a resumable checkpoint every N steps (None: only at the end)
    keep_checkpoints: Optional[int] = 2      # newest checkpoints kept (None: all)
    max_failures: int = 0                    # worker-group restarts from the latest checkpoint (Ray Train)
    log_steps: int = 1                       # report metrics every N steps
    ref_batch_size: int = 16                 # pairs per batch of the reference log-prob stage
    ref_num_actors: int = 1                  # reference log-prob actor-pool size
    spo_alphas: Optional[List[float]] = None  # SPO: one per earlier stage (default 1.0 each)
    spo_reward_source: str = "implicit"      # implicit: beta*log(pi_j/pi_{j-1}) | recorded: the pairs' rewards
    spo_policies: Optional[List[str]] = None  # SPO implicit, stage k: pi_0..pi_{k-1} (default: from output_dir)
    on_suspicious_data: str = "warn"         # warn | error: repeated pairs, chosen == rejected, most pairs cut

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """The inverse of ``dataclasses.asdict`` (what a Ray Train worker receives)."""
        d = dict(d)
        d["lora"] = LoraConfig(**d.get("lora") or {})
        return cls(**d)

    @property
    def uses_lora(self) -> bool:
        return self.lora.r > 0


@dataclass
class StageConfig:
    """Stage k: align ``objective`` on ``data``; ``sample: false`` trains on the data as it is (stage 1)."""
    objective: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    sample: bool = True
    rc: RCConfig = field(default_factory=RCConfig)
    train: Dict[str, Any] = field(default_factory=dict)   # this stage's overrides of the top-level ``train``
    # More datasets trained together with ``data`` in this stage, as they are (``sample: false``, DPO): the
    # "mixed" baseline is one stage over every objective's data.
    mix: List[DataConfig] = field(default_factory=list)


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
    judge: Optional[ObjectiveConfig] = None  # an independent reward (e.g. kind: judge) reported beside the objectives


@dataclass
class TrackingConfig:
    """Where ``train.report_to`` trackers write: one run per stage (and one for sampling stats / eval) per workflow."""
    # A key left None takes the tracker's environment variable, else the default (rcs_ray.tracking); config wins.
    dir: Optional[str] = None                # TensorBoard, W&B, the default MLflow store; None: <output_dir>/tracking
    mlflow_uri: Optional[str] = None         # None: $MLFLOW_TRACKING_URI, else a local file store under ``dir``
    project: Optional[str] = None            # MLflow experiment / W&B project; None: $MLFLOW_EXPERIMENT_NAME /
    #                                          $WANDB_PROJECT, else ``name``  (W&B files: ``dir``, else $WANDB_DIR)
    wandb_mode: Optional[str] = None         # offline | online | disabled; None: $WANDB_MODE, else offline
    wandb_entity: Optional[str] = None       # W&B team / user; None: $WANDB_ENTITY, else the account's default


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
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tinyworld: TinyWorldConfig = field(default_factory=TinyWorldConfig)

    @property
    def objective_names(self) -> List[str]:
        return [o.name for o in self.objectives]
