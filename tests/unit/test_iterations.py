"""Iterative RCS's pieces without Ray: the prompt slices (deterministic, disjoint, covering, balanced), the
``stages.N.iterations`` setting (validated in one line, explained, absent from every step's fingerprint at the
default), one iteration's config (its slice, the split ``max_steps``) and the slice files."""

import json
import os
import random

import pytest

from rcs_ray.config import load_config
from rcs_ray.errors import RcsInputError
from rcs_ray.iterations import prompt_slices, sliced, total_sample_stats, write_slices

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K2 = os.path.join(REPO, "configs", "tiny", "k2.yaml")
IDS = [f"p{i}" for i in range(103)]


@pytest.mark.parametrize("iterations", [1, 2, 3, 7, 103])
def test_slices_are_disjoint_cover_every_prompt_and_are_balanced(iterations):
    slices = prompt_slices(IDS, iterations, seed=0)
    assert len(slices) == iterations
    flat = [i for s in slices for i in s]
    assert sorted(flat) == list(range(len(IDS)))  # every row once: disjoint and covering
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    assert all(s == sorted(s) for s in slices)  # each slice in file order
    assert prompt_slices(IDS, iterations, seed=0) == slices  # deterministic


def test_slices_depend_on_the_ids_and_seed_not_the_file_order():
    ids = {frozenset(IDS[i] for i in s) for s in prompt_slices(IDS, 3, seed=5)}
    shuffled = list(IDS)
    random.Random(1).shuffle(shuffled)
    assert {frozenset(shuffled[i] for i in s) for s in prompt_slices(shuffled, 3, seed=5)} == ids
    assert {frozenset(IDS[i] for i in s) for s in prompt_slices(IDS, 3, seed=6)} != ids
    assert prompt_slices(IDS, 1, seed=0) == [list(range(len(IDS)))]  # one iteration: the stage as it is


def test_more_iterations_than_prompts_is_one_line():
    with pytest.raises(RcsInputError, match=r"^iterations: 4 iterations need at least 4 prompts, got 3$"):
        prompt_slices(IDS[:3], 4, seed=0)


def test_iterations_is_validated_in_one_line():
    assert load_config(K2, ["stages.1.iterations=3"]).stages[1].iterations == 3
    assert load_config(K2, []).stages[1].iterations == 1
    for override, msg in (
        ("stages.1.iterations=0", r"key 'stages.1.iterations': must be >= 1, got 0"),
        ("stages.0.iterations=2", r"key 'stages.0.iterations': iterations re-sample .* set sample: true"),
        ("stages.1.iterations=two", r"iterations"),
    ):
        with pytest.raises(RcsInputError, match=msg) as err:
            load_config(K2, [override])
        assert "\n" not in str(err.value)


def test_explain_iterations(capsys):
    from rcs_ray.cli import main

    assert main(["config", "--explain", "stages.0.iterations"]) == 0
    out = capsys.readouterr().out
    assert "int" in out and "1" in out and "disjoint slices" in out


def test_the_default_leaves_every_fingerprint_as_it_was():
    """The stage-level step digests pick their keys: ``iterations`` is in none (an existing run keeps its steps)."""
    from rcs_ray.fingerprints import sample_inputs, train_inputs

    one, three = load_config(K2, []), load_config(K2, ["stages.1.iterations=3"])
    models = {"policy": "p", "policy_fp": "f", "data": "d", "data_fp": "g"}
    assert sample_inputs(one, 1, models) == sample_inputs(three, 1, models)
    assert train_inputs(one, 1, models) == train_inputs(three, 1, models)


def test_an_iteration_reads_its_slice_and_splits_max_steps():
    cfg = load_config(K2, ["stages.1.iterations=3", "train.max_steps=64"])
    it = sliced(cfg, 1, "/x/iter1/prompts.jsonl")
    st = it.stages[1]
    assert st.data.path == "/x/iter1/prompts.jsonl" and st.data.format == "jsonl" and st.iterations == 1
    assert st.train.max_steps == 22  # ceil(64 / 3): the stage trains about as many steps as one-shot
    assert it.stages[0] == cfg.stages[0] and cfg.stages[1].iterations == 3  # cfg itself untouched
    epochs = load_config(K2, ["stages.1.iterations=2", "train.max_steps=null", "train.num_epochs=2"])
    assert sliced(epochs, 1, "/x").stages[1].train.max_steps is None  # num_epochs over each iteration's pairs


