"""Experiment tracking without Ray: names and values made trackable, one run per stage found again on a rerun, and the
stored values read back with each tracker's own reader (TensorBoard events, MLflow's client on a file store)."""

import os

import pytest

from rcs_ray import tracking
from rcs_ray.config import load_config
from rcs_ray.errors import RcsInputError

pytestmark = pytest.mark.unit


def test_numbers_keeps_finite_numeric_leaves_and_makes_names_legal():
    got = tracking.numbers({"sampling": {"failure_rate": 0.25, "pair_sources": {"sampled>original": 3},
                                         "engine": "hf", "bad": float("nan"), "adaptive": True}, "pairs": 7})
    assert got == {"sampling/failure_rate": 0.25, "sampling/pair_sources/sampled_original": 3.0,
                   "sampling/adaptive": 1.0, "pairs": 7.0}


def test_flatten_joins_keys_and_writes_lists_as_json():
    assert tracking.flatten({"train": {"lora": {"r": 8, "target_modules": ["q", "v"]}, "beta": 0.1}}) == {
        "train.lora.r": 8, "train.lora.target_modules": '["q", "v"]', "train.beta": 0.1}


def test_nothing_is_tracked_without_report_to(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}"])
    assert tracking.settings_for(cfg, "stage1") is None
    tracking.log_once(None, {"x": 1.0})                      # a no-op
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
    assert s1.dir == str(tmp_path / "out" / "tracking") and s1.group == "wf" and s1.project == "wf"
    tracking.log_once(s1, {"sampling": {"failure_rate": 0.5, "pair_sources": {"sampled>original": 2}}})
    t = tracking.Tracker(s1)                                   # the stage's training opens the same run again
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
    assert stage.metrics["sampling/failure_rate"] == 0.5 and stage.metrics["sampling/pair_sources/sampled_original"] == 2
    assert stage.metrics["train/loss"] == 0.5 and stage.params == {"train.beta": "0.1"}
    assert runs["eval"].data.metrics["eval/policy/helpful/mean"] == 1.5

    acc = EventAccumulator(os.path.join(s1.dir, "tensorboard", "wf", "stage1"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1.0), (2, 0.5)]
    assert acc.Scalars("sampling/failure_rate")[0].value == 0.5
