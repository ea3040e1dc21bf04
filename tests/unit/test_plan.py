"""`rcs-ray plan`: the dry run on the tiny world (models checked on the meta device, prompts counted, phases and
cost printed, nothing loaded or started) and on a broken config, whose problems are all listed at once."""

import json
import os
import subprocess
import sys

import pytest

from rcs_ray.config import load_config
from rcs_ray.planning import plan
from rcs_ray.planning.cost import parse_rates

pytestmark = [pytest.mark.unit, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K2 = os.path.join(REPO, "configs", "tiny", "k2.yaml")


def test_the_tiny_config_plans_with_its_phases_and_cost(tiny_world):
    over = [f"tinyworld.cache_dir={os.path.dirname(tiny_world.root)}"]
    cfg = load_config(K2, over)
    result = plan(cfg, gpus=0, cpus=2)
    assert result.problems == []
    assert result.found.prompts == {"stages.0.data": 2048, "stages.1.data": 2048, "eval.prompts": 128}
    # each stage trains against the policy it starts from: its workers compute the reference log-probs
    assert [p.name for p in result.phases] == ["stage 1 training", "stage 2 sampling", "stage 2 training", "eval"]
    separate = plan(load_config(K2, [*over, "train.reference_pass=separate"]), gpus=0, cpus=2).phases
    assert [p.name for p in separate if "reference" in p.name] == ["stage 1 reference pass", "stage 2 reference pass"]
    sampling = result.phases[1]
    assert sampling.total("CPU") == 1.25 and sampling.total("GPU") == 0  # 1 engine + a rule pool
    (c1, c2) = result.costs
    # stage 1: 32 steps x global batch 64 (32 per worker x 2) pairs at 16 pairs/s, on 2 workers
    assert c1.generated_tokens == 0 and c1.training_gpu_hours == pytest.approx(32 * 64 / (16 * 3600) * 2)
    assert c2.generated_tokens == pytest.approx(2048 * 8 * 0.7 * 24)  # P x n x fill x max_tokens
    assert "0 problem(s): the config can run as planned" in result.report()
    assert json.loads(json.dumps(result.as_dict()))["phases"][1]["needs"] == {"CPU": 1.25, "GPU": 0}


def test_a_broken_config_lists_every_problem_and_exits_2(tiny_world):
    random_head = tiny_world.policy  # a causal LM: its score head would be random
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rcs_ray",
            "plan",
            K2,
            "policy.path=./models/not-there",
            "objectives.1.kind=classifier",
            f"objectives.1.model={random_head}",
            "objectives.1.function=null",
            "sampling.num_gpus=4",
            "--gpus",
            "2",
            "--cpus",
            "8",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert any(f"policy.path: model directory not found: {REPO}/models/not-there" in e for e in errors)
    assert any("objectives.1.model:" in e and "score head would be random" in e for e in errors)
    assert any(e.startswith("error: stage 2 sampling needs 4 GPU (1 x 4 (generation (hf, TP 1)))") for e in errors)
    assert len(errors) == 4  # and the eval's GPUs: nothing else


def test_rates_are_parsed_and_checked():
    assert parse_rates("gen=100,fill=0.5") == {"gen": 100.0, "rm": 25000.0, "train": 16.0, "fill": 0.5}
    with pytest.raises(ValueError, match="unknown rate 'speed'"):
        parse_rates("speed=3")
    with pytest.raises(ValueError, match="gen must be > 0"):
        parse_rates("gen=0")


def test_a_stage_smaller_than_one_global_batch_is_a_problem(tiny_world):
    cfg = load_config(K2, [f"tinyworld.cache_dir={os.path.dirname(tiny_world.root)}", "stages.0.data.limit=10"])
    assert plan(cfg, gpus=0, cpus=2).problems == [
        "stages.0: 10 pairs are fewer than one global batch of 64 (batch_size 32 x accumulation 1 x 2 workers)"
    ]
