"""rcs_ray.fingerprints: a rerun redoes a step exactly when what changes its result changed, and upgrading rcs-ray
(new settings at their unused value) keeps the finished steps of an existing run."""

import pytest

from rcs_ray.config import load_config
from rcs_ray.fingerprints import sample_inputs, schedule_shrank, train_inputs

pytestmark = pytest.mark.unit

# The digests the release before the sampling controls, Hub datasets and truncation settings computed (commit
# 3afecc6): a run directory made with it must not redo its steps.
BEFORE = {
    ("k2", 0): ("eb037aa6cc51e4df", "22367acbe9e2eadc"),
    ("k2", 1): ("1e947597725e9e03", "9573c5da799ae20b"),
    ("k3", 2): ("129ca96e2e68f164", "45969ef2832af7ed"),
}


def _digests(name, k, *overrides):
    cfg = load_config(f"configs/tiny/{name}.yaml", list(overrides))
    return sample_inputs(cfg, k, {})["settings"], train_inputs(cfg, k, {})[0]["settings"]


@pytest.mark.parametrize("name, k", sorted(BEFORE))
def test_an_upgrade_keeps_the_finished_steps_of_an_existing_run(name, k):
    # New settings at the value that does what that release did leave the digests as they were; the new
    # truncation default (a cut sample may not be the chosen side) changes the selection, so it re-selects once.
    assert _digests(name, k, "sampling.truncated=keep") == BEFORE[(name, k)]
    sample, train = _digests(name, k)
    assert sample != BEFORE[(name, k)][0] and train == BEFORE[(name, k)][1]


@pytest.mark.parametrize(
    "override, sample, train",
    [
        ("sampling.temperature=0.7", True, False),  # changes the samples, not what stage 2 trains on as such
        ("sampling.top_k=5", True, False),  # a setting added later, once it is set
        ("sampling.truncated=drop", True, False),
        ("policy.system_prompt=Be brief.", True, True),
        ("stages.1.rc.margin=0.0", True, False),
        ("train.beta=0.2", False, True),
        ("sampling.batch_size=7", False, False),  # how a run runs, never what it computes
        ("sampling.num_actors=3", False, False),
        ("train.save_steps=2", False, False),
        ("eval.n=9", False, False),
    ],
)
def test_a_setting_reruns_exactly_the_steps_it_changes(override, sample, train):
    before, after = _digests("k2", 1), _digests("k2", 1, override)
    assert (before[0] != after[0], before[1] != after[1]) == (sample, train)


def test_the_schedule_extends_under_a_constant_rate_and_is_identity_under_a_decaying_one():
    cfg = load_config("configs/tiny/k2.yaml", [])
    identity, schedule = train_inputs(cfg, 0, {})
    longer, longer_schedule = train_inputs(load_config("configs/tiny/k2.yaml", ["stages.0.train.max_steps=64"]), 0, {})
    assert identity == longer and schedule == {"max_steps": 32, "num_epochs": 1} != longer_schedule
    cosine = ["train.lr_scheduler=cosine"]
    a = train_inputs(load_config("configs/tiny/k2.yaml", cosine), 0, {})
    b = train_inputs(load_config("configs/tiny/k2.yaml", [*cosine, "stages.0.train.max_steps=64"]), 0, {})
    assert a[0] != b[0] and a[1] == b[1] == {}


@pytest.mark.parametrize(
    "old, new, shrank",
    [
        (None, {"max_steps": 8}, False),
        ({"max_steps": 8}, {"max_steps": 16}, False),
        ({"max_steps": 16}, {"max_steps": 8}, True),
        ({"max_steps": None, "num_epochs": 2}, {"max_steps": 8, "num_epochs": 2}, True),  # epochs -> a step cap
        ({"num_epochs": 3}, {"num_epochs": 2}, True),
    ],
)
def test_schedule_shrank(old, new, shrank):
    assert schedule_shrank(old, new) is shrank
