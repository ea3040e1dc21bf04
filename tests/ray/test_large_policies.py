"""Large-policy switches on Ray Train + DeepSpeed (CPU, 2 workers, the tiny random Llama of test_train): LoRA adapters
train, resume exactly and merge into an HF model (W + B A alpha / r); the cosine schedule's learning rates are the
hand-computed ones; gradient checkpointing and weight decay run; LoRA under ZeRO-3 adapts only its target modules;
each step's metrics are read back from TensorBoard event files, an MLflow file store and an offline W&B run."""

import glob
import json
import math
import os

import numpy as np
import pytest

from rcs_ray.train import run
from tests.ray.train_assets import STEPS, make_cfg, weights

pytestmark = [pytest.mark.ray, pytest.mark.slow]

R, ALPHA, WARMUP, LR = 8, 16, 2, 5e-3
LORA = [
    f"train.lora.r={R}",
    f"train.lora.alpha={ALPHA}",
    "train.lr_scheduler=cosine",
    f"train.warmup_steps={WARMUP}",
    f"train.learning_rate={LR}",
    "train.weight_decay=0.01",
    "train.gradient_checkpointing=true",
]
TRACKERS = ["train.report_to=[tensorboard,mlflow,wandb]"]


@pytest.fixture(scope="module")
def lora_run(assets, ray_session, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("lora"))
    cfg = make_cfg(assets, out, *LORA, *TRACKERS)
    return cfg, run(cfg, pairs=assets["pairs"], out_dir=os.path.join(out, "train"), progress=False)


def test_lora_trains_only_the_adapters_and_exports_the_merged_model(lora_run, assets):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, result = lora_run
    h = result.history
    assert [m["step"] for m in h] == list(range(1, STEPS + 1))
    assert h[-1]["loss"] < h[0]["loss"] - 0.02, [m["loss"] for m in h]
    # rank-8 adapters on every linear layer but the head: r * (in + out) per layer, hand-counted for the tiny Llama
    # (hidden 128, MLP 256, 4 heads / 2 KV heads of 32): q 128->128, k, v 128->64, o 128->128, gate, up 128->256,
    # down 256->128; two layers
    per_layer = (256 + 192 + 192 + 256 + 384 + 384 + 384) * R
    assert h[0]["memory/trainable_params"] == 2 * per_layer
    s = result.summary
    assert s["lora"]["r"] == R and s["adapter_dir"].endswith("adapter")
    adapter = os.path.join(os.path.dirname(result.model_dir), "adapter")
    assert json.load(open(os.path.join(adapter, "adapter_config.json")))["r"] == R
    model, info = AutoModelForCausalLM.from_pretrained(result.model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    merged, base = weights(result.model_dir), weights(assets["policy"])
    assert set(merged) == set(base)  # a plain HF model, no lora_* tensors
    lora = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    name = "model.layers.1.self_attn.q_proj.weight"
    a = lora[f"base_model.model.{name[: -len('.weight')]}.lora_A.weight"].double()
    b = lora[f"base_model.model.{name[: -len('.weight')]}.lora_B.weight"].double()
    assert float(b.abs().max()) > 0  # B starts at 0: it trained
    expected = base[name].double() + b @ a * (ALPHA / R)
    np.testing.assert_allclose(merged[name].double().numpy(), expected.numpy(), atol=1e-6)
    for frozen in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"):
        assert np.array_equal(merged[frozen].numpy(), base[frozen].numpy()), frozen


def test_cosine_schedule_with_warmup_gives_the_hand_computed_learning_rates(lora_run):
    # lr after step s of T = 6 with W = 2 warm-up steps: s / W, then (1 + cos(pi (s - W) / (T - W))) / 2
    _, result = lora_run
    expected = [
        LR * f for f in (0.5, 1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0)
    ]
    np.testing.assert_allclose([m["lr"] for m in result.history], expected, rtol=1e-9, atol=1e-15)


def test_lora_resumes_exactly_after_a_worker_failure(lora_run, assets, ray_session, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    _, reference = lora_run
    monkeypatch.setenv("RCS_RAY_TEST_FAIL_AT_STEPS", "3")
    cfg = make_cfg(assets, str(tmp_path), *LORA, "train.max_failures=1")
    result = run(cfg, pairs=assets["pairs"], out_dir=str(tmp_path / "train"), progress=False)
    assert os.path.exists(tmp_path / "train" / "failed-before-step-3")
    assert result.history[-1]["resumed_from"] == 2
    assert [m["loss"] for m in result.history] == [m["loss"] for m in reference.history]
    ours = load_file(os.path.join(str(tmp_path / "train"), "adapter", "adapter_model.safetensors"))
    theirs = load_file(os.path.join(os.path.dirname(reference.model_dir), "adapter", "adapter_model.safetensors"))
    assert set(ours) == set(theirs)
    for k in ours:
        assert np.array_equal(ours[k].numpy(), theirs[k].numpy()), k
    # the checkpoints hold the trainable parameters only: the adapter tensors, whose sizes add up to the trainable
    # count, and nothing frozen but the alias DeepSpeed keeps of a tied weight (this Llama ties its head)
    import torch

    pattern = str(tmp_path / "train" / "checkpoints" / "*" / "checkpoint_*" / "**" / "*model_states.pt")
    states = glob.glob(pattern, recursive=True)
    assert states
    for path in states:
        module = torch.load(path, map_location="cpu", weights_only=False)["module"]
        adapters = {k: v for k, v in module.items() if "lora_" in k}
        assert set(module) - set(adapters) <= {"base_model.model.lm_head.weight"}, sorted(module)[:5]
        assert sum(v.numel() for v in adapters.values()) == result.history[0]["memory/trainable_params"]


def test_lora_under_zero3_adapts_only_its_target_modules(assets, ray_session, tmp_path):
    cfg = make_cfg(
        assets,
        str(tmp_path),
        f"train.lora.r={R}",
        "train.lora.target_modules=[q_proj,v_proj]",
        "train.zero_stage=3",
        "train.max_steps=2",
        "train.save_steps=null",
        f"train.learning_rate={LR}",
    )
    result = run(cfg, pairs=assets["pairs"], out_dir=str(tmp_path / "train"), progress=False)
    assert result.history[0]["memory/trainable_params"] == 2 * (256 + 192) * R
    merged, base = weights(result.model_dir), weights(assets["policy"])
    changed = sorted(k for k in base if not np.array_equal(merged[k].numpy(), base[k].numpy()))
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed), changed


def test_each_step_reaches_tensorboard_mlflow_and_wandb(lora_run):
    cfg, result = lora_run
    losses = [m["loss"] for m in result.history]
    where = os.path.join(cfg.output_dir, "tracking")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(where, "tensorboard", "t", "stage1"))
    acc.Reload()
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([e.value for e in events], losses, rtol=1e-6)
    assert "train/memory/rss_peak_mb" in acc.Tags()["scalars"]

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri="file://" + os.path.join(where, "mlruns"))
    exp = client.get_experiment_by_name("t")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"t", "stage1"}
    stage = runs["stage1"]
    assert stage.data.tags["mlflow.parentRunId"] == runs["t"].info.run_id
    assert stage.data.params["train.lora.r"] == str(R) and stage.data.params["train.lr_scheduler"] == "cosine"
    hist = client.get_metric_history(stage.info.run_id, "train/loss")
    assert sorted(m.step for m in hist) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([m.value for m in sorted(hist, key=lambda m: m.step)], losses, rtol=1e-9)

    files = glob.glob(os.path.join(where, "wandb", "offline-run-*", "*.wandb"))
    assert len(files) == 1, files
    records = wandb_records(files[0])
    run_record = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_record.project == "t" and run_record.run_group == "t" and run_record.run_id.endswith("-stage1")
    config = {
        u.key: json.loads(u.value_json)
        for r in records
        if r.WhichOneof("record_type") == "config"
        for u in r.config.update
    }
    assert config["train.lora.r"] == R
    history = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [h["_step"] for h in history] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([h["train/loss"] for h in history], losses, rtol=1e-9)


