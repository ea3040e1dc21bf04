"""Every shipped YAML loads and validates; overrides; one-line errors naming the key."""

import dataclasses
import glob
import json
import os

import pytest
import yaml

from rcs_ray.config import RunConfig, load_config, to_dict, to_yaml
from rcs_ray.errors import RcsInputError

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def test_there_are_configs():
    names = {os.path.relpath(p, REPO) for p in CONFIGS}
    assert {
        "configs/base.yaml",
        "configs/tiny/k2.yaml",
        "configs/tiny/k3.yaml",
        "configs/paper/pku_helpsteer_k2.yaml",
        "configs/paper/pku_helpsteer_uf_k3.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_every_config_loads_and_validates(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    for stage in cfg.stages:
        assert stage.objective in cfg.objective_names
    # round trip through YAML keeps everything: to_yaml's output parses and loads back as the same config
    text = to_yaml(cfg)
    assert set(yaml.safe_load(text)) == {f.name for f in dataclasses.fields(RunConfig)}
    printed = tmp_path / "printed.yaml"
    printed.write_text(text)
    again = load_config(str(printed))
    assert again == cfg and to_dict(again) == to_dict(cfg)


def test_extends_and_interpolation():
    cfg = load_config(os.path.join(REPO, "configs/tiny/k3.yaml"))
    assert cfg.name == "tiny-k3"
    assert cfg.output_dir == "outputs/tiny-k3"  # ${name} from base.yaml resolved after the override
    assert cfg.objective_names == ["harmless", "helpful", "concise"]
    assert cfg.train.learning_rate == 5.0e-5  # from k2.yaml
    assert cfg.train.max_grad_norm == 1.0  # from base.yaml
    assert cfg.stages[2].rc.margin == -0.5


def test_overrides_including_list_items():
    cfg = load_config(
        os.path.join(REPO, "configs/tiny/k2.yaml"),
        ["sampling.n=16", "stages.1.rc.enforce=[harmless]", "stages.1.rc.margin=0", "name=x"],
    )
    assert cfg.sampling.n == 16
    assert cfg.stages[1].rc.enforce == ["harmless"]
    assert cfg.stages[1].rc.margin == 0.0
    assert cfg.output_dir == "outputs/x"


def test_defaults_without_a_file():
    cfg = load_config(None, ["sampling.n=4"])
    assert cfg.sampling.n == 4 and cfg.objectives == [] and cfg.train.loss == "dpo"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.lrr=1", "train.lrr"),
        ("sampling.n=abc", "sampling.n"),
        ("sampling.n=0", "sampling.n"),
        ("sampling.top_p=1.5", "sampling.top_p"),
        ("train.loss=ipo", "train.loss"),
        ("train.zero_stage=4", "train.zero_stage"),
        ("stages.1.objective=kind", "stages.1.objective"),
        ("stages.1.rc.enforce=[bogus]", "stages.1.rc.enforce"),
        ("stages.1.rc.strategy=best", "stages.1.rc.strategy"),
        ("stages.1.rc.margin=.nan", "stages.1.rc.margin"),
        ("stages.1.rc.weights=[1.0]", "stages.1.rc.weights"),
        ("stages.0.data.preset=hh_rlhf", "stages.0.data.preset"),
        ("objectives.0.function=not-a-function", "objectives.0.function"),
        ("objectives.1.name=harmless", "objectives"),
        ("tinyworld.conflict=2", "tinyworld.conflict"),
        ("nonsense", "key=value"),
        ("train.lr_scheduler=step", "train.lr_scheduler"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("train.report_to=[neptune]", "train.report_to"),
        ("train.lora.r=-1", "train.lora.r"),
        ("train.lora.alpha=0", "train.lora.alpha"),
        ("train.lora.dropout=1.0", "train.lora.dropout"),
        ("train.lora.target_modules=[]", "train.lora.target_modules"),
        ("train.lora.quantization=4bit", "train.lora.quantization"),
        ("policy.attn_implementation=flash", "policy.attn_implementation"),
        ("tracking.wandb_mode=cloud", "tracking.wandb_mode"),
        ("stages.1.train.lora.r=-2", "stages.1.train.lora.r"),
    ],
)
def test_bad_values_name_the_key(override, expected):
    with pytest.raises(RcsInputError) as err:
        load_config(os.path.join(REPO, "configs/tiny/k2.yaml"), [override])
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["sampling.top_k=-1"], "key 'sampling.top_k': must be >= 0 (0: off), got -1"),
        (["sampling.min_p=1.5"], "key 'sampling.min_p': must be in [0, 1]"),
        (["sampling.repetition_penalty=0"], "key 'sampling.repetition_penalty': must be a finite number > 0"),
        (["sampling.repetition_penalty=.inf"], "key 'sampling.repetition_penalty': must be a finite number > 0"),
        (["sampling.stop=[END, '']"], "key 'sampling.stop.1': an empty stop string"),
        (
            ["policy.system_prompt=be brief", "policy.chat_template=false"],
            "key 'policy.system_prompt': a system prompt is a chat message",
        ),
        (
            ["policy.chat_template_kwargs={add_generation_prompt: false}"],
            "key 'policy.chat_template_kwargs.add_generation_prompt': is set by the prompt rule itself",
        ),
        (
            ["policy.chat_template_kwargs={system: be brief}"],
            "key 'policy.chat_template_kwargs.system': set policy.system_prompt instead",
        ),
    ],
)
def test_bad_sampling_and_template_controls_name_the_key(overrides, expected):
    with pytest.raises(RcsInputError) as err:
        load_config(os.path.join(REPO, "configs/tiny/k2.yaml"), overrides)
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_sampling_and_template_controls_default_to_off():
    cfg = load_config(os.path.join(REPO, "configs/tiny/k2.yaml"))
    s, p = cfg.sampling, cfg.policy
    assert (s.top_k, s.min_p, s.repetition_penalty, s.stop) == (0, 0.0, 1.0, [])
    assert p.system_prompt is None and p.chat_template_kwargs == {}
    cfg = load_config(
        os.path.join(REPO, "configs/tiny/k2.yaml"),
        [
            "sampling.top_k=20",
            "sampling.min_p=0.05",
            "sampling.repetition_penalty=1.1",
            'sampling.stop=["\\n\\n", END]',
            "policy.system_prompt=be brief",
            "policy.chat_template_kwargs={enable_thinking: false}",
        ],
    )
    assert (cfg.sampling.top_k, cfg.sampling.min_p, cfg.sampling.repetition_penalty) == (20, 0.05, 1.1)
    assert cfg.sampling.stop == ["\n\n", "END"]
    assert cfg.policy.system_prompt == "be brief" and cfg.policy.chat_template_kwargs == {"enable_thinking": False}


