"""Ray Train + DeepSpeed training on CPU with 2 workers and a tiny random Llama: DPO / MODPO / SPO learn, ZeRO-2 and
ZeRO-3 run, resume after a worker failure and after a whole-job restart gives the uninterrupted run's weights
exactly, and bad input stops with one RcsInputError line before anything trains."""

import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rcs_ray.errors import RcsInputError
from rcs_ray.train import run
from tests.ray.train_assets import STEPS, make_cfg, pair_rows, save_model, weights

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def assert_learns(result, steps=STEPS):
    h = result.history
    assert [m["step"] for m in h] == list(range(1, steps + 1))
    assert h[-1]["loss"] < h[0]["loss"] - 0.05, [m["loss"] for m in h]
    assert h[-1]["rewards/accuracy"] > h[0]["rewards/accuracy"], [m["rewards/accuracy"] for m in h]
    assert all(m["tokens_per_second"] > 0 and m["lr"] > 0 for m in h)


def step1_rows(cfg, n):
    """The pairs (row indices) of optimizer step 1, by the order rcs_ray/train/batches.py documents: the first global
    batch (batch_size x accumulation x workers) of epoch 0's permutation ``default_rng([seed, 0])``."""
    t = cfg.train
    global_batch = t.batch_size * t.gradient_accumulation_steps * t.num_workers
    return np.random.default_rng([t.seed, 0]).permutation(n)[:global_batch]


def recorded(result):
    """The features the run trained on (its cached reference pass), in pair order, as numpy columns."""
    table = pq.read_table(os.path.join(result.out_dir, "features.parquet")).sort_by("index")
    columns = [c for c in table.column_names if c.endswith(("_logps", "_margin"))]
    return {c: np.array(table.column(c).to_pylist(), dtype=np.float64).squeeze() for c in columns}


def mean_softplus(x):
    """Step 1's loss when the policy is its reference (every log-ratio 0): the pair's logit is -x, the margin term
    alone, and -log sigmoid(-x) = log(1 + e^x); the logged loss is the mean over the step's pairs."""
    return sum(math.log1p(math.exp(v)) for v in x) / len(x)


