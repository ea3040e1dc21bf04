"""The DeepSpeed engine a training worker steps: the policy (full, or LoRA adapters via PEFT), its optimizer, the
learning-rate schedule, and the HF export (its memory figures: :mod:`rcs_ray.train.memory`).

- **ZeRO-3 shards at load**: with ``zero_stage: 3`` an ``HfDeepSpeedConfig`` is alive while the policy is built, so
  ``from_pretrained`` runs under ``deepspeed.zero.Init`` and each rank materialises only its shard of every
  parameter (``memory/params_at_load_mb`` in the metrics says how much); the export gathers the full weights once.
- **LoRA** (``train.lora.r > 0``): the base weights are frozen, rank-``r`` adapters train on the target modules
  (every linear layer but the output head by default), the optimizer holds only the adapters' state and the
  checkpoints only the trainable parameters. The reference log-probs were computed beforehand from the very weights
  the adapters start from (:mod:`rcs_ray.train.refs`): no second model. The export writes the adapter;
  :func:`rcs_ray.train.export.export` merges it into an HF model the next stage samples with vLLM unchanged.
- **QLoRA** (``lora.quantization: 4bit | 8bit``): the frozen base loads quantized with bitsandbytes (CUDA only).
- **Memory switches**: ``train.gradient_checkpointing`` (non-reentrant activation recomputation),
  ``policy.attn_implementation`` (``sdpa`` / ``eager`` / ``flash_attention_2``), decoupled weight decay on matrices
  only, and the learning-rate schedule: linear warm-up over ``warmup_steps``, then ``constant`` (DeepSpeed's
  ``WarmupLR``), or ``linear`` / ``cosine`` decay to 0 at the last step (transformers' schedules, stepped by
  DeepSpeed and saved in its checkpoints).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Dict, List, Optional

from rcs_ray.config import TrainConfig
from rcs_ray.train.memory import param_bytes


def build_ds_config(train: TrainConfig, world_size: int) -> Dict[str, Any]:
    """The DeepSpeed config dict for ``train`` on ``world_size`` data-parallel workers.

    ZeRO stage, precision (fp32 | bf16 | fp16 with dynamic loss scaling), gradient accumulation, clipping
    (``max_grad_norm`` 0: none), DeepSpeed's ``WarmupLR`` for a constant schedule with warm-up, and with
    ``offload_optimizer`` DeepSpeed's own AdamW on the CPU (DeepSpeedCPUAdam). Without offload the engine gets a
    client ``torch.optim.AdamW``; a decaying schedule is a client scheduler (:func:`build_engine`).
    """
    zero: Dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bool(train.use_gpu)}
    cfg: Dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "train_batch_size": train.batch_size * train.gradient_accumulation_steps * world_size,
        "gradient_clipping": float(train.max_grad_norm),
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if train.precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif train.precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 16, "loss_scale_window": 100}
    if train.offload_optimizer:
        cfg["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": train.learning_rate,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "weight_decay": train.weight_decay,
            },
        }
    if train.warmup_steps > 0 and train.lr_scheduler == "constant":
        cfg["scheduler"] = {
            "type": "WarmupLR",
            "params": {
                "warmup_min_lr": 0.0,
                "warmup_max_lr": train.learning_rate,
                "warmup_num_steps": train.warmup_steps,
                "warmup_type": "linear",
            },
        }
    return cfg


def lr_factor(step: int, train: TrainConfig, total_steps: int) -> float:
    """The learning-rate multiplier of a ``linear`` / ``cosine`` schedule after ``step`` optimizer steps
    (transformers' ``get_{linear,cosine}_schedule_with_warmup``): ``step / W`` during the ``W`` warm-up steps, then
    ``(T - step) / (T - W)`` or ``(1 + cos(pi (step - W) / (T - W))) / 2``."""
    import math

    w, t = train.warmup_steps, total_steps
    if step < w:
        return step / max(1, w)
    progress = (step - w) / max(1, t - w)
    if train.lr_scheduler == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _scheduler_factory(train: TrainConfig, total_steps: int):
    """A ``optimizer -> LambdaLR`` DeepSpeed calls once it holds the optimizer (None for a constant schedule)."""
    if train.lr_scheduler == "constant":
        return None
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    make = get_linear_schedule_with_warmup if train.lr_scheduler == "linear" else get_cosine_schedule_with_warmup
    return lambda optimizer: make(optimizer, num_warmup_steps=train.warmup_steps, num_training_steps=total_steps)


def lora_config(train: TrainConfig):
    """PEFT's ``LoraConfig`` of ``train.lora``."""
    from peft import LoraConfig, TaskType

    lora = train.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        task_type=TaskType.CAUSAL_LM,
        target_modules=list(lora.target_modules) if lora.target_modules else "all-linear",
    )


def _quantization(train: TrainConfig) -> Dict[str, Any]:
    if train.lora.quantization is None:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise RuntimeError("train.lora.quantization (QLoRA, bitsandbytes) needs a CUDA GPU on every train worker")
    if train.lora.quantization == "4bit":
        q = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    else:
        q = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": q}