def wandb_records(path: str, block: int = 32768) -> list:
    """The protobuf records of an offline W&B run file (a LevelDB-style log: a 7-byte file header, 32 KiB blocks of
    records with a 7-byte header each: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    out, i, buf = [], 7, b""
    while i + 7 <= len(data):
        room = block - i % block
        if room < 7:
            i += room
            continue
        _, n, kind = struct.unpack("<IHB", data[i : i + 7])
        if n == 0 and kind == 0:  # zero padding to the end of the block
            i += room
            continue
        buf += data[i + 7 : i + 7 + n]
        i += 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def test_cuda_only_switches_are_refused_in_one_line_without_gpus(assets, tmp_path):
    from rcs_ray.errors import RcsInputError

    cfg = make_cfg(assets, str(tmp_path), "policy.attn_implementation=flash_attention_2")
    with pytest.raises(RcsInputError, match="flash_attention_2 needs CUDA GPUs") as info:
        run(cfg, pairs=assets["pairs"], progress=False)
    assert "\n" not in str(info.value) and not os.path.exists(tmp_path / "stage1")


@pytest.mark.gpu
@pytest.mark.parametrize(
    "switches",
    [
        ["train.lora.quantization=4bit", "train.precision=bf16"],
        ["policy.attn_implementation=flash_attention_2", "train.precision=bf16"],
    ],
    ids=["qlora-4bit", "flash-attention-2"],
)
def test_cuda_only_paths_train_on_a_gpu(assets, ray_session, tmp_path, switches):
    import importlib.util

    needs = "bitsandbytes" if "quantization" in switches[0] else "flash_attn"
    if importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} is not installed")
    cfg = make_cfg(
        assets,
        str(tmp_path),
        f"train.lora.r={R}",
        "train.use_gpu=true",
        "train.num_workers=1",
        "train.max_steps=2",
        "train.save_steps=null",
        *switches,
    )
    result = run(cfg, pairs=assets["pairs"], out_dir=str(tmp_path / "train"), progress=False)
    assert [m["step"] for m in result.history] == [1, 2]
    assert os.path.isfile(os.path.join(result.model_dir, "config.json"))
