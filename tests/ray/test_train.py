"""Ray Train + DeepSpeed training on CPU with 2 workers and a tiny random Llama: DPO / MODPO / SPO learn, ZeRO-2 and
ZeRO-3 run, resume after a worker failure and after a whole-job restart gives the uninterrupted run's weights
exactly, and bad input stops with one RcsInputError line before anything trains."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rcs_ray.config import load_config
from rcs_ray.errors import RcsInputError
from rcs_ray.train import run

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEPS, SAVE = 6, 2
CONFIG = """
name: t
output_dir: {out}
policy: {{path: {policy}}}
objectives:
  - {{name: harmless, kind: rule, function: "rcs_ray.tinyworld.rewards:harmless"}}
  - {{name: helpful, kind: rule, function: "rcs_ray.tinyworld.rewards:helpful"}}
stages:
  - {{objective: harmless, sample: false, data: {{path: {stage1}}}}}
  - {{objective: helpful}}
train: {{loss: dpo, beta: 0.1, learning_rate: 1.0e-3, max_steps: {steps}, save_steps: {save}, batch_size: 8,
         zero_stage: 2, num_workers: 2, max_length: 32, keep_checkpoints: null}}
ray: {{num_cpus: 2, object_store_memory_mb: 256}}
"""


def save_model(tok, path, vocab_size=None, nan=False, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size or len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=128,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True))
    if nan:
        with torch.no_grad():
            model.lm_head.weight.fill_(float("nan"))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def pair_rows(n=64, seed=0):
    """Chosen: helpful words; rejected: harmful words; rewards (harmless, helpful) with a varying harmless gap."""
    from rcs_ray.tinyworld import world as W

    rng = np.random.default_rng(seed)
    rows = []
    for p in W.all_prompts()[:n]:
        h_c, h_r = (float(x) for x in rng.integers(0, 3, size=2))
        rows.append({"prompt": p, "chosen": " ".join(rng.choice(W.HELP_WORDS, 4)),
                     "rejected": " ".join(rng.choice(W.HARM_WORDS, 4)),
                     "chosen_rewards": [h_c, 2.0], "rejected_rewards": [h_r, 0.0], "target": "helpful"})
    return rows


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from rcs_ray.tinyworld.build import build_tokenizer

    root = tmp_path_factory.mktemp("train_assets")
    tok = build_tokenizer()
    pairs = root / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(pair_rows()), pairs)
    stage1 = root / "stage1.jsonl"
    with open(stage1, "w") as fh:
        for r in pair_rows():
            fh.write(json.dumps({"prompt": r["prompt"], "chosen": r["rejected"], "rejected": r["chosen"]}) + "\n")
    return {"root": root, "tok": tok, "policy": save_model(tok, root / "policy"), "pairs": str(pairs),
            "stage1": str(stage1)}


def make_cfg(assets, out, *overrides):
    path = os.path.join(out, "config.yaml")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(CONFIG.format(out=out, policy=assets["policy"], stage1=assets["stage1"], steps=STEPS, save=SAVE))
    return load_config(path, list(overrides))


def weights(model_dir):
    from safetensors.torch import load_file

    return load_file(os.path.join(model_dir, "model.safetensors"))


def assert_learns(result, steps=STEPS):
    h = result.history
    assert [m["step"] for m in h] == list(range(1, steps + 1))
    assert h[-1]["loss"] < h[0]["loss"] - 0.05, [m["loss"] for m in h]
    assert h[-1]["rewards/accuracy"] > h[0]["rewards/accuracy"], [m["rewards/accuracy"] for m in h]
    assert all(m["tokens_per_second"] > 0 and m["lr"] > 0 for m in h)


@pytest.fixture(scope="module")
def dpo_run(assets, ray_session, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dpo"))
    return run(make_cfg(assets, out), pairs=assets["pairs"], out_dir=os.path.join(out, "train"), progress=False)


def test_dpo_zero2_learns_and_exports_an_hf_model(dpo_run, assets):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert_learns(dpo_run)
    lines = open(dpo_run.metrics_path).read().splitlines()
    assert len(lines) == STEPS and json.loads(lines[-1])["step"] == STEPS
    model = AutoModelForCausalLM.from_pretrained(dpo_run.model_dir)
    tok = AutoTokenizer.from_pretrained(dpo_run.model_dir)
    assert len(tok) == len(assets["tok"]) and tok.chat_template
    before = weights(assets["policy"])
    after = model.state_dict()
    assert any(not np.allclose(before[k].numpy(), after[k].numpy()) for k in before)
    summary = json.load(open(dpo_run.summary_path))
    assert summary["steps"] == STEPS and summary["zero_stage"] == 2 and summary["pairs"] == 64
    # ZeRO-2: every worker holds all the parameters (fp32)
    full_mb = sum(v.numel() * 4 for v in before.values()) / 2 ** 20
    assert dpo_run.history[0]["memory/params_at_load_mb"] == pytest.approx(full_mb, rel=1e-6)
    assert summary["memory_mb"]["params_at_load_mb"] == pytest.approx(full_mb, abs=0.1)


def test_modpo_zero3_learns_with_margins_from_recorded_rewards(assets, ray_session, tmp_path):
    cfg = make_cfg(assets, str(tmp_path), "train.loss=modpo", "train.zero_stage=3", "train.save_steps=null")
    result = run(cfg, stage=1, pairs=assets["pairs"], progress=False)
    assert result.out_dir == os.path.join(str(tmp_path), "stage2", "train")
    assert result.summary["margin_objectives"] == ["harmless"]
    assert result.summary["loss_kwargs"] == {"weights": [0.5, 0.5]}
    assert_learns(result)
    assert result.history[0]["rewards/margin_term"] != 0.0
    exported, before = weights(result.model_dir), weights(assets["policy"])
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in before.items()}   # ZeRO-3: gathered
    # ZeRO-3 shards at load: each of the 2 workers materialised about half the parameters, never the whole model
    full_mb = sum(v.numel() * 4 for v in before.values()) / 2 ** 20
    assert 0.45 * full_mb < result.history[0]["memory/params_at_load_mb"] < 0.6 * full_mb
    assert all(float(v.abs().sum()) > 0 for v in exported.values())


def test_spo_stage2_uses_implicit_rewards_of_the_stage1_policy(dpo_run, assets, ray_session, tmp_path):
    cfg = make_cfg(assets, str(tmp_path), "train.loss=spo", "train.zero_stage=3", "train.save_steps=null",
                   f"train.spo_policies=[{assets['policy']},{dpo_run.model_dir}]", "train.spo_alphas=[0.3]")
    result = run(cfg, stage=1, pairs=assets["pairs"], policy=dpo_run.model_dir, progress=False)
    s = result.summary
    assert s["spo_reward_source"] == "implicit" and s["reference"] == dpo_run.model_dir
    assert s["spo_chain"] == [assets["policy"], dpo_run.model_dir] and s["loss_kwargs"] == {"alphas": [0.3]}
    # stage 1 (DPO) raised chosen over rejected: its implicit reward margin is positive and enters the loss
    assert result.history[0]["rewards/margin_term"] > 0
    assert_learns(result)


def _assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb)
    for k in wa:
        assert np.array_equal(wa[k].numpy(), wb[k].numpy()), k


def test_exact_resume_after_a_worker_failure_and_after_a_job_restart(dpo_run, assets, ray_session, tmp_path,
                                                                     monkeypatch):
    # Checkpoints at steps 2, 4, 6. The last worker dies before step 3: the worker group restarts from step 2
    # (max_failures=1). It dies again before step 5: no restarts left, the job fails. Running the same job again
    # (same run name and storage) continues from step 4. The final weights must equal the uninterrupted run's.
    cfg = make_cfg(assets, str(tmp_path), "train.max_failures=1")
    out = str(tmp_path / "train")
    monkeypatch.setenv("RCS_RAY_TEST_FAIL_AT_STEPS", "3,5")
    with pytest.raises(Exception, match="injected worker failure before step 5"):
        run(cfg, pairs=assets["pairs"], out_dir=out, progress=False)
    assert sorted(f for f in os.listdir(out) if f.startswith("failed-")) == ["failed-before-step-3",
                                                                             "failed-before-step-5"]
    result = run(cfg, pairs=assets["pairs"], out_dir=out, progress=False)
    _assert_same_weights(result.model_dir, dpo_run.model_dir)
    assert [m["step"] for m in result.history] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in result.history] == [m["loss"] for m in dpo_run.history]
    # checkpoints of this run are not resumed by a run with other inputs
    _one_line_error(lambda: run(make_cfg(assets, str(tmp_path), "train.beta=0.2"), pairs=assets["pairs"], out_dir=out,
                                progress=False), "other inputs", "'train'")


def _one_line_error(fn, *match):
    with pytest.raises(RcsInputError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and all(m in msg for m in match), msg


def test_bad_input_stops_with_one_line(assets, ray_session, tmp_path):
    cfg = make_cfg(assets, str(tmp_path))
    rows = pair_rows(16)
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "rejected"} for r in rows]), missing)
    _one_line_error(lambda: run(cfg, pairs=str(missing), progress=False), "missing column", "rejected")

    nan = tmp_path / "nan.parquet"
    pq.write_table(pa.Table.from_pylist([{**r, "ref_chosen_logps": float("nan") if i == 3 else -1.0,
                                          "ref_rejected_logps": -2.0} for i, r in enumerate(pair_rows())]), nan)
    _one_line_error(lambda: run(cfg, pairs=str(nan), progress=False), "row 4", "ref_chosen_logps")

    small = save_model(assets["tok"], tmp_path / "small_vocab", vocab_size=len(assets["tok"]) - 100)
    _one_line_error(lambda: run(cfg, pairs=assets["pairs"], policy=small, progress=False), "vocab_size", "tokens")

    broken = save_model(assets["tok"], tmp_path / "nan_model", nan=True)     # the reference's log-probs are NaN
    _one_line_error(lambda: run(cfg, pairs=assets["pairs"], reference=broken, out_dir=str(tmp_path / "t"),
                                progress=False), "ref_chosen_logps", "non-finite")
