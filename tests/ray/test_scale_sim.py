"""The simulated engine through the real Ray Data sampling pipeline (as benchmarks/scale_sim.py runs it): every
prompt is accounted for and every pair is reward-consistent, recomputed from its texts alone."""

import json

import pyarrow.parquet as pq
import pytest

from benchmarks import sim
from rcs_ray import rc
from rcs_ray.config import load_config
from rcs_ray.sampling import run

pytestmark = pytest.mark.ray

PROMPTS = 12


def sim_config(tmp_path):
    data = tmp_path / "prompts.jsonl"
    with open(data, "w") as fh:
        for i in range(PROMPTS):
            fh.write(
                json.dumps({"prompt": f"question {i} " + "word " * 20, "chosen": f"yes {i}", "rejected": f"no {i}"})
                + "\n"
            )
    (tmp_path / "policy").mkdir()
    config = tmp_path / "sim.yaml"
    config.write_text(f"""
output_dir: {tmp_path}/out
policy: {{path: {tmp_path}/policy}}
objectives:
  - {{name: a, kind: rule, function: "benchmarks.sim:reward_a"}}
  - {{name: b, kind: rule, function: "benchmarks.sim:reward_b"}}
stages:
  - {{objective: a, sample: false, data: {{path: {data}}}}}
  - {{objective: b, data: {{path: {data}}}, rc: {{strategy: rcs, margin: 0.0}}}}
sampling: {{n: 4, max_tokens: 32, batch_size: 4, num_actors: 2}}
""")
    return load_config(str(config), ["sampling.engine=benchmarks.sim:SimEngine"])  # the extension point


def test_sim_engine_through_the_pipeline_gives_rc_pairs(ray_session, tmp_path):
    cfg = sim_config(tmp_path)
    result = run(cfg, stage=1, progress=False)
    pairs, failed = pq.read_table(result.pairs).to_pylist(), pq.read_table(result.failed).to_pylist()
    ids = sorted(p["prompt_id"] for p in pairs + failed)
    assert len(ids) == PROMPTS and len(set(ids)) == PROMPTS
    assert pairs and {f["reason"] for f in failed} <= {"no_rc_pair"}
    for p in pairs:
        chosen = [sim.reward_a(p["prompt"], p["chosen"]), sim.reward_b(p["prompt"], p["chosen"])]
        rejected = [sim.reward_a(p["prompt"], p["rejected"]), sim.reward_b(p["prompt"], p["rejected"])]
        assert chosen == pytest.approx(p["chosen_rewards"]) and rejected == pytest.approx(p["rejected_rewards"])
        assert rc.is_consistent(chosen, rejected)
    stats = result.stats
    assert stats["engine"] == "benchmarks.sim:SimEngine"
    assert stats["candidates_sampled"] == PROMPTS * 4 and stats["tokens_generated"] > 0
