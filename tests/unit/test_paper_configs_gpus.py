"""The paper configs as a user runs them: real Hub IDs by default (RCS_MODELS / RCS_DATA switch to local copies),
held-out evaluation splits, and GPU counts per phase computed from the loaded config — the 8-GPU variant's header
arithmetic (sampling 3 + 2 + 2 = 7, eval 7 + 1 = 8, reference pass 8, training 8) is what the config asks for."""

import dataclasses
import glob
import os

import pytest

from rcs_ray.config import load_config
from rcs_ray.config.path_checks import model_paths
from rcs_ray.config.stages import stage_objectives, stage_train
from rcs_ray.sampling.scorers import plan_scorers

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER = sorted(glob.glob(os.path.join(REPO, "configs", "paper", "*.yaml")))
K2, K2_8GPU, K3 = (
    os.path.join(REPO, "configs", "paper", f)
    for f in ("pku_helpsteer_k2.yaml", "pku_helpsteer_k2_8gpu.yaml", "pku_helpsteer_uf_k3.yaml")
)
HUB_MODELS = {  # every model a paper config names by default
    "hf://meta-llama/Meta-Llama-3-8B-Instruct",
    "hf://PKU-Alignment/beaver-7b-v1.0-cost",
    "hf://PKU-Alignment/beaver-7b-v1.0-reward",
    "hf://Skywork/Skywork-Reward-Llama-3.1-8B-v0.2",
    "hf://RLHFlow/ArmoRM-Llama3-8B-v0.1",
}
NODE_GPUS = 8


@pytest.fixture(autouse=True)
def no_local_copies(monkeypatch):
    monkeypatch.delenv("RCS_MODELS", raising=False)
    monkeypatch.delenv("RCS_DATA", raising=False)


def generation_gpus(cfg) -> float:
    s = cfg.sampling
    return s.num_actors * s.num_gpus * s.tensor_parallel_size


def scorer_gpus(objectives) -> float:
    """One actor pool per scorer (objectives sharing a model share it), placed by its first objective."""
    return sum(spec.objectives[0].num_actors * spec.objectives[0].num_gpus for spec in plan_scorers(objectives))


def sampling_gpus(cfg) -> float:
    """The most GPUs a sampled stage holds at once: its generation pool + the pools of the objectives it scores."""
    return max(
        generation_gpus(cfg) + scorer_gpus(stage_objectives(cfg, k))
        for k, stage in enumerate(cfg.stages)
        if stage.sample
    )


def eval_gpus(cfg) -> float:
    judge = [cfg.eval.judge] if cfg.eval.judge is not None else []
    return generation_gpus(cfg) + scorer_gpus(list(cfg.objectives) + judge)


def train_gpus(cfg) -> float:
    """Per stage: Ray Train workers, and before them the reference log-prob pass (one GPU per actor and model)."""
    out = 0
    for k in range(len(cfg.stages)):
        t = stage_train(cfg, k)
        if t.use_gpu:
            out = max(out, t.num_workers, t.ref_num_actors)
    return out


def test_the_8gpu_config_exists_and_extends_k2():
    assert K2_8GPU in PAPER
    with open(K2_8GPU, encoding="utf-8") as fh:
        assert "extends: pku_helpsteer_k2.yaml" in fh.read()


def test_the_8gpu_config_fits_one_8gpu_node_in_every_phase():
    cfg = load_config(K2_8GPU)
    assert cfg.sampling.engine == "vllm" and cfg.train.use_gpu and cfg.train.zero_stage == 3
    assert (generation_gpus(cfg), sampling_gpus(cfg), eval_gpus(cfg), train_gpus(cfg)) == (3, 7, 8, 8)  # the header
    assert sampling_gpus(cfg) <= NODE_GPUS and eval_gpus(cfg) <= NODE_GPUS and train_gpus(cfg) <= NODE_GPUS
    assert cfg.train.num_workers == NODE_GPUS  # training uses the whole node
    assert cfg.ray.address is None  # Ray starts on this node


