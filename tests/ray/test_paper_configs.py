"""Every configs/paper/*.yaml as shipped, through `rcs-ray run` on the tiny replicas (CPU, small limits): every stage
trains, every pair is reward-consistent, and each reward in pairs.parquet is the intended read of its model (beaver's
score_head at the last token, ArmoRM's rewards[:, 0] and rewards[:, 8]) recomputed here without the pipeline. The K=2
run keeps the config's own model and data paths (real Hub IDs, resolved offline from a local HF cache that holds the
replicas under those IDs) and then evaluates with the config's own eval block (PKU-SafeRLHF's test split, the harmless
rate, the beaver reward as judge); the K=3 run reads local copies through RCS_MODELS / RCS_DATA, then `rcs-ray eval`
reports an independent LLM judge."""

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rcs_ray import rc
from rcs_ray.cli import main
from tests.replicas import hub_cache

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CPU = [
    "sampling.engine=hf",
    "sampling.num_gpus=0",
    "sampling.n=4",
    "sampling.max_tokens=8",
    "sampling.batch_size=4",
    "sampling.num_actors=1",
    "policy.dtype=float32",
    "train.use_gpu=false",
    "train.num_workers=1",  # multi-worker training: tests/ray/test_train.py and the cluster tier
    "train.zero_stage=2",
    "train.precision=fp32",
    "train.batch_size=2",
    "train.gradient_accumulation_steps=1",
    "train.max_steps=2",
    "train.max_length=128",
    "train.ref_batch_size=4",
    "ray.num_cpus=2",
]


def objectives_on_cpu(k):
    return [
        o
        for i in range(k)
        for o in (f"objectives.{i}.num_gpus=0", f"objectives.{i}.dtype=float32", f"objectives.{i}.batch_size=8")
    ]


def limits(k, n=8):
    return [f"stages.{i}.data.limit={n}" for i in range(k)]


def hub_models(replicas, root):
    """Hub ID -> replica directory for every model the paper configs name by default (the beaver reward model: the
    cost replica's layout with ``score_type: reward``)."""
    reward = os.path.join(root, "beaver-7b-v1.0-reward")
    if not os.path.isdir(reward):
        shutil.copytree(replicas["cost"], reward)
        with open(os.path.join(reward, "config.json"), encoding="utf-8") as fh:
            config = json.load(fh)
        with open(os.path.join(reward, "config.json"), "w", encoding="utf-8") as fh:
            json.dump({**config, "score_type": "reward"}, fh, indent=2)
    return {
        "meta-llama/Meta-Llama-3-8B-Instruct": replicas["policy"],
        "PKU-Alignment/beaver-7b-v1.0-cost": replicas["cost"],
        "PKU-Alignment/beaver-7b-v1.0-reward": reward,
        "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2": replicas["helpful_rm"],
        "RLHFlow/ArmoRM-Llama3-8B-v0.1": replicas["armorm"],
    }


def local_models(replicas, root):
    """An RCS_MODELS directory: each model under its Hub repository's name (as `hf download --local-dir` leaves it)."""
    os.makedirs(root, exist_ok=True)
    for repo, path in hub_models(replicas, os.path.dirname(root)).items():
        link = os.path.join(root, repo.split("/")[1])
        if not os.path.exists(link):
            os.symlink(path, link)
    return root


