"""The training config (``train:``, and per stage ``stages.N.train``): read by :mod:`rcs_ray.train`.

Its fields, by topic (the YAML keys are flat under ``train:``): the loss and its hyperparameters (``loss``, ``beta``,
``modpo_weights``, ``spo_*``); the optimizer and schedule (``learning_rate``, ``num_epochs``, ``max_steps``,
``warmup_steps``, ``lr_scheduler``, ``weight_decay``, ``max_grad_norm``); batches (``batch_size``,
``gradient_accumulation_steps``, ``max_length``); DeepSpeed (``zero_stage``, ``precision``, ``offload_optimizer``,
``gradient_checkpointing``, ``lora``); placement (``num_workers``, ``use_gpu``, ``resources_per_worker``,
``backend``); the reference pass (``ref_batch_size``, ``ref_num_actors``); checkpoints and reporting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from rcs_ray import registry
from rcs_ray.config.fields import Checker, doc_field

LOSS_NAMES = tuple(registry.LOSSES)
PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULERS = ("constant", "linear", "cosine")  # after train.warmup_steps of linear warm-up
TRACKERS = ("tensorboard", "mlflow", "wandb")  # train.report_to (rcs_ray.tracking)
QUANTIZATIONS = ("4bit", "8bit")  # QLoRA: bitsandbytes, CUDA only
REFERENCE_PASSES = ("auto", "separate")


@dataclass
class LoraConfig:
    """LoRA adapters via PEFT (``r: 0``: off, every parameter trains). The stage exports the merged model."""

    r: int = doc_field(0, "LoRA rank (0: off, every parameter trains).")
    alpha: float = doc_field(16.0, "LoRA scaling: the adapters' update is scaled by alpha / r.")
    dropout: float = doc_field(0.0, "Dropout on the adapters' input, in [0, 1).")
    target_modules: Optional[List[str]] = doc_field(
        None, 'Module names to adapt; None: every linear layer but the output head ("all-linear").'
    )
    quantization: Optional[str] = doc_field(None, "QLoRA: 4bit | 8bit base weights (bitsandbytes, CUDA, ZeRO <= 2).")

    def check(self, c: Checker, key: str, use_gpu: bool, zero_stage: int) -> None:
        """Ranges, and QLoRA's needs (adapters, CUDA, no ZeRO-3).

        Raises:
            RcsInputError: one line naming the key at fault.
        """
        c.at_least(f"{key}.r", self.r, 0)
        if not self.alpha > 0:
            c.fail(f"{key}.alpha", f"must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            c.fail(f"{key}.dropout", f"must be in [0, 1), got {self.dropout}")
        if self.target_modules is not None and not self.target_modules:
            c.fail(
                f"{key}.target_modules",
                "an empty list adapts nothing: name modules, or leave it unset (every linear layer)",
            )
        if self.quantization is not None:
            c.choice(f"{key}.quantization", self.quantization, QUANTIZATIONS)
            if not self.r:
                c.fail(f"{key}.quantization", "QLoRA quantizes the frozen base under LoRA adapters: set train.lora.r")
            if not use_gpu:
                c.fail(
                    f"{key}.quantization", "QLoRA (bitsandbytes) needs CUDA GPUs: set train.use_gpu=true, or drop it"
                )
            if zero_stage == 3:
                c.fail(f"{key}.quantization", "QLoRA cannot be sharded by ZeRO-3: use train.zero_stage <= 2")


@dataclass
class TrainConfig:
    """One stage's training: the loss, optimizer and schedule, DeepSpeed, Ray Train placement, the reference pass."""

    loss: str = doc_field("dpo", "The preference loss (rcs_ray.registry.LOSSES): dpo | modpo | spo.")
    beta: float = doc_field(0.1, "The loss's KL strength: how far from the reference the policy may move (> 0).")
    learning_rate: float = doc_field(5e-7, "AdamW's peak learning rate (> 0).")
    num_epochs: int = doc_field(1, "Passes over the stage's pairs (when max_steps is None).")
    max_steps: Optional[int] = doc_field(None, "Optimizer steps to train; None: num_epochs passes over the pairs.")
    batch_size: int = doc_field(8, "Pairs per worker, per micro step.")
    gradient_accumulation_steps: int = doc_field(1, "Micro steps per optimizer step.")
    max_grad_norm: float = doc_field(1.0, "Gradient clipping norm (0: off).")
    zero_stage: int = doc_field(2, "DeepSpeed ZeRO stage: 0 | 1 | 2 | 3.")
    precision: str = doc_field("fp32", "Training precision: fp32 | bf16 | fp16.")
    offload_optimizer: bool = doc_field(False, "Offload ZeRO optimizer states to CPU memory (zero_stage >= 1).")
    num_workers: int = doc_field(2, "Ray Train workers (data-parallel ranks).")
    use_gpu: bool = doc_field(False, "One GPU per train worker.")
    resources_per_worker: Dict[str, float] = doc_field(factory=dict, doc="Custom Ray resources per train worker.")
    backend: Optional[str] = doc_field(
        None, "torch.distributed backend: nccl | gloo; None: nccl with GPUs, gloo without."
    )
    max_length: int = doc_field(
        512,
        "Most tokens of prompt + response in a training pair (longer: the response cut "
        "from the right, then the prompt from the left); also what an implicit reward "
        "reads by default.",
    )
    seed: int = doc_field(0, "Training seed: torch's (adapter init, dropout) and the batch order.")
    modpo_weights: Optional[List[float]] = doc_field(
        None,
        "MODPO: one weight per configured objective, in config "
        "order; None: equal weights over the target and the "
        "earlier objectives.",
    )
    warmup_steps: int = doc_field(0, "Linear warm-up from 0 to learning_rate, then lr_scheduler.")
    lr_scheduler: str = doc_field("constant", "constant | linear | cosine (to 0 at the last step).")
    weight_decay: float = doc_field(0.0, "AdamW decoupled weight decay (matrices only: no biases or norms).")
    gradient_checkpointing: bool = doc_field(
        False, "Recompute activations in the backward pass (less memory, ~30% slower)."
    )
    lora: LoraConfig = doc_field(factory=LoraConfig, doc="LoRA / QLoRA adapters (r: 0: off).")
    report_to: List[str] = doc_field(
        factory=list, doc="Trackers: tensorboard | mlflow | wandb (see the top-level tracking)."
    )
    save_steps: Optional[int] = doc_field(None, "A resumable checkpoint every N steps (None: only at the end).")
    keep_checkpoints: Optional[int] = doc_field(2, "Newest checkpoints kept (None: all).")
    max_failures: int = doc_field(0, "Worker-group restarts from the latest checkpoint (Ray Train).")
    log_steps: int = doc_field(1, "Report metrics every N steps.")
    reference_pass: str = doc_field(
        "auto",
        "auto: the training workers compute the reference log-probs before step 1 when the reference is the policy "
        "they start from (no model loaded twice) | separate: always a Ray Data pass (ref_batch_size, ref_num_actors).",
    )
    ref_batch_size: int = doc_field(16, "Pairs per batch of the separate reference log-prob pass.")
    ref_num_actors: int = doc_field(1, "Actor-pool size of the separate reference log-prob pass.")
    spo_alphas: Optional[List[float]] = doc_field(None, "SPO: one weight per earlier stage (default 1.0 each).")
    spo_reward_source: str = doc_field(
        "implicit", "SPO: implicit: beta*log(pi_j/pi_{j-1}) | recorded: the pairs' rewards."
    )
    spo_policies: Optional[List[str]] = doc_field(
        None, "SPO implicit, stage k: pi_0..pi_{k-1} (default: from output_dir)."
    )
    on_suspicious_data: str = doc_field("warn", "warn | error: repeated pairs, chosen == rejected, most pairs cut.")

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """The inverse of ``dataclasses.asdict`` (what a Ray Train worker receives)."""
        d = dict(d)
        d["lora"] = LoraConfig(**d.get("lora") or {})
        return cls(**d)

    @property
    def uses_lora(self) -> bool:
        return self.lora.r > 0

    def separate_reference_pass(self, stage: int) -> bool:
        """Whether stage ``stage`` (0-based) computes its reference log-probs in a Ray Data pass of their own:
        asked for (``reference_pass: separate``), a quantized base (QLoRA), or SPO's implicit rewards from stage 2
        on (its policy chain's models run in that pass). Otherwise the training workers compute them before step 1,
        unless the pairs carry them or the reference is another model than the policy (:mod:`rcs_ray.train.trainer`).
        """
        return (
            self.reference_pass == "separate"
            or self.lora.quantization is not None
            or (self.loss == "spo" and stage > 0 and self.spo_reward_source == "implicit")
        )

    def check(self, c: Checker, key: str, names: List[str]) -> None:
        """Choices and ranges, then the optimizer, loss and LoRA settings.

        Args:
            c: the checker.
            key: where this config sits (``train``, or ``stages.N.train`` for a stage's merged config).
            names: the config's objective names.

        Raises:
            RcsInputError: one line naming the key at fault.
        """
        c.choice(f"{key}.loss", self.loss, list(registry.LOSSES))
        c.choice(f"{key}.precision", self.precision, PRECISIONS)
        c.choice(f"{key}.zero_stage", self.zero_stage, (0, 1, 2, 3))
        if not self.beta > 0:
            c.fail(f"{key}.beta", f"must be > 0, got {self.beta}")
        if not self.learning_rate > 0:
            c.fail(f"{key}.learning_rate", f"must be > 0, got {self.learning_rate}")
        for name in ("num_epochs", "batch_size", "gradient_accumulation_steps", "num_workers", "max_length"):
            c.at_least(f"{key}.{name}", getattr(self, name), 1)
        if self.max_steps is not None:
            c.at_least(f"{key}.max_steps", self.max_steps, 1)
        if self.modpo_weights is not None and len(self.modpo_weights) != len(names):
            c.fail(
                f"{key}.modpo_weights", f"needs {len(names)} weights (one per objective), got {len(self.modpo_weights)}"
            )
        c.at_least(f"{key}.max_grad_norm", self.max_grad_norm, 0.0)
        if self.backend is not None:
            c.choice(f"{key}.backend", self.backend, ("nccl", "gloo"))
        c.resources(f"{key}.resources_per_worker", self.resources_per_worker)
        for name in ("warmup_steps", "max_failures"):
            c.at_least(f"{key}.{name}", getattr(self, name), 0)
        c.choice(f"{key}.reference_pass", self.reference_pass, REFERENCE_PASSES)
        for name in ("log_steps", "ref_batch_size", "ref_num_actors"):
            c.at_least(f"{key}.{name}", getattr(self, name), 1)
        for name in ("save_steps", "keep_checkpoints"):
            if getattr(self, name) is not None:
                c.at_least(f"{key}.{name}", getattr(self, name), 1)
        self._check_optimizer_and_losses(c, key)
        self.lora.check(c, f"{key}.lora", self.use_gpu, self.zero_stage)

    def _check_optimizer_and_losses(self, c: Checker, key: str) -> None:
        """Offloading, the SPO settings, the scheduler, weight decay, trackers."""
        if self.offload_optimizer and self.zero_stage == 0:
            c.fail(f"{key}.offload_optimizer", "needs train.zero_stage >= 1 (DeepSpeed offloads ZeRO optimizer states)")
        c.choice(f"{key}.spo_reward_source", self.spo_reward_source, ("implicit", "recorded"))
        c.choice(f"{key}.on_suspicious_data", self.on_suspicious_data, ("warn", "error"))
        for a in self.spo_alphas or []:
            if not (math.isfinite(a) and a >= 0):
                c.fail(f"{key}.spo_alphas", f"must be finite and >= 0, got {self.spo_alphas}")
        c.choice(f"{key}.lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        c.at_least(f"{key}.weight_decay", self.weight_decay, 0.0)
        c.finite(f"{key}.weight_decay", self.weight_decay)
        for name in self.report_to:
            c.choice(f"{key}.report_to", name, TRACKERS)