def load_policy(
    path: str,
    train: TrainConfig,
    ds_config: Dict[str, Any],
    trust_remote_code: bool = False,
    attn_implementation: Optional[str] = None,
):
    """The policy to train, built the way ``train`` says: ``(model, keepalive)``.

    ``keepalive`` is the ``HfDeepSpeedConfig`` under ZeRO-3 (transformers reads it through a weak reference while
    the model is built and saved: keep it as long as the engine). The model is sharded as it loads (ZeRO-3),
    quantized (QLoRA), checkpointed (gradient checkpointing) and wrapped in LoRA adapters as configured.

    Raises:
        RcsInputError: the checkpoint lacks weights the model needs (it would train from random weights); the driver
            checks the same before launch (:func:`rcs_ray.modeling.checkpoints.check_causal_lm`).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from rcs_ray.modeling.loading import load_checked

    keepalive = None
    if train.zero_stage == 3:
        from transformers.integrations import HfDeepSpeedConfig

        keepalive = HfDeepSpeedConfig(ds_config)  # from_pretrained now runs under deepspeed.zero.Init
    kwargs: Dict[str, Any] = dict(dtype=torch.float32, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    kwargs.update(_quantization(train))
    model = load_checked(AutoModelForCausalLM, path, "policy.path", "it would train from random weights", **kwargs)
    model.config.use_cache = False
    model.rcs_params_at_load = param_bytes(model)
    if train.lora.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train.gradient_checkpointing)
    if train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if train.uses_lora:
        from peft import get_peft_model

        at_load = model.rcs_params_at_load
        model = get_peft_model(model, lora_config(train))
        model.rcs_params_at_load = at_load
    return model, keepalive


def param_groups(model, weight_decay: float) -> List[Dict[str, Any]]:
    """The trainable parameters, weight decay on matrices only (not biases, norms' scales); one group when 0."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not weight_decay:
        return [{"params": [p for _, p in trainable], "weight_decay": 0.0}]
    decay = [p for _, p in trainable if _ndim(p) >= 2]
    rest = [p for _, p in trainable if _ndim(p) < 2]
    return [
        g
        for g in ({"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0})
        if g["params"]
    ]


def _ndim(p) -> int:
    shape = getattr(p, "ds_shape", None)  # ZeRO-3: the local tensor is empty, its shape is ds_shape
    return len(shape) if shape is not None else p.dim()


@contextlib.contextmanager
def _blocked(module: str):
    """Inside the block ``import <module>`` raises ImportError (unless it is loaded already); importable after."""
    block = module not in sys.modules
    if block:
        sys.modules[module] = None
    try:
        yield
    finally:
        if block and module in sys.modules and sys.modules[module] is None:
            del sys.modules[module]


def import_deepspeed():
    """``import deepspeed`` without its autotuner's optional ``import mlflow``, which costs about 0.8 s in every
    training worker here (measured) and is used only by ``deepspeed --autotuning``, never run by a training loop.
    ``mlflow`` stays importable after: MLflow tracking imports it when it is on."""
    if "deepspeed" in sys.modules:
        return sys.modules["deepspeed"]
    with _blocked("mlflow"):  # `import mlflow` raises ImportError: the autotuner sets has_mlflow = False
        import deepspeed
    return deepspeed


def build_engine(
    path: str,
    train: TrainConfig,
    world_size: int,
    total_steps: int,
    trust_remote_code: bool = False,
    attn_implementation: Optional[str] = None,
):
    """``(engine, keepalive)``: the policy in a DeepSpeed engine with its optimizer and schedule."""
    import torch

    deepspeed = import_deepspeed()

    if not torch.cuda.is_available():
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # skip a ~45 s op build on CPU
    torch.manual_seed(train.seed)
    ds_config = build_ds_config(train, world_size)
    if train.zero_stage == 3:
        deepspeed.init_distributed()  # zero.Init partitions over DeepSpeed's view of Ray Train's process group
    model, keepalive = load_policy(path, train, ds_config, trust_remote_code, attn_implementation)
    groups = param_groups(model, train.weight_decay)
    optimizer = (
        None
        if train.offload_optimizer
        else torch.optim.AdamW(groups, lr=train.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        model_parameters=None if optimizer else groups,
        lr_scheduler=_scheduler_factory(train, total_steps),
        config=ds_config,
    )
    return engine, keepalive


def export_hf(engine, train: TrainConfig, rank: int, out: str) -> None:
    """The engine's module in HF format into ``out`` on rank 0. ZeRO-3: gathered one module at a time onto rank 0
    (DeepSpeed's consolidated state dict; the other ranks never hold the whole model). With LoRA this is the adapter
    (``adapter_config.json`` + weights)."""
    module = engine.module
    if train.zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()  # every rank must call it; rank 0 gets it
        if rank == 0:
            module.save_pretrained(out, state_dict=state, safe_serialization=True)
    elif rank == 0:
        module.save_pretrained(out, safe_serialization=True)