def test_the_header_alternatives_fit_too():
    more_engines = load_config(K2_8GPU, ["sampling.num_actors=4", "objectives.1.num_actors=1"])
    assert sampling_gpus(more_engines) == 7 and eval_gpus(more_engines) == 8
    tp2 = load_config(K2_8GPU, ["sampling.tensor_parallel_size=2", "sampling.num_actors=1"])
    assert (generation_gpus(tp2), sampling_gpus(tp2), eval_gpus(tp2)) == (2, 6, 7)


@pytest.mark.parametrize("path", PAPER, ids=[os.path.basename(p) for p in PAPER])
def test_every_paper_config_fits_8_gpus(path):
    cfg = load_config(path)
    assert max(sampling_gpus(cfg), eval_gpus(cfg), train_gpus(cfg)) <= NODE_GPUS


def test_the_8gpu_objectives_are_k2s_with_more_replicas():
    """The 8-GPU config re-lists the objectives (a YAML list is replaced whole): only the pool sizes may differ."""

    def strip(cfg):
        return [dataclasses.replace(o, num_actors=1) for o in cfg.objectives]

    big, base = load_config(K2_8GPU), load_config(K2)
    assert strip(big) == strip(base)
    assert [o.num_actors for o in big.objectives] == [2, 2]
    assert big.stages == base.stages and big.eval == base.eval and big.policy == base.policy


@pytest.mark.parametrize("path", PAPER, ids=[os.path.basename(p) for p in PAPER])
def test_models_and_data_default_to_hub_ids(path):
    cfg = load_config(path)
    models = {p for _, p in model_paths(cfg) if p}
    assert models and models <= HUB_MODELS, models - HUB_MODELS
    assert cfg.policy.path == "hf://meta-llama/Meta-Llama-3-8B-Instruct"
    data = [s.data.path for s in cfg.stages] + [cfg.eval.prompts.path]
    assert all(p.startswith("hf://") for p in data), data


def test_rcs_models_and_rcs_data_switch_to_local_copies(monkeypatch, tmp_path):
    monkeypatch.setenv("RCS_MODELS", str(tmp_path / "m"))
    monkeypatch.setenv("RCS_DATA", str(tmp_path / "d"))
    cfg = load_config(K3)
    names = {os.path.basename(p) for _, p in model_paths(cfg) if p}
    assert names == {
        "Meta-Llama-3-8B-Instruct",
        "beaver-7b-v1.0-cost",
        "ArmoRM-Llama3-8B-v0.1",
        "beaver-7b-v1.0-reward",
    }
    assert all(p.startswith(str(tmp_path / "m")) for _, p in model_paths(cfg) if p)
    assert [s.data.path for s in cfg.stages] == [
        str(tmp_path / "d" / n) for n in ("PKU-SafeRLHF", "HelpSteer2", "ultrafeedback_binarized")
    ]


@pytest.mark.parametrize("path", PAPER, ids=[os.path.basename(p) for p in PAPER])
def test_eval_is_held_out_with_the_harmless_rate(path):
    cfg = load_config(path)
    e, stage1 = cfg.eval, cfg.stages[0].data
    assert (
        (e.prompts.path, e.prompts.preset)
        == (stage1.path, stage1.preset)
        == ("hf://PKU-Alignment/PKU-SafeRLHF", "pku_saferlhf")
    )
    assert stage1.split == "train" and e.prompts.split == "test"  # the stages never read the test split
    assert e.thresholds == {"harmless": 0.0}
    harmless = cfg.objectives[cfg.objective_names.index("harmless")]
    assert harmless.sign == -1.0 and harmless.model.endswith("beaver-7b-v1.0-cost")  # harmless = -cost >= 0
    assert e.judge is not None and e.judge.name not in cfg.objective_names
    assert e.judge.model == "hf://PKU-Alignment/beaver-7b-v1.0-reward" and e.judge.sign == 1.0
    assert e.judge.chat_template == harmless.chat_template  # beaver's own prompt format