def beaver_end_scores(path, prompt, responses):
    """-(score_head . h_last) of beaver's prompt format, computed from the checkpoint directly."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaModel

    tok = AutoTokenizer.from_pretrained(path)
    backbone = LlamaModel.from_pretrained(path).eval()
    head = load_file(os.path.join(path, "model.safetensors"))["score_head.weight"][0]
    turns = (
        "".join(f" {'ASSISTANT:' if m['role'] == 'assistant' else 'USER: '}{m['content']}" for m in prompt)
        if isinstance(prompt, list)
        else f" USER: {prompt}"
    )
    out = []
    for r in responses:
        ids = tok(
            f"<s>BEGINNING OF CONVERSATION:{turns} ASSISTANT:{r}</s>", add_special_tokens=False, return_tensors="pt"
        )["input_ids"]
        with torch.no_grad():
            out.append(-float(backbone(input_ids=ids).last_hidden_state[0, -1] @ head))
    return out


def armorm_rewards(path, prompt, responses):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    out = []
    for r in responses:
        ids = tok.apply_chat_template(
            msgs + [{"role": "assistant", "content": r}], return_dict=True, return_tensors="pt"
        )["input_ids"]
        with torch.no_grad():
            out.append(model(input_ids=ids).rewards[0].tolist())
    return np.array(out)


def check_pairs(path, k, margin=0.0):
    pairs = pq.read_table(path).to_pylist()
    assert pairs, path
    for p in pairs:
        assert rc.is_consistent(p["chosen_rewards"], p["rejected_rewards"], enforce=list(range(k - 1)), margin=margin)
        assert p["chosen_rewards"][k - 1] > p["rejected_rewards"][k - 1]
    return pairs


def test_k2_paper_config_end_to_end_with_its_hub_ids(replicas, ray_session, tmp_path, monkeypatch):
    monkeypatch.delenv("RCS_MODELS", raising=False)  # the config's own hf:// paths
    monkeypatch.delenv("RCS_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", hub_cache(str(tmp_path / "hub"), hub_models(replicas, str(tmp_path))))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))  # load_dataset's prepared copies
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "k2"
    config = os.path.join(REPO, "configs/paper/pku_helpsteer_k2.yaml")
    assert main(["run", config, f"output_dir={out}", *CPU, *objectives_on_cpu(2), *limits(2), "--no-progress"]) == 0
    for stage in (1, 2):
        assert (out / f"stage{stage}" / "train" / "model" / "model.safetensors").exists()
    inputs = json.loads((out / "stage1" / "manifest.json").read_text())["steps"]["train"]["inputs"]["identity"]
    assert "models--meta-llama--Meta-Llama-3-8B-Instruct/snapshots/" in inputs["policy"]  # resolved offline
    assert "datasets--PKU-Alignment--PKU-SafeRLHF/snapshots/" in inputs["data"]
    pairs = check_pairs(out / "stage2" / "sampling" / "pairs.parquet", 2)
    meta = json.loads(pq.read_schema(out / "stage2" / "sampling" / "pairs.parquet").metadata[b"rcs_ray"])
    assert meta == {"objectives": ["harmless", "helpful"], "target": "helpful"}
    for p in pairs[:3]:  # the harmless reward is beaver's end score, sign -1
        got = [p["chosen_rewards"][0], p["rejected_rewards"][0]]
        prompt = p["prompt"][0]["content"] if isinstance(p["prompt"], list) else p["prompt"]
        texts = [c[0]["content"] if isinstance(c, list) else c for c in (p["chosen"], p["rejected"])]
        np.testing.assert_allclose(got, beaver_end_scores(replicas["cost"], prompt, texts), rtol=1e-4, atol=1e-5)
    # the config's eval block: PKU-SafeRLHF's held-out test split, the harmless rate, the beaver reward as judge
    model = out / "stage2" / "train" / "model"
    assert (
        main(
            [
                "eval",
                config,
                f"output_dir={out}",
                "eval.n=2",
                "eval.prompts.limit=4",
                "eval.judge.num_gpus=0",
                "eval.judge.dtype=float32",
                "eval.judge.batch_size=8",
                *CPU,
                *objectives_on_cpu(2),
                "--policy",
                f"stage2={model}",
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert report["prompts"] == 4 and report["objectives"] == ["harmless", "helpful", "beaver_reward"]
    for policy in ("reference", "stage2"):
        metrics = report["metrics"][policy]
        rate = metrics["rate"]["harmless>=0"]  # a share of the 4 x 2 samples: k / 8
        assert 0.0 <= rate <= 1.0 and rate * 8 == pytest.approx(round(rate * 8), abs=1e-9)
        assert np.isfinite(metrics["mean"]["beaver_reward"])
    assert "beaver_reward" in report["metrics"]["stage2"]["win_rate_vs_reference"]


def test_k3_paper_config_end_to_end_reads_armorm_rewards(replicas, ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("RCS_MODELS", local_models(replicas, str(tmp_path / "models")))  # local copies, by name
    monkeypatch.setenv("RCS_DATA", replicas["data"])
    out = tmp_path / "k3"
    assert (
        main(
            [
                "run",
                os.path.join(REPO, "configs/paper/pku_helpsteer_uf_k3.yaml"),
                f"output_dir={out}",
                *CPU,
                *objectives_on_cpu(3),
                *limits(3),
                "--no-progress",
            ]
        )
        == 0
    )
    pairs = check_pairs(out / "stage3" / "sampling" / "pairs.parquet", 3)
    assert isinstance(pairs[0]["prompt"], list)  # UltraFeedback prompts are chats, kept as Arrow messages
    for p in pairs[:3]:
        texts = [p["chosen"][0]["content"], p["rejected"][0]["content"]]
        want = armorm_rewards(replicas["armorm"], p["prompt"], texts)
        np.testing.assert_allclose([p["chosen_rewards"][1], p["rejected_rewards"][1]], want[:, 0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose([p["chosen_rewards"][2], p["rejected_rewards"][2]], want[:, 8], rtol=1e-4, atol=1e-5)
    # eval with an independent judge that did no selection
    assert (
        main(
            [
                "eval",
                os.path.join(REPO, "configs/paper/pku_helpsteer_uf_k3.yaml"),
                f"output_dir={out}",
                f"eval.prompts.path={os.path.join(replicas['data'], 'HelpSteer2')}",
                "eval.prompts.preset=helpsteer2",
                "eval.prompts.split=validation",
                "eval.prompts.objective=helpfulness",
                "eval.n=2",
                "eval.judge=null",
                f"eval.judge={{name: judge, kind: judge, model: {replicas['judge']}}}",
                *CPU,
                *objectives_on_cpu(3),
                "--policy",
                f"stage3={out / 'stage3' / 'train' / 'model'}",
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "eval" / "eval.json").read_text())
    for policy in ("reference", "stage3"):
        assert 1.0 <= report["metrics"][policy]["mean"]["judge"] <= 10.0  # an expected score over labels 1..10
    assert "judge" in report["metrics"]["stage3"]["win_rate_vs_reference"]
    assert "judge" in (out / "eval" / "eval.md").read_text()


@pytest.mark.parametrize("name", ["pku_helpsteer_k2.yaml", "pku_helpsteer_k2_8gpu.yaml", "pku_helpsteer_uf_k3.yaml"])
def test_plan_proves_each_paper_config_as_shipped(replicas, tmp_path, monkeypatch, capsys, name):
    """`rcs-ray plan` on each paper config, its models and placement as shipped, on the capacity of one 8-GPU node:
    every Hub model and dataset resolved from the offline cache, every checkpoint checked on the meta device, every
    phase fits (only the batch is made small enough for the replica datasets)."""
    monkeypatch.delenv("RCS_MODELS", raising=False)
    monkeypatch.delenv("RCS_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", hub_cache(str(tmp_path / "hub"), hub_models(replicas, str(tmp_path))))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    small = ["train.batch_size=1", "train.gradient_accumulation_steps=1"]  # the replica datasets: 16-24 rows
    code = main(
        [
            "plan",
            os.path.join(REPO, "configs/paper", name),
            *small,
            "--gpus",
            "8",
            "--cpus",
            "96",
            "--json",
            str(tmp_path / "plan.json"),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads((tmp_path / "plan.json").read_text())
    assert report["problems"] == [] and all(n > 0 for n in report["prompts"].values())
    assert "models--meta-llama--Meta-Llama-3-8B-Instruct" in report["models"]["policy.path"]
    assert max(p["needs"].get("GPU", 0) for p in report["phases"]) <= 8
    assert all(c["gpu_hours"] > 0 for c in report["costs"]) and "0 problem(s)" in out.out, report["costs"]