def test_slice_files_cover_the_stage_and_are_not_rewritten(tmp_path):
    rows = [{"prompt_id": f"q{i}", "prompt": f"say {i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(K2, [f"output_dir={tmp_path / 'run'}", f"stages.1.data.path={data}", "stages.1.iterations=3"])
    paths = write_slices(cfg, 1)
    assert paths == [str(tmp_path / "run" / "stage2" / f"iter{i}" / "prompts.jsonl") for i in (1, 2, 3)]
    got = [[json.loads(line) for line in open(p)] for p in paths]
    assert sorted(r["prompt_id"] for g in got for r in g) == sorted(r["prompt_id"] for r in rows)
    assert {len(g) for g in got} == {3, 4} and all(set(r) == set(rows[0]) for g in got for r in g)
    before = [os.stat(p).st_mtime_ns for p in paths]
    assert write_slices(cfg, 1) == paths and [os.stat(p).st_mtime_ns for p in paths] == before


def test_the_iterations_sampling_stats_add_up():
    a = {"prompts": 4, "pairs": 3, "failed": 1, "tokens_generated": 10, "seconds": 1.0, "failed_by_reason": {"x": 1}}
    b = {"prompts": 4, "pairs": 4, "failed": 0, "tokens_generated": 12, "seconds": 2.0, "failed_by_reason": {}}
    total = total_sample_stats([a, b])
    assert total == {
        "prompts": 8,
        "pairs": 7,
        "failed": 1,
        "tokens_generated": 22,
        "seconds": 3.0,
        "failure_rate": 0.125,
        "failed_by_reason": {"x": 1},
    }


class FakeManifest:
    def __init__(self, steps):
        self.data, self.forgotten = {"steps": steps}, None

    def forget(self, steps):
        self.forgotten = sorted(steps)
        for s in steps:
            del self.data["steps"][s]


def test_changing_iterations_drops_the_other_modes_steps_and_the_train_dir_they_wrote(tmp_path):
    from rcs_ray.iterations import forget_other_mode

    run, stage2 = tmp_path / "run", tmp_path / "run" / "stage2"

    def cfg(n):
        return load_config(K2, [f"output_dir={run}", f"stages.1.iterations={n}"])

    def entry(model):
        return {"status": "done", "outputs": {"model": str(model)}}

    def train_dir():
        (stage2 / "train" / "checkpoints").mkdir(parents=True, exist_ok=True)

    one_shot = {"sample": {"status": "done", "outputs": {}}, "train": entry(stage2 / "train" / "model")}
    same = FakeManifest(dict(one_shot))
    forget_other_mode(cfg(1), 1, same)  # unchanged: nothing dropped, nothing written
    assert same.forgotten is None and set(same.data["steps"]) == {"sample", "train"}

    train_dir()
    m = FakeManifest(dict(one_shot))
    forget_other_mode(cfg(2), 1, m)  # one-shot -> 2 iterations: its steps go, with the train dir it wrote
    assert m.forgotten == ["sample", "train"] and not (stage2 / "train").exists()

    train_dir()
    two = {
        "iter1/sample": {},
        "iter1/train": entry(stage2 / "iter1" / "train" / "model"),
        "iter2/sample": {},
        "iter2/train": entry(stage2 / "train" / "model"),
    }
    m = FakeManifest(dict(two))
    forget_other_mode(cfg(3), 1, m)  # 2 -> 3: iteration 2 now trains in iter2/train, not the stage's train dir
    assert m.forgotten == ["iter2/train"] and not (stage2 / "train").exists()

    train_dir()
    m = FakeManifest(dict(two))
    forget_other_mode(cfg(1), 1, m)  # back to one-shot
    assert m.forgotten == sorted(two) and not (stage2 / "train").exists()
