"""Experiment tracking without Ray: names and values made trackable, one run per stage found again on a rerun, and the
stored values read back with each tracker's own reader (TensorBoard events, MLflow's client on a file store)."""

import os

import pytest

from rcs_ray import tracking
from rcs_ray.config import load_config
from rcs_ray.errors import RcsInputError

pytestmark = pytest.mark.unit

ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR", "WANDB_ENTITY")


@pytest.fixture(autouse=True)
def _no_tracker_env(monkeypatch):
    """Each test starts without the trackers' variables, whatever the shell that runs pytest exports."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_numbers_keeps_finite_numeric_leaves_and_makes_names_legal():
    got = tracking.numbers(
        {
            "sampling": {
                "failure_rate": 0.25,
                "pair_sources": {"sampled>original": 3},
                "engine": "hf",
                "bad": float("nan"),
                "adaptive": True,
            },
            "pairs": 7,
        }
    )
    assert got == {
        "sampling/failure_rate": 0.25,
        "sampling/pair_sources/sampled_original": 3.0,
        "sampling/adaptive": 1.0,
        "pairs": 7.0,
    }


def test_flatten_joins_keys_and_writes_lists_as_json():
    assert tracking.flatten({"train": {"lora": {"r": 8, "target_modules": ["q", "v"]}, "beta": 0.1}}) == {
        "train.lora.r": 8,
        "train.lora.target_modules": '["q", "v"]',
        "train.beta": 0.1,
    }


def test_nothing_is_tracked_without_report_to(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}"])
    assert tracking.settings_for(cfg, "stage1") is None
    tracking.log_once(None, {"x": 1.0})  # a no-op
    assert not os.path.exists(tmp_path / "tracking")


def test_a_missing_tracker_package_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(RcsInputError, match=r"'wandb' needs the wandb package: pip install 'rcs-ray\[tracking\]'"):
        tracking.check_installed(["tensorboard", "wandb"])


def test_stage_runs_are_grouped_and_found_again_on_a_rerun(tmp_path):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(None, ["name=wf", f"output_dir={tmp_path / 'out'}", "train.report_to=[tensorboard,mlflow]"])
    s1 = tracking.settings_for(cfg, "stage1", params={"train": {"beta": 0.1}})
    assert s1.dir == str(tmp_path / "out" / "tracking") and s1.group == "wf"
    assert s1.mlflow_experiment == "wf" and s1.wandb_project == "wf"
    tracking.log_once(s1, {"sampling": {"failure_rate": 0.5, "pair_sources": {"sampled>original": 2}}})
    t = tracking.Tracker(s1)  # the stage's training opens the same run again
    for step in (1, 2):
        t.log({"train/loss": 1.0 / step}, step)
    t.close()
    tracking.log_once(tracking.settings_for(cfg, "eval"), {"eval": {"policy": {"helpful": {"mean": 1.5}}}})

    client = MlflowClient(tracking_uri="file://" + os.path.join(s1.dir, "mlruns"))
    exp = client.get_experiment_by_name("wf")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"wf", "stage1", "eval"}
    parent = runs["wf"].info.run_id
    assert all(runs[n].data.tags["mlflow.parentRunId"] == parent for n in ("stage1", "eval"))
    stage = runs["stage1"].data
    assert (
        stage.metrics["sampling/failure_rate"] == 0.5 and stage.metrics["sampling/pair_sources/sampled_original"] == 2
    )
    assert stage.metrics["train/loss"] == 0.5 and stage.params == {"train.beta": "0.1"}
    assert runs["eval"].data.metrics["eval/policy/helpful/mean"] == 1.5

    acc = EventAccumulator(os.path.join(s1.dir, "tensorboard", "wf", "stage1"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1.0), (2, 0.5)]
    assert acc.Scalars("sampling/failure_rate")[0].value == 0.5


# ------------------------------------------------------------------------------ the trackers' environment variables
def _settings(tmp_path, *overrides):
    cfg = load_config(None, ["name=wf", f"output_dir={tmp_path / 'out'}", "train.report_to=[tensorboard]", *overrides])
    return tracking.settings_for(cfg, "stage1")


def test_defaults_when_neither_config_nor_environment_says(tmp_path):
    s = _settings(tmp_path)
    where = str(tmp_path / "out" / "tracking")
    assert (s.dir, s.wandb_dir, s.mlflow_uri) == (where, where, "file://" + os.path.join(where, "mlruns"))
    assert (s.mlflow_experiment, s.wandb_project, s.wandb_mode, s.wandb_entity) == ("wf", "wf", "offline", None)


# (variable, value it is given, config key that overrides it, the config's value, settings field)
VARIABLES = [
    ("MLFLOW_TRACKING_URI", "http://mlflow.example:5000", "mlflow_uri", "sqlite:///x/mlflow.db", "mlflow_uri"),
    ("MLFLOW_EXPERIMENT_NAME", "exp-from-env", "project", "cfg-project", "mlflow_experiment"),
    ("WANDB_PROJECT", "proj-from-env", "project", "cfg-project", "wandb_project"),
    ("WANDB_DIR", "/tmp/wandb-from-env", "dir", "/tmp/cfg-dir", "wandb_dir"),
    ("WANDB_MODE", "online", "wandb_mode", "disabled", "wandb_mode"),
    ("WANDB_ENTITY", "team-from-env", "wandb_entity", "cfg-team", "wandb_entity"),
]


@pytest.mark.parametrize("var,value,key,cfg_value,attr", VARIABLES, ids=[v[0] for v in VARIABLES])
def test_each_variable_applies_when_the_config_is_silent(tmp_path, monkeypatch, var, value, key, cfg_value, attr):
    monkeypatch.setenv(var, value)
    assert getattr(_settings(tmp_path), attr) == value


@pytest.mark.parametrize("var,value,key,cfg_value,attr", VARIABLES, ids=[v[0] for v in VARIABLES])
def test_a_config_value_beats_its_variable_and_only_its_own(tmp_path, monkeypatch, var, value, key, cfg_value, attr):
    for v, val, *_ in VARIABLES:
        monkeypatch.setenv(v, val)
    s = _settings(tmp_path, f"tracking.{key}={cfg_value}")
    assert getattr(s, attr) == cfg_value
    for v, val, k, _, a in VARIABLES:
        if k != key:  # every key the config leaves null still follows its variable
            assert getattr(s, a) == val, (a, v)


def test_an_empty_variable_counts_as_unset(tmp_path, monkeypatch):
    for v in ENV:
        monkeypatch.setenv(v, "")
    s = _settings(tmp_path)
    assert (s.mlflow_experiment, s.wandb_mode, s.wandb_dir) == ("wf", "offline", str(tmp_path / "out" / "tracking"))
    assert s.mlflow_uri.startswith("file://") and s.wandb_entity is None


def test_mlflow_writes_where_the_environment_points(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    store = "file://" + str(tmp_path / "elsewhere")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "exp-from-env")
    cfg = load_config(None, ["name=wf", f"output_dir={tmp_path / 'out'}", "train.report_to=[mlflow]"])
    tracking.log_once(tracking.settings_for(cfg, "stage1"), {"x": 1.0})
    exp = MlflowClient(tracking_uri=store).get_experiment_by_name("exp-from-env")
    assert exp is not None
    runs = MlflowClient(tracking_uri=store).search_runs([exp.experiment_id])
    assert {r.info.run_name for r in runs} == {"wf", "stage1"}
    assert not os.path.exists(tmp_path / "out" / "tracking" / "mlruns")


def test_wandb_is_opened_with_the_resolved_project_dir_mode_and_entity(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    seen = {}

    class Run:
        config = type("C", (), {"update": lambda *a, **k: None})()

    monkeypatch.setattr(wandb, "init", lambda **kw: seen.update(kw) or Run())
    for var, value in [
        ("WANDB_PROJECT", "p"),
        ("WANDB_DIR", str(tmp_path / "wb")),
        ("WANDB_MODE", "disabled"),
        ("WANDB_ENTITY", "team"),
    ]:
        monkeypatch.setenv(var, value)
    cfg = load_config(None, ["name=wf", f"output_dir={tmp_path / 'out'}", "train.report_to=[wandb]"])
    tracking.Tracker(tracking.settings_for(cfg, "stage1"))
    assert (seen["project"], seen["mode"], seen["entity"]) == ("p", "disabled", "team")
    assert seen["dir"] == str(tmp_path / "wb")
    assert os.path.isdir(tmp_path / "wb")
