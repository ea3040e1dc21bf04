"""Iterative RCS within a stage (``stages.1.iterations: 2``) end to end on the tiny world: each iteration's files,
iteration 2 sampled from iteration 1's policy and trained against the stage's starting policy, as many prompts as
one-shot RCS, the stage's policy where the next stage and eval read it, and a rerun that skips every iteration."""

import json
import os

import pandas as pd
import pytest

from rcs_ray.config import load_config
from rcs_ray.workflow import run_workflow

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = ["iter1/sample", "iter1/train", "iter2/sample", "iter2/train"]


def cfg_for(tmp_path, *extra):
    return load_config(
        os.path.join(REPO, "configs/tiny/k2.yaml"),
        [
            f"output_dir={tmp_path}",
            f"tinyworld.cache_dir={os.path.join(REPO, '.cache', 'tinyworld')}",
            "stages.0.data.limit=32",
            "stages.0.train.max_steps=1",
            "stages.1.data.limit=16",
            "stages.1.iterations=2",
            "train.max_steps=1",
            "train.batch_size=2",
            "train.num_workers=1",  # multi-worker training: tests/ray/test_train.py and the cluster tier
            "sampling.n=4",
            *extra,
        ],
    )


def test_two_iterations_end_to_end_and_resumed(tiny_world, ray_session, tmp_path):
    from rcs_ray.data import read_prompts
    from rcs_ray.user_paths import resolve_data

    cfg = cfg_for(tmp_path)
    first = run_workflow(cfg, progress=False)
    stage1, stage2 = first.stages
    steps = json.loads(open(stage2.manifest).read())["steps"]
    assert sorted(steps) == STEPS and all(e["status"] == "done" for e in steps.values())
    it1, it2 = (os.path.join(tmp_path, "stage2", f"iter{i}") for i in (1, 2))
    for d in (it1, it2):
        assert os.path.isfile(os.path.join(d, "prompts.jsonl"))
        assert os.path.isfile(os.path.join(d, "sampling", "pairs.parquet"))
    # iteration 1 samples from the stage-1 policy, iteration 2 from iteration 1's; the last trains into stage2/train
    iter1_model = os.path.join(it1, "train", "model")
    assert steps["iter1/sample"]["inputs"]["policy"] == stage1.policy
    assert steps["iter1/train"]["outputs"]["model"] == iter1_model and os.path.isfile(iter1_model + "/config.json")
    assert steps["iter2/sample"]["inputs"]["policy"] == iter1_model
    assert steps["iter2/train"]["inputs"]["identity"]["policy"] == iter1_model
    assert stage2.policy == os.path.join(tmp_path, "stage2", "train", "model")
    # every iteration's reference is the stage's starting policy
    for i, d in ((1, os.path.join(it1, "train")), (2, os.path.join(tmp_path, "stage2", "train"))):
        assert steps[f"iter{i}/train"]["inputs"]["identity"]["reference"] == stage1.policy
        summary = json.loads(open(os.path.join(d, "train_summary.json")).read())
        assert summary["reference"] in (stage1.policy, "precomputed") and summary["pairs"] > 0
    # the slices: disjoint, together the one-shot stage's prompts; each iteration's pairs come from its own slice
    slices = [pd.read_json(os.path.join(d, "prompts.jsonl"), lines=True)["prompt_id"].tolist() for d in (it1, it2)]
    one_shot = [r["prompt_id"] for r in read_prompts(resolve_data(cfg.stages[1].data, cfg.tinyworld)).rows]
    assert not set(slices[0]) & set(slices[1]) and sorted(slices[0] + slices[1]) == sorted(one_shot)
    assert {len(s) for s in slices} == {8}
    for d, ids in zip((it1, it2), slices):
        assert set(pd.read_parquet(os.path.join(d, "sampling", "pairs.parquet"))["prompt_id"]) <= set(ids)
    assert stage2.stats["sample"]["prompts"] == len(one_shot) == 16
    assert [it["sampled_from"] for it in stage2.stats["iterations"]] == [stage1.policy, iter1_model]

    again = run_workflow(cfg_for(tmp_path), progress=False)
    assert [s.skipped for s in again.stages] == [["train"], STEPS]
    assert again.stages[1].policy == stage2.policy
