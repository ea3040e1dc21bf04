"""A reward source is one implementation plus one entry: a toy source (tests/toy_reward.py) registered at runtime in
this process validates, plans and runs through ``rcs-ray sample`` on the tiny world, nothing else changed."""

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from rcs_ray import registry
from rcs_ray.registry import RewardSourceSpec
from tests.toy_reward import words

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The one entry: its scorer (imported by the scorer actors from the path the job carries) and its config check.
TOY = RewardSourceSpec(
    scorers={None: "tests.toy_reward:WordCountScorer"}, family="toy", check_config="tests.toy_reward:check_toy"
)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry.REWARD_SOURCES, "toy", TOY)


def overrides(tmp_path, *extra):
    return [
        f"output_dir={tmp_path}",
        f"tinyworld.cache_dir={os.path.join(REPO, '.cache', 'tinyworld')}",
        "stages.1.data.limit=16",
        "sampling.n=4",
        "sampling.batch_size=8",
        "objectives.1.kind=toy",
        "objectives.1.function=null",
        *extra,
    ]


def test_the_toy_source_is_checked_by_its_entry(toy, tmp_path):
    from rcs_ray.config import load_config
    from rcs_ray.errors import RcsInputError
    from rcs_ray.sampling.placement import scorer_remote_args
    from rcs_ray.sampling.scorers import plan_scorers

    cfg = load_config(os.path.join(REPO, "configs/tiny/k2.yaml"), overrides(tmp_path, "objectives.1.num_gpus=1"))
    specs = plan_scorers(cfg.objectives)
    assert [(s.kind, s.names) for s in specs] == [("rule", ["harmless"]), ("toy", ["helpful"])]
    assert scorer_remote_args(cfg.objectives[1], specs[1].source) == {"num_cpus": 0.25, "num_gpus": 0.0}
    with pytest.raises(RcsInputError, match="'objectives.1.model': a toy objective reads no model"):
        load_config(os.path.join(REPO, "configs/tiny/k2.yaml"), overrides(tmp_path, "objectives.1.model=/m"))


def test_the_toy_source_runs_through_rcs_ray_sample(toy, tiny_world, ray_session, tmp_path, capsys):
    from rcs_ray.cli import main

    out = tmp_path / "out"
    assert (
        main(
            [
                "sample",
                os.path.join(REPO, "configs/tiny/k2.yaml"),
                *overrides(tmp_path),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert pairs
    for p in pairs:  # helpful is the toy: the words of each side's response
        assert p["chosen_rewards"][1] == words(p["chosen"]) and p["rejected_rewards"][1] == words(p["rejected"])
        assert p["chosen_rewards"][1] > p["rejected_rewards"][1]  # stage 2 selects pairs for helpful


def test_a_source_that_fails_to_load_in_its_host_is_one_line(tiny_world, ray_session, tmp_path):
    """A model that passes the driver's checks but fails to load in its host stops `rcs-ray sample` with its own
    error in one line, not the host's traceback around it, and writes nothing."""
    out = tmp_path / "out"
    gcs = ray_session.get_runtime_context().gcs_address
    proc = subprocess.run(
        [sys.executable, "-m", "tests.ray.refusing_source", "sample", os.path.join(REPO, "configs/tiny/k2.yaml")]
        + [*overrides(tmp_path), "--out", str(out), "--no-progress", f"ray.address={gcs}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert errors == ["error: objectives.1: the toy model of helpful has no weights on this node"], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not list(out.glob("*.parquet"))
