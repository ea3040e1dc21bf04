"""The sequential workflow on the tiny world, one run directory through its whole life: both stages end to end,
manifests, resuming a crashed stage with a longer schedule, skipping what did not change (logging, placement and eval
settings change nothing), a damaged stage-1 manifest and stage-2 stats file set aside with a warning and redone,
re-running a changed stage -- here stage 2 changed to iterative RCS (``stages.1.iterations: 2``): each iteration's
files, iteration 2 sampled from iteration 1's policy and trained against the stage's starting policy, as many prompts
as one-shot RCS, the stage's policy where eval reads it, and a rerun that skips every iteration -- the evaluation of
the resulting policies, and a truncated checkpoint that `rcs-ray train` names in one line. (One directory for all of
it: each run of the workflow starts Ray Train and actor pools afresh, the suite's largest fixed cost.)"""

import json
import os

import pandas as pd
import pytest

from rcs_ray.config import load_config
from rcs_ray.workflow import run_workflow

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = [
    "stages.0.data.limit=64",
    "stages.0.train={max_steps: 3, save_steps: 1, max_failures: 0}",
    "stages.1.data.limit=16",
    "train.max_steps=2",
    "train.batch_size=4",
    "train.num_workers=1",  # multi-worker training: tests/ray/test_train.py and the cluster tier
    "sampling.n=4",
    "eval.prompts.limit=8",
    "eval.n=2",
]
ITERATIONS = ["iter1/sample", "iter1/train", "iter2/sample", "iter2/train"]


K2 = os.path.join(REPO, "configs/tiny/k2.yaml")


def overrides(tmp_path, *extra):
    """The run's overrides: the same for run_workflow (:func:`cfg_for`) and the CLI."""
    cache = os.path.join(REPO, ".cache", "tinyworld")
    return [f"output_dir={tmp_path}", f"tinyworld.cache_dir={cache}", *SMALL, *extra]


def cfg_for(tmp_path, *extra):
    return load_config(K2, overrides(tmp_path, *extra))


def test_workflow_runs_skips_and_reruns_what_changed(tiny_world, ray_session, tmp_path, monkeypatch, capsys):
    from ray.train import TrainingFailedError

    from rcs_ray.train.launch import FAIL_ENV

    monkeypatch.setenv(FAIL_ENV, "2")  # stage 1 crashes before its step 2 (after the step-1 save)
    with pytest.raises(TrainingFailedError, match="injected worker failure before step 2"):
        run_workflow(cfg_for(tmp_path, "stages.0.train.max_steps=2"), progress=False)
    monkeypatch.delenv(FAIL_ENV)
    cfg = cfg_for(tmp_path)  # and the rerun asks for one step more: it continues
    first = run_workflow(cfg, progress=False)
    assert [s.skipped for s in first.stages] == [[], []]
    stage1 = json.loads(open(os.path.join(tmp_path, "stage1", "train", "train_summary.json")).read())
    assert stage1["steps"] == 3 and stage1["resumed_from_step"] == 1
    m1 = json.loads(open(first.stages[0].manifest).read())
    m2 = json.loads(open(first.stages[1].manifest).read())
    assert set(m1["steps"]) == {"train"} and set(m2["steps"]) == {"sample", "train"}
    # stage 2 samples from the stage-1 policy and trains against it as the reference
    assert m2["steps"]["sample"]["inputs"]["policy"] == first.stages[0].policy
    summary = json.loads(open(m2["steps"]["train"]["outputs"]["summary"]).read())
    assert summary["reference"] in (first.stages[0].policy, "precomputed") and summary["pairs"] > 0
    assert os.path.isfile(os.path.join(first.stages[1].policy, "config.json"))

    # only logging, placement, pool sizes and eval settings changed: everything reused
    again = run_workflow(
        cfg_for(
            tmp_path,
            "train.log_steps=5",
            "sampling.batch_size=8",
            "sampling.num_actors=1",
            "train.ref_batch_size=8",
            "objectives.0.num_cpus=0.5",
            "eval.n=3",
        ),
        progress=False,
    )
    assert [s.skipped for s in again.stages] == [["train"], ["sample", "train"]]
    assert [s.policy for s in again.stages] == [s.policy for s in first.stages]
    damaged_records_are_set_aside_and_redone(cfg, tmp_path, capsys)

    # stage 2 changed (now two iterations): stage 1 is kept, stage 2 runs again
    iterative = cfg_for(tmp_path, "stages.1.iterations=2")
    changed = run_workflow(iterative, progress=False)
    assert changed.stages[0].skipped == ["train"] and changed.stages[1].skipped == []
    check_iterations(iterative, changed, tmp_path)
    resumed = run_workflow(iterative, progress=False)
    assert [s.skipped for s in resumed.stages] == [["train"], ITERATIONS]
    assert resumed.stages[1].policy == changed.stages[1].policy

    from rcs_ray.evaluate import evaluate

    result = evaluate(cfg, {"base": tiny_world.policy, "stage2": changed.stages[1].policy}, reference="base")
    data = json.loads(open(result.json).read())
    assert data["prompts"] == 8 and data["n"] == 2
    assert set(data["metrics"]["stage2"]["win_rate_vs_base"]) == {"harmless", "helpful"}
    for policy in ("base", "stage2"):  # a share of the 8 x 2 samples: k / 16
        rate = data["metrics"][policy]["rate"]["harmless>=0"]
        assert 0.0 <= rate <= 1.0 and rate * 16 == pytest.approx(round(rate * 16), abs=1e-9)
    assert os.path.getsize(result.plot) > 1000
    a_truncated_checkpoint_is_one_line(tmp_path, capsys)