@pytest.fixture(scope="module")
def dpo_run(assets, ray_session, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dpo"))
    return run(make_cfg(assets, out), pairs=assets["pairs"], out_dir=os.path.join(out, "train"), progress=False)


def test_dpo_zero2_learns_and_exports_an_hf_model(dpo_run, assets):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert_learns(dpo_run)
    # step 1 runs the initial policy against itself as the reference: every logit is 0, the loss exactly ln 2
    first = dpo_run.history[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
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
    assert summary["reference_pass"] == "training workers"  # the reference is the policy they start from
    # ZeRO-2: every worker holds all the parameters (fp32)
    full_mb = sum(v.numel() * 4 for v in before.values()) / 2**20
    assert dpo_run.history[0]["memory/params_at_load_mb"] == pytest.approx(full_mb, rel=1e-6)
    assert summary["memory_mb"]["params_at_load_mb"] == pytest.approx(full_mb, abs=0.1)


def test_the_workers_reference_log_probs_are_the_starting_policys(dpo_run, assets):
    """The cache the workers wrote before step 1 holds log pi_ref(y | x) of every pair, computed here by hand from
    the tokens: a plain forward of the starting policy, the log-softmax at each labelled position, summed."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(assets["policy"]).eval()
    table = pq.read_table(os.path.join(dpo_run.out_dir, "features.parquet")).sort_by("index").to_pylist()
    assert [r["index"] for r in table] == list(range(64))
    for row in table:
        for side in ("chosen", "rejected"):
            ids, labels = torch.tensor([row[f"{side}_input_ids"]]), torch.tensor(row[f"{side}_labels"][1:])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            kept = labels != -100
            expected = float(logp[kept.nonzero().squeeze(1), labels[kept]].sum())
            assert row[f"ref_{side}_logps"] == pytest.approx(expected, abs=1e-4), (row["index"], side)


def test_modpo_zero3_learns_with_margins_from_recorded_rewards(assets, ray_session, tmp_path):
    cfg = make_cfg(assets, str(tmp_path), "train.loss=modpo", "train.zero_stage=3", "train.save_steps=null")
    result = run(cfg, stage=1, pairs=assets["pairs"], progress=False)
    assert result.out_dir == os.path.join(str(tmp_path), "stage2", "train")
    assert result.summary["reference_pass"] == "training workers"  # ZeRO-3: every rank ran the same forwards
    assert result.summary["margin_objectives"] == ["harmless"]
    assert result.summary["loss_kwargs"] == {"weights": [0.5, 0.5]}
    assert_learns(result)
    assert result.history[0]["rewards/margin_term"] != 0.0
    # step 1 by hand from the recorded margins (the harmless rewards of the pairs): r = (0 - w_1 m) / w_0, so the logit
    # is -(w_1 / w_0) (m_chosen - m_rejected) = -(m_chosen - m_rejected) with weights (0.5, 0.5)
    f, rows = recorded(result), step1_rows(cfg, result.summary["pairs"])
    gap = (f["chosen_margin"] - f["rejected_margin"])[rows] * (0.5 / 0.5)
    assert f["chosen_margin"].tolist() == [r["chosen_rewards"][0] for r in pair_rows()]
    assert result.history[0]["rewards/margin_term"] == pytest.approx(gap.mean(), abs=1e-9)
    assert result.history[0]["loss"] == pytest.approx(mean_softplus(gap), abs=1e-5)
    exported, before = weights(result.model_dir), weights(assets["policy"])
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in before.items()}  # ZeRO-3: gathered
    # ZeRO-3 shards at load: each of the 2 workers materialised about half the parameters, never the whole model
    full_mb = sum(v.numel() * 4 for v in before.values()) / 2**20
    assert 0.45 * full_mb < result.history[0]["memory/params_at_load_mb"] < 0.6 * full_mb
    assert all(float(v.abs().sum()) > 0 for v in exported.values())


def test_spo_stage2_uses_implicit_rewards_of_the_stage1_policy(dpo_run, assets, ray_session, tmp_path):
    cfg = make_cfg(
        assets,
        str(tmp_path),
        "train.loss=spo",
        "train.zero_stage=3",
        "train.save_steps=null",
        f"train.spo_policies=[{assets['policy']},{dpo_run.model_dir}]",
        "train.spo_alphas=[0.3]",
    )
    result = run(cfg, stage=1, pairs=assets["pairs"], policy=dpo_run.model_dir, progress=False)
    s = result.summary
    assert s["spo_reward_source"] == "implicit" and s["reference"] == dpo_run.model_dir
    assert s["reference_pass"] == "separate"  # the chain's models run in the pass of their own
    assert s["spo_chain"] == [assets["policy"], dpo_run.model_dir] and s["loss_kwargs"] == {"alphas": [0.3]}
    # stage 1 (DPO) raised chosen over rejected: its implicit reward margin is positive and enters the loss
    assert result.history[0]["rewards/margin_term"] > 0
    # step 1 by hand from the recorded log-probs of the chain (pi_0 = the random policy, pi_1 = stage 1's DPO model,
    # also this stage's reference and its starting policy): R_1 = beta_1 (log pi_1 - log pi_0), DPO's own reward, and
    # the logit is -alpha (R_1(chosen) - R_1(rejected)) with alpha = 0.3, beta_1 = 0.1
    f, rows = recorded(result), step1_rows(cfg, result.summary["pairs"])
    r1 = {side: 0.1 * (f[f"ref_{side}_logps"] - f[f"spo0_{side}_logps"]) for side in ("chosen", "rejected")}
    gap = 0.3 * (r1["chosen"] - r1["rejected"])[rows]
    assert result.history[0]["rewards/margin_term"] == pytest.approx(gap.mean(), abs=1e-6)
    assert result.history[0]["loss"] == pytest.approx(mean_softplus(gap), abs=1e-5)
    assert_learns(result)


def _assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb)
    for k in wa:
        assert np.array_equal(wa[k].numpy(), wb[k].numpy()), k


def test_exact_resume_after_a_worker_failure_and_after_a_job_restart(
    dpo_run, assets, ray_session, tmp_path, monkeypatch
):
    # Checkpoints at steps 2, 4, 6. The last worker dies before step 3: the worker group restarts from step 2
    # (max_failures=1). It dies again before step 5: no restarts left, the job fails. Running the same job again
    # (same run name and storage) continues from step 4. The final weights must equal the uninterrupted run's.
    cfg = make_cfg(assets, str(tmp_path), "train.max_failures=1")
    out = str(tmp_path / "train")
    monkeypatch.setenv("RCS_RAY_TEST_FAIL_AT_STEPS", "3,5")
    with pytest.raises(Exception, match="injected worker failure before step 5"):
        run(cfg, pairs=assets["pairs"], out_dir=out, progress=False)
    assert sorted(f for f in os.listdir(out) if f.startswith("failed-")) == [
        "failed-before-step-3",
        "failed-before-step-5",
    ]
    result = run(cfg, pairs=assets["pairs"], out_dir=out, progress=False)
    _assert_same_weights(result.model_dir, dpo_run.model_dir)
    assert [m["step"] for m in result.history] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in result.history] == [m["loss"] for m in dpo_run.history]
    # checkpoints of this run are not resumed by a run with other inputs
    _one_line_error(
        lambda: run(
            make_cfg(assets, str(tmp_path), "train.beta=0.2"), pairs=assets["pairs"], out_dir=out, progress=False
        ),
        "other inputs",
        "'train'",
    )


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
    pq.write_table(
        pa.Table.from_pylist(
            [
                {**r, "ref_chosen_logps": float("nan") if i == 3 else -1.0, "ref_rejected_logps": -2.0}
                for i, r in enumerate(pair_rows())
            ]
        ),
        nan,
    )
    _one_line_error(lambda: run(cfg, pairs=str(nan), progress=False), "row 4", "ref_chosen_logps")

    small = save_model(assets["tok"], tmp_path / "small_vocab", vocab_size=len(assets["tok"]) - 100)
    _one_line_error(lambda: run(cfg, pairs=assets["pairs"], policy=small, progress=False), "vocab_size", "tokens")

    broken = save_model(assets["tok"], tmp_path / "nan_model", nan=True)  # the reference's log-probs are NaN
    _one_line_error(
        lambda: run(cfg, pairs=assets["pairs"], reference=broken, out_dir=str(tmp_path / "t"), progress=False),
        "ref_chosen_logps",
        "non-finite",
    )
    # the same model as the policy: its own reference, so the training workers find the NaN before step 1
    _one_line_error(
        lambda: run(cfg, pairs=assets["pairs"], policy=broken, out_dir=str(tmp_path / "w"), progress=False),
        "ref_chosen_logps",
        "non-finite",
        "in the training workers",
    )
    assert not os.path.exists(tmp_path / "w" / "model")


def test_a_local_ray_starts_no_preemption_watcher_with_each_fit(ray_session):
    """A local Ray has no node a cloud can preempt: its workers (Ray Train's controller among them) get Ray Train's
    switch for the watcher actor it would start with every fit (rcs_ray.ray_runtime)."""

    @ray_session.remote(num_cpus=0)
    def setting():
        return os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")

    assert ray_session.get(setting.remote()) == "0"


def test_a_local_rays_workers_quiet_ray_trains_cleaner_and_name_their_own_ray(ray_session):
    """A local Ray runs without the dashboard, so Ray Train's placement-group cleaner (an actor with every fit) fails
    to ask the state API once a second and warns each time: its workers drop those warnings (rcs_ray.worker_setup);
    the CLI's output during training is checked in tests/ray/test_interrupts.py. Its workers' RAY_ADDRESS names their
    own Ray, so the cleaner's state API finds it beside another Ray on the machine (measured: without it, "Found
    multiple active Ray instances", a traceback)."""
    import logging
    import os

    @ray_session.remote(num_cpus=0)
    def setup():
        name = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
        return logging.getLogger(name).level, os.environ.get("RAY_ADDRESS")

    level, address = ray_session.get(setup.remote())
    assert level == logging.ERROR and address == ray_session.get_runtime_context().gcs_address