def test_qlora_needs_cuda_and_lora_and_no_zero3():
    k2 = os.path.join(REPO, "configs/tiny/k2.yaml")
    for overrides, fragment in [
        (["train.lora.quantization=4bit"], "set train.lora.r"),
        (["train.lora.r=8", "train.lora.quantization=4bit"], "needs CUDA"),
        (["train.lora.r=8", "train.lora.quantization=8bit", "train.use_gpu=true", "train.zero_stage=3"], "ZeRO-3"),
    ]:
        with pytest.raises(RcsInputError, match=fragment):
            load_config(k2, overrides)
    cfg = load_config(k2, ["train.lora.r=8", "train.lora.quantization=4bit", "train.use_gpu=true"])
    assert cfg.train.lora.quantization == "4bit" and cfg.train.uses_lora


def test_train_config_round_trips_through_a_worker_dict():
    import dataclasses

    from rcs_ray.config import TrainConfig

    t = load_config(
        os.path.join(REPO, "configs/tiny/k2.yaml"),
        ["train.lora.r=4", "train.lora.target_modules=[q_proj]", "train.report_to=[tensorboard]"],
    ).train
    assert TrainConfig.from_dict(dataclasses.asdict(t)) == t


def test_bad_files(tmp_path):
    with pytest.raises(RcsInputError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsampling: [1, 2\n")
    with pytest.raises(RcsInputError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(str(bad))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("name: x\nsampling:\n  temprature: 0.7\n")
    with pytest.raises(RcsInputError, match=r"unknown.yaml: key 'sampling.temprature'"):
        load_config(str(unknown))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- 1\n- 2\n")
    with pytest.raises(RcsInputError, match="must hold a mapping"):
        load_config(str(scalar))
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(RcsInputError, match="cycle"):
        load_config(str(loop))
    objective = tmp_path / "classifier.yaml"
    objective.write_text("objectives:\n  - name: safe\n    kind: classifier\n")
    with pytest.raises(RcsInputError, match=r"objectives.0.model"):
        load_config(str(objective))


def test_stage_train_overrides():
    from rcs_ray.config import stage_train, with_stage_train

    path = os.path.join(REPO, "configs/tiny/k2.yaml")
    cfg = load_config(path, ["stages.0.train={learning_rate: '6e-5', max_steps: 32}"])
    assert stage_train(cfg, 0).learning_rate == 6e-5 and stage_train(cfg, 0).max_steps == 32
    assert stage_train(cfg, 1) == cfg.train
    assert with_stage_train(cfg, 0).train.max_steps == 32 and cfg.train.max_steps == 64
    with pytest.raises(RcsInputError, match=r"stages.0.train.*lrr"):
        load_config(path, ["stages.0.train={lrr: 1}"])
    with pytest.raises(RcsInputError, match=r"stages.0.train.beta"):
        load_config(path, ["stages.0.train={beta: -1}"])


RM = ["objectives.1.kind=multi_head", "objectives.1.model=/rm", "objectives.1.function=null"]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["objectives.1.output=logitz"], "objectives.1.output"),
        (
            RM + ["objectives.1.engine=vllm", "objectives.1.output=rewards"],
            "vLLM's pooling runner reads classifier logits",
        ),
        (RM + ["objectives.1.dtype=float8"], "objectives.1.dtype"),
        (RM + ["objectives.1.chat_template=mine"], "objectives.1.chat_template"),
        (RM + ["objectives.1.max_length=1"], "objectives.1.max_length"),
        (
            RM
            + [
                "objectives.0.kind=multi_head",
                "objectives.0.model=/rm",
                "objectives.0.function=null",
                "objectives.0.trust_remote_code=true",
            ],
            "share /rm (one forward pass serves both) but differ in trust_remote_code",
        ),
        (
            ["objectives.1.kind=judge", "objectives.1.model=/j", "objectives.1.judge.template=no placeholders"],
            "needs a {response} placeholder",
        ),
        (
            ["objectives.1.kind=judge", "objectives.1.model=/j", "objectives.1.judge.template='{response} {x}'"],
            "only {prompt} and {response}",
        ),
        (
            ["objectives.1.kind=judge", "objectives.1.model=/j", "objectives.1.judge.mode=vote"],
            "objectives.1.judge.mode",
        ),
        (
            [
                "objectives.1.kind=implicit",
                "objectives.1.model=/p",
                "objectives.1.reference=/r",
                "objectives.1.engine=vllm",
            ],
            "a implicit objective runs on ['hf']",
        ),
        (["eval.judge={name: helpful, kind: judge, model: /j}"], "the judge needs its own"),
        (["eval.judge={name: j, kind: judge}"], "eval.judge.model"),
    ],
)
def test_reward_source_settings_are_checked(overrides, expected):
    with pytest.raises(RcsInputError) as err:
        load_config(os.path.join(REPO, "configs/tiny/k2.yaml"), overrides)
    assert expected in str(err.value), str(err.value)


