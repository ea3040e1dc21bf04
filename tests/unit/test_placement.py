"""Where actors go: Ray resources per pool and the tensor-parallel placement-group bundles (the live placement is
checked on a real two-node cluster in tests/cluster/)."""

import json

import pytest

from rcs_ray.config import ObjectiveConfig, SamplingConfig, load_config
from rcs_ray.errors import RcsInputError
from rcs_ray.registry import REWARD_SOURCES
from rcs_ray.sampling.placement import generation_remote_args, scorer_remote_args, tensor_parallel_group

pytestmark = pytest.mark.unit


def test_one_gpu_engine_asks_for_its_gpus_cpus_and_custom_resources():
    args = generation_remote_args(SamplingConfig(num_gpus=1, num_cpus=2, resources={"a100": 1}))
    assert args == {"num_cpus": 2, "num_gpus": 1, "resources": {"a100": 1}}
    assert generation_remote_args(SamplingConfig()) == {"num_cpus": 1.0, "num_gpus": 0.0}


def test_tensor_parallel_engine_gets_a_placement_group_per_actor():
    s = SamplingConfig(
        num_gpus=1, num_cpus=2, tensor_parallel_size=4, resources={"gen": 1}, placement_strategy="STRICT_PACK"
    )
    args = generation_remote_args(s)
    fn = tensor_parallel_group(s)
    assert args == {"num_cpus": 2, "num_gpus": 0, "resources": {"gen": 1}}  # the actor itself takes no GPU
    assert tensor_parallel_group(SamplingConfig(num_gpus=1)) is None
    assert fn.bundles == [{"GPU": 1.0, "CPU": 2.0, "gen": 1.0}, {"GPU": 1.0}, {"GPU": 1.0}, {"GPU": 1.0}]
    assert fn.strategy == "STRICT_PACK"


def test_scorer_pools():
    rm = ObjectiveConfig(name="h", kind="classifier", model="m", num_gpus=0.5, num_cpus=1, resources={"rm": 1})
    assert scorer_remote_args(rm, REWARD_SOURCES["classifier"]) == {
        "num_cpus": 1,
        "num_gpus": 0.5,
        "resources": {"rm": 1},
    }
    rule = ObjectiveConfig(name="h", function="m:f", num_gpus=1)
    # a rule never needs a GPU
    assert scorer_remote_args(rule, REWARD_SOURCES["rule"]) == {"num_cpus": 0.25, "num_gpus": 0}


@pytest.mark.parametrize(
    "override,match",
    [
        ("sampling.tensor_parallel_size=2", "sampling.tensor_parallel_size.*needs GPUs"),
        ("sampling.placement_strategy=ANYWHERE", "sampling.placement_strategy"),
        ("sampling.resources.GPU=1", "sampling.resources.GPU.*num_gpus"),
        ("train.backend=mpi", "train.backend"),
        ("train.resources_per_worker.x=-1", "train.resources_per_worker.x"),
    ],
)
def test_placement_config_errors(tmp_path, override, match):
    (tmp_path / "c.yaml").write_text(json.dumps({"objectives": [{"name": "h", "function": "m:f"}]}))
    with pytest.raises(RcsInputError, match=match):
        load_config(str(tmp_path / "c.yaml"), [override])


def test_job_runtime_env_wins_over_the_worker_env(monkeypatch):
    from rcs_ray.ray_runtime import _job_env_vars

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert _job_env_vars() == {}
    monkeypatch.setenv(
        "RAY_JOB_CONFIG_JSON_ENV_VAR",
        json.dumps({"runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "1"}, "working_dir": "gcs://x"}}),
    )
    assert _job_env_vars() == {"HF_HUB_OFFLINE": "1"}


def test_a_reward_models_settings_do_not_name_the_policy_unless_it_reads_the_policys_template():
    # the hosts keep a reward model across stages by its settings: each stage's new policy must not change them
    from rcs_ray.config import ModelConfig
    from rcs_ray.sampling.job import scorer_settings

    rm = ObjectiveConfig(name="h", kind="classifier", model="m")
    pi1, pi2 = ModelConfig(path="/run/stage1/model"), ModelConfig(path="/run/stage2/model")
    assert scorer_settings(rm, pi1, 64) == scorer_settings(rm, pi2, 64)
    own = ObjectiveConfig(name="h", kind="classifier", model="m", chat_template="policy")
    assert scorer_settings(own, pi1, 64).policy_tokenizer == "/run/stage1/model"


def test_a_local_ray_turns_the_preemption_watcher_off_unless_the_user_set_it(monkeypatch):
    from rcs_ray.ray_runtime import _local_ray_env

    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", raising=False)
    assert _local_ray_env() == {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")
    assert _local_ray_env() == {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"}
