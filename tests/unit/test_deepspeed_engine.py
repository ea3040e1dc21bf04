"""The training engine's pieces without Ray: learning-rate schedules (hand-computed), weight-decay groups, the
DeepSpeed config of each switch, LoRA's adapters on the tiny Llama, and the parameter bytes a process holds."""

import math

import pytest

from rcs_ray.config import LoraConfig, TrainConfig
from rcs_ray.train.deepspeed_engine import build_ds_config, lr_factor, param_groups
from rcs_ray.train.memory import param_bytes

pytestmark = pytest.mark.unit


def test_linear_and_cosine_schedules_with_warmup():
    lin = TrainConfig(lr_scheduler="linear", warmup_steps=2)
    cos = TrainConfig(lr_scheduler="cosine", warmup_steps=2)
    # T = 10, W = 2: warm-up 0, 1/2; linear (10 - s) / 8; cosine (1 + cos(pi (s - 2) / 8)) / 2
    assert [lr_factor(s, lin, 10) for s in (0, 1, 2, 6, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert [round(lr_factor(s, cos, 10), 12) for s in (2, 4, 6, 10)] == [
        1.0,
        round((1 + math.cos(math.pi / 4)) / 2, 12),
        0.5,
        0.0,
    ]


def test_transformers_schedules_match_the_documented_formula():
    import torch

    from rcs_ray.train.deepspeed_engine import _scheduler_factory

    for kind in ("linear", "cosine"):
        t = TrainConfig(lr_scheduler=kind, warmup_steps=3, learning_rate=0.1)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = _scheduler_factory(t, 12)(opt)
        for s in range(12):
            assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(s, t, 12), abs=1e-15), (kind, s)
            opt.step()
            sched.step()
    assert _scheduler_factory(TrainConfig(warmup_steps=3), 12) is None


def test_ds_config_of_each_switch():
    assert build_ds_config(TrainConfig(warmup_steps=5), 1)["scheduler"]["type"] == "WarmupLR"
    assert "scheduler" not in build_ds_config(TrainConfig(warmup_steps=5, lr_scheduler="cosine"), 1)
    off = build_ds_config(TrainConfig(offload_optimizer=True, weight_decay=0.05), 2)
    assert off["optimizer"]["params"]["weight_decay"] == 0.05
    z3 = build_ds_config(TrainConfig(zero_stage=3, batch_size=4, gradient_accumulation_steps=2), 2)
    assert z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] and z3["train_batch_size"] == 16


def _tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=32,
        )
    )


def test_weight_decay_applies_to_matrices_only():
    model = _tiny_llama()
    assert len(param_groups(model, 0.0)) == 1
    decay, rest = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in rest["params"])
    assert len(decay["params"]) + len(rest["params"]) == len(list(model.parameters()))


def test_lora_adapts_every_linear_layer_but_the_head_by_default():
    from peft import get_peft_model

    from rcs_ray.train.deepspeed_engine import lora_config

    full = param_bytes(_tiny_llama())
    assert full == sum(p.numel() for p in _tiny_llama().parameters()) * 4
    model = get_peft_model(_tiny_llama(), lora_config(TrainConfig(lora=LoraConfig(r=4))))
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # r * (in + out): q, k, v, o 32 -> 32; gate, up 32 -> 64; down 64 -> 32
    assert trainable == 4 * (4 * 64 + 3 * 96)
    only_q = get_peft_model(_tiny_llama(), lora_config(TrainConfig(lora=LoraConfig(r=2, target_modules=["q_proj"]))))
    assert sum(p.numel() for p in only_q.parameters() if p.requires_grad) == 2 * 64


def test_deepspeed_is_imported_without_its_autotuners_mlflow_and_mlflow_still_imports():
    """A fresh interpreter: after ``import_deepspeed`` the autotuner runs without MLflow, ``mlflow`` is not loaded,
    and ``import mlflow`` (MLflow tracking) still works."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from rcs_ray.train.deepspeed_engine import import_deepspeed\n"
        "ds = import_deepspeed()\n"
        "from deepspeed.autotuning import autotuner\n"
        "loaded = 'mlflow' in sys.modules\n"
        "import mlflow\n"
        "same = ds is sys.modules['deepspeed']\n"
        "print(json.dumps([same, autotuner.has_mlflow, loaded, hasattr(mlflow, 'log_metric')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, False, False, True]