def check_iterations(cfg, result, tmp_path):
    """Stage 2 as two iterations: each iteration's files; iteration 1 samples from the stage-1 policy, iteration 2 from
    iteration 1's; every iteration trains against the stage's starting policy; the slices are disjoint and together
    the one-shot stage's prompts; the last iteration trains into stage2/train."""
    from rcs_ray.data import read_prompts
    from rcs_ray.user_paths import resolve_data

    stage1, stage2 = result.stages
    steps = json.loads(open(stage2.manifest).read())["steps"]
    assert sorted(steps) == ITERATIONS and all(e["status"] == "done" for e in steps.values())
    it1, it2 = (os.path.join(tmp_path, "stage2", f"iter{i}") for i in (1, 2))
    for d in (it1, it2):
        assert os.path.isfile(os.path.join(d, "prompts.jsonl"))
        assert os.path.isfile(os.path.join(d, "sampling", "pairs.parquet"))
    iter1_model = os.path.join(it1, "train", "model")
    assert steps["iter1/sample"]["inputs"]["policy"] == stage1.policy
    assert steps["iter1/train"]["outputs"]["model"] == iter1_model and os.path.isfile(iter1_model + "/config.json")
    assert steps["iter2/sample"]["inputs"]["policy"] == iter1_model
    assert steps["iter2/train"]["inputs"]["identity"]["policy"] == iter1_model
    assert stage2.policy == os.path.join(tmp_path, "stage2", "train", "model")
    for i, d in ((1, os.path.join(it1, "train")), (2, os.path.join(tmp_path, "stage2", "train"))):
        assert steps[f"iter{i}/train"]["inputs"]["identity"]["reference"] == stage1.policy
        summary = json.loads(open(os.path.join(d, "train_summary.json")).read())
        assert summary["reference"] in (stage1.policy, "precomputed") and summary["pairs"] > 0
    slices = [pd.read_json(os.path.join(d, "prompts.jsonl"), lines=True)["prompt_id"].tolist() for d in (it1, it2)]
    one_shot = [r["prompt_id"] for r in read_prompts(resolve_data(cfg.stages[1].data, cfg.tinyworld)).rows]
    assert not set(slices[0]) & set(slices[1]) and sorted(slices[0] + slices[1]) == sorted(one_shot)
    assert {len(s) for s in slices} == {8}
    for d, ids in zip((it1, it2), slices):
        assert set(pd.read_parquet(os.path.join(d, "sampling", "pairs.parquet"))["prompt_id"]) <= set(ids)
    assert stage2.stats["sample"]["prompts"] == len(one_shot) == 16
    assert [it["sampled_from"] for it in stage2.stats["iterations"]] == [stage1.policy, iter1_model]


def damaged_records_are_set_aside_and_redone(cfg, tmp_path, capsys):
    """A finished run whose stage-1 manifest was cut by a full disk and whose stage-2 stats file is half written: the
    rerun sets both aside with a warning naming the file, redoes what they recorded (the same pairs) and finishes.
    (The same faults at the storage layer: tests/unit/test_outputs_and_damage.py.)"""
    manifest = tmp_path / "stage1" / "manifest.json"
    sampling = tmp_path / "stage2" / "sampling"
    with open(manifest, "r+b") as fh:
        fh.truncate(40)
    (sampling / "stats.json").write_text('{"stage": 2, "pairs":')
    first_pairs = (sampling / "pairs.parquet").read_bytes()
    capsys.readouterr()
    redone = run_workflow(cfg, progress=False)
    out = capsys.readouterr().out
    assert f"warning: manifest {manifest} cannot be read: set aside" in out
    assert f"warning: sample output {sampling / 'stats.json'} cannot be read: set aside" in out
    assert [s.skipped for s in redone.stages] == [[], ["train"]]  # the same pairs: stage 2's training stands
    assert json.loads((sampling / "stats.json").read_text())["prompts"] == 16  # sampled again
    assert (sampling / "pairs.parquet").read_bytes() == first_pairs
    assert json.loads(manifest.read_text())["steps"]["train"]["status"] == "done"  # recorded again


def a_truncated_checkpoint_is_one_line(tmp_path, capsys):
    """A truncated Ray Train checkpoint file: `rcs-ray train` stops with one line naming it and the remedy."""
    from rcs_ray.cli import main

    ckpts = tmp_path / "stage1" / "train" / "checkpoints" / "tiny-k2-stage1"
    state = sorted(ckpts.glob("checkpoint_*/deepspeed/mp_rank_00_model_states.pt"))[-1]
    with open(state, "r+b") as fh:
        fh.truncate(1000)
    capsys.readouterr()
    assert main(["train", K2, *overrides(tmp_path), "--stage", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert errors[0].startswith(f"error: {state} cannot be read (") and f"remove {ckpts} to train" in errors[0]
