"""Config fields document themselves (``doc_field``), ``rcs-ray config --explain KEY`` prints a key's type, default and
doc, and a stage's ``train:`` is typed: an unknown key fails at load time, a key set there overrides the top level."""

import dataclasses
import os

import pytest

from rcs_ray.config import RunConfig, load_config, stage_train
from rcs_ray.config.explain import config_keys, section_of
from rcs_ray.errors import RcsInputError

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K2 = os.path.join(REPO, "configs/tiny/k2.yaml")


def _dataclasses(cls=RunConfig, seen=None):
    """Every config dataclass reachable from ``cls`` (sections, list items, optional sections)."""
    seen = seen if seen is not None else {}
    seen[cls.__name__] = cls
    for _, _, hint in config_keys(cls):
        inner = section_of(hint)
        if inner is not None and inner.__name__ not in seen:
            _dataclasses(inner, seen)
    return seen


def test_every_field_of_every_config_dataclass_has_a_doc():
    classes = _dataclasses()
    assert {
        "RunConfig",
        "TrainConfig",
        "LoraConfig",
        "StageConfig",
        "StageTrainConfig",
        "StageLoraConfig",
        "ObjectiveConfig",
        "JudgeConfig",
        "DataConfig",
        "SamplingConfig",
        "AdaptiveConfig",
    } <= set(classes)
    undocumented = [
        f"{name}.{f.name}"
        for name, cls in classes.items()
        for f in dataclasses.fields(cls)
        if not f.metadata.get("doc", "").strip()
    ]
    assert not undocumented
    assert all(cls.__doc__ and cls.__doc__.strip() for cls in classes.values())


def test_the_stage_train_overrides_have_every_train_field():
    from rcs_ray.config import LoraConfig, StageTrainConfig, TrainConfig
    from rcs_ray.config.stage import StageLoraConfig

    assert [f.name for f in dataclasses.fields(StageTrainConfig)] == [f.name for f in dataclasses.fields(TrainConfig)]
    assert [f.name for f in dataclasses.fields(StageLoraConfig)] == [f.name for f in dataclasses.fields(LoraConfig)]
    assert StageTrainConfig().overrides() == {}


@pytest.mark.parametrize(
    "key, type_, default, doc",
    [
        ("train.beta", "float", "0.1", "KL strength"),
        ("sampling.n", "int", "8", "Candidates per prompt"),
        (
            "stages.0.train.max_steps",
            "Optional[int]",
            "null",
            "This stage's train.max_steps (unset: the top-level one)",
        ),
        ("stages.train.lora.r", "Optional[int]", "null", "LoRA rank"),
        ("objectives.name", "str", "required", "unique"),
        ("eval.judge.judge.mode", "str", '"expected"', "parse"),
    ],
)
def test_explain_prints_type_default_and_doc(key, type_, default, doc, capsys):
    from rcs_ray.cli import main

    assert main(["config", "--explain", key]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == ".".join(p for p in key.split(".") if not p.isdigit())
    assert lines[1] == f"  type:    {type_}" and lines[2] == f"  default: {default}"
    assert doc in " ".join(line.strip() for line in lines[3:])


def test_explain_a_section_lists_its_keys(capsys):
    from rcs_ray.cli import main

    assert main(["config", "--explain", "train.lora"]) == 0
    out = capsys.readouterr().out
    assert "  type:    LoraConfig" in out and "keys: r, alpha, dropout, target_modules, quantization" in out


def test_explain_an_unknown_key_is_one_line_exit_2(capsys):
    from rcs_ray.cli import main

    assert main(["config", "--explain", "train.betta"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown config key 'train.betta'")
    assert "train.beta" in err  # a close match


def test_unknown_key_in_a_stage_train_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {K2}\nstages:\n  - objective: harmless\n    train:\n      learnig_rate: 1.0e-5\n")
    with pytest.raises(RcsInputError) as err:
        load_config(str(bad))
    msg = str(err.value)
    assert "key 'stages.0.train.learnig_rate'" in msg and "\n" not in msg
    with pytest.raises(RcsInputError, match=r"key 'stages\.1\.train\.lora\.rr'"):
        load_config(K2, ["stages.1.train.lora.rr=4"])


def test_a_stage_train_override_merges_onto_the_top_level():
    # k2.yaml: train has learning_rate 5e-5, max_steps 64, lora.r 0; stage 1 sets learning_rate 6e-5, max_steps 32
    cfg = load_config(K2, ["stages.0.train.lora.r=4", "train.lora.alpha=32", "stages.1.train.beta=0.25"])
    first, second = stage_train(cfg, 0), stage_train(cfg, 1)
    assert (first.learning_rate, first.max_steps, first.beta) == (6e-5, 32, 0.1)
    assert (first.lora.r, first.lora.alpha) == (4, 32.0)  # a nested key merges into the top-level lora
    assert (second.learning_rate, second.max_steps, second.beta, second.lora.r) == (5e-5, 64, 0.25, 0)
    assert cfg.stages[0].train.overrides() == {"learning_rate": 6e-5, "max_steps": 32, "lora": {"r": 4}}
    assert cfg.train.beta == 0.1 and cfg.train.lora.r == 0  # the top level is untouched