def test_objectives_sharing_a_model_may_read_different_outputs():
    cfg = load_config(
        os.path.join(REPO, "configs/paper/pku_helpsteer_uf_k3.yaml"),
        ["objectives.2.output=score", "eval.judge={name: quality, kind: judge, model: /j}"],
    )
    assert [o.output for o in cfg.objectives] == ["end_scores", "rewards", "score"]
    assert cfg.eval.judge.judge.mode == "expected" and cfg.eval.judge.judge.scores[-1] == 10.0


def test_a_stage_enforces_the_objectives_of_the_stages_before_it_whatever_their_listed_order(tmp_path):
    from rcs_ray.config import aligned_before, scored_before, stage_objectives

    cfg = {
        "objectives": [
            {"name": "concise", "function": "m:c"},
            {"name": "helpful", "function": "m:h"},
            {"name": "harmless", "function": "m:s"},
        ],
        "stages": [{"objective": "harmless", "sample": False}, {"objective": "helpful"}, {"objective": "concise"}],
    }
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    c = load_config(str(tmp_path / "c.yaml"))
    assert [o.name for o in stage_objectives(c, 1)] == ["harmless", "helpful"]  # not [concise, helpful]
    assert [o.name for o in stage_objectives(c, 2)] == ["harmless", "helpful", "concise"]
    assert aligned_before(c, 0) == [] and aligned_before(c, 2) == ["harmless", "helpful"]
    # the two meanings of "earlier objectives": one per earlier stage (SPO's chain) vs each kept objective once
    history = ["harmless", "helpful", "harmless", "concise"]
    assert scored_before(history, "harmless") == ["helpful", "concise"]
    assert scored_before(history, "verbose") == ["harmless", "helpful", "concise"]
