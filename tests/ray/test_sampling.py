"""The sampling pipeline on local Ray with the tiny world: outputs, RC from the parquet alone, invariance,
failure recording, a crashed actor, adaptive resampling."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from rcs_ray import rc
from rcs_ray.config import load_config
from rcs_ray.sampling import run
from rcs_ray.tinyworld.rewards import harmless, helpful

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_cfg(tmp_path, *overrides, limit=24):
    return load_config(os.path.join(REPO, "configs/tiny/k2.yaml"), [
        f"output_dir={tmp_path}", f"tinyworld.cache_dir={os.path.join(REPO, '.cache', 'tinyworld')}",
        f"stages.1.data.limit={limit}", "sampling.batch_size=8", *overrides])


def read(path):
    return pq.read_table(path).to_pylist()


def input_ids(cfg):
    from rcs_ray.sampling.pipeline import read_groups

    return [r["prompt_id"] for r in read_groups(cfg.stages[1].data, cfg.tinyworld)[0]]


@pytest.fixture(scope="module")
def default_run(tiny_world, ray_session, tmp_path_factory):
    cfg = tiny_cfg(tmp_path_factory.mktemp("default"))
    return cfg, run(cfg, progress=False)


def test_outputs_account_for_every_prompt(default_run):
    cfg, result = default_run
    pairs, failed = read(result.pairs), read(result.failed)
    ids = [p["prompt_id"] for p in pairs] + [f["prompt_id"] for f in failed]
    assert sorted(ids) == sorted(input_ids(cfg)) and len(set(ids)) == len(ids)
    stats = json.loads(open(result.stats_path).read())
    assert stats["prompts"] == 24 and stats["pairs"] == len(pairs) and stats["failed"] == len(failed)
    assert stats["tokens_generated"] > 0 and stats["candidates_sampled"] == 24 * cfg.sampling.n
    assert set(stats["actor_seconds_by_stage"]) == {"generate", "score", "rc_filter"}
    assert len(pairs) >= 12, stats   # ties allowed on harmless: most prompts yield a pair at n = 8


def test_every_pair_is_rc_from_the_parquet_alone(default_run):
    cfg, result = default_run
    margin = cfg.stages[1].rc.margin
    for p in read(result.pairs):
        assert p["target"] == "helpful"
        # rewards recomputed from the texts equal the recorded ones (rule objectives)
        assert p["chosen_rewards"] == [harmless(p["prompt"], p["chosen"]), helpful(p["prompt"], p["chosen"])]
        assert p["rejected_rewards"] == [harmless(p["prompt"], p["rejected"]), helpful(p["prompt"], p["rejected"])]
        assert p["chosen_rewards"][1] > p["rejected_rewards"][1]                   # strict win on the target
        assert rc.is_consistent(p["chosen_rewards"], p["rejected_rewards"], enforce=[0], margin=margin)


def test_pairs_invariant_to_batch_size_and_actor_count(default_run, tmp_path):
    cfg, result = default_run
    other = run(tiny_cfg(tmp_path, "sampling.batch_size=5", "sampling.num_actors=2"), progress=False)
    assert read(other.pairs) == read(result.pairs)
    assert read(other.failed) == read(result.failed)


def test_multi_head_reward_model_and_failures_recorded(tiny_world, ray_session, tmp_path):
    # helpful from the 3-head tiny RM (head 1), harmless from a rule that returns NaN on "quickly" prompts, and a
    # max_tokens that makes every prompt too long for the policy's 512 positions on one prompt set.
    cfg = tiny_cfg(tmp_path, "objectives.0.function=tests.ray.rules:nan_for_quickly",
                   "objectives.1.kind=multi_head", "objectives.1.model=tinyworld:reward_model", "objectives.1.head=1")
    result = run(cfg, progress=False)
    pairs, failed = read(result.pairs), read(result.failed)
    assert sorted(p["prompt_id"] for p in pairs + failed) == sorted(input_ids(cfg))
    quick = [f for f in failed if "quickly" in f["prompt"]]
    assert quick and all(f["reason"] == "non_finite_reward" and "harmless" in f["detail"] for f in quick)
    assert not any("quickly" in p["prompt"] for p in pairs)
    assert pairs and all(isinstance(p["chosen_rewards"][1], float) for p in pairs)
    too_long = run(tiny_cfg(tmp_path / "long", "sampling.max_tokens=600"), progress=False)
    failed = read(too_long.failed)
    assert len(failed) == 24 and {f["reason"] for f in failed} == {"prompt_too_long"}
    assert "max_model_len 512" in failed[0]["detail"]


def test_crashed_scorer_actor_is_restarted(tiny_world, ray_session, tmp_path):
    from tests.ray.rules import DIE_MARKER

    if os.path.exists(DIE_MARKER):
        os.remove(DIE_MARKER)
    cfg = tiny_cfg(tmp_path, "objectives.0.function=tests.ray.rules:harmless_die_once")
    result = run(cfg, progress=False)
    assert os.path.exists(DIE_MARKER)                     # the actor did die once
    pairs, failed = read(result.pairs), read(result.failed)
    ids = [p["prompt_id"] for p in pairs + failed]
    assert sorted(ids) == sorted(input_ids(cfg)) and len(set(ids)) == len(ids)


def test_adaptive_resampling_recovers_failed_prompts(tiny_world, ray_session, tmp_path):
    strict = ["stages.1.rc.margin=0", "sampling.n=2"]
    fixed = run(tiny_cfg(tmp_path / "fixed", *strict, limit=32), progress=False).stats
    adaptive = run(tiny_cfg(tmp_path / "adaptive", *strict, "sampling.adaptive.enabled=true",
                            "sampling.adaptive.n_max=8", "sampling.adaptive.rounds=2", limit=32),
                   progress=False).stats
    assert [r["n"] for r in adaptive["rounds"]][:1] == [2]
    assert adaptive["failed"] < fixed["failed"], (fixed["failed_by_reason"], adaptive["failed_by_reason"])
    assert adaptive["rounds"][0]["tokens_generated"] == fixed["tokens_generated"]   # same first-round samples
    assert sum(r["tokens_generated"] for r in adaptive["rounds"]) == adaptive["tokens_generated"]
    assert adaptive["rounds"][1]["prompts"] == adaptive["rounds"][0]["carried"]
