"""Responses cut at sampling.max_tokens are never trained on as finished answers (issue 23, item 1): the selection
rule (hand-computed), the RC step and the writer on hand-made batches, and the tokenization that ends a cut
response without EOS or an end of turn."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from rcs_ray import rc, selection
from rcs_ray.config import RCConfig
from rcs_ray.data.pairs import group_table

pytestmark = pytest.mark.unit

# Four candidates, K = 2 (harmless, helpful), target helpful (1). RC pairs (harmless and helpful both won) and their
# helpful gaps: (0,3) 4, (0,1) 2, (1,3) 2, (2,3) 2; (2,1) is no helpful win, (0,2) and (1,2) lose on harmless.
R = np.array(
    [
        [2.0, 5.0],  # 0: the best, but cut in the cases that say so
        [1.0, 3.0],  # 1
        [3.0, 3.0],  # 2
        [0.0, 1.0],
    ]
)  # 3


@pytest.mark.parametrize(
    "finished, rule, pair",
    [
        ([1, 1, 1, 1], "not_chosen", (0, 3)),  # nothing cut: every rule is plain RCS
        ([0, 1, 1, 1], "keep", (0, 3)),
        ([0, 1, 1, 1], "not_chosen", (1, 3)),  # 0 may not win: (1,3) and (2,3) gap 2, the tie to the lowest
        ([1, 1, 1, 0], "not_chosen", (0, 3)),  # a cut candidate may lose
        ([1, 1, 1, 0], "drop", (0, 1)),  # ... but not under drop: next best (0,1) gap 2 beats (2,1) gap 0
    ],
)
def test_the_truncation_rule_hand_computed(finished, rule, pair):
    allowed = selection.allowed_sides(finished, rule)
    assert rc.select_pair(R, 1, allowed=allowed) == pair
    flat = rc.select_pairs_flat(R, np.array([0, 4]), 1, allowed=allowed)  # the columnar core agrees
    assert tuple(flat[0]) == pair
    assert selection.select_batch("rcs", [R], 1, allowed=[allowed]) == [pair]
    assert selection.select_batch("rc_random", [R], 1, allowed=[allowed], seeds=lambda i: 0)[0][0] not in {
        i for i, f in enumerate(finished) if not f and rule != "keep"
    }


def test_a_group_whose_only_winners_are_cut_fails_as_truncated_only():
    only = np.array([[2.0, 5.0], [1.0, 3.0]])
    allowed = selection.allowed_sides([False, True], "not_chosen")
    assert rc.select_pair(only, 1, allowed=allowed) is None
    assert rc.failure_reason(only, 1, allowed=allowed) == "truncated_only"
    assert rc.failure_reason(np.array([[1.0, 1.0], [1.0, 1.0]]), 1, allowed=allowed) == "tied_on_target"
    assert selection.select_batch("weighted", [only], 1, allowed=[allowed]) == [None]
    with pytest.raises(ValueError, match="sampling.truncated must be one of"):
        selection.allowed_sides([True], "cut")


def _group(pid, rewards, finished):
    return {
        "prompt_id": pid,
        "prompt": f"ask {pid}",
        "candidates": [f"c{i}" for i in range(len(finished))],
        "sources": ["sampled"] * len(finished),
        "candidate_finished": finished,
        "reward__harmless": [r[0] for r in rewards],
        "reward__helpful": [r[1] for r in rewards],
    }


def test_the_rc_step_and_the_writer_carry_whether_each_side_finished(tmp_path):
    from rcs_ray.sampling.rc_step import RCFilterStage
    from rcs_ray.sampling.writer import OutputWriter

    batch = group_table(
        [_group("a", R.tolist(), [False, True, True, False]), _group("b", [[2.0, 5.0], [1.0, 3.0]], [False, True])],
        False,
    )
    step = RCFilterStage(["harmless", "helpful"], "helpful", RCConfig(), truncated="not_chosen")
    out = step(batch)
    assert out.column("chosen_index").to_pylist() == [1, None]
    assert out.column("failure_reason").to_pylist() == [None, "truncated_only"]
    writer = OutputWriter(
        str(tmp_path),
        ["harmless", "helpful"],
        "helpful",
        candidates=True,
        selection={"strategy": "rcs", "truncated": "not_chosen"},
    )
    writer.write(out.append_column("truncated_samples", __import__("pyarrow").array([2, 1])), 0)
    stats = writer.commit({})
    (pair,) = pq.read_table(tmp_path / "pairs.parquet").to_pylist()
    assert (pair["chosen"], pair["rejected"], pair["chosen_finished"], pair["rejected_finished"]) == (
        "c1",
        "c3",
        True,
        False,
    )
    cands = pq.read_table(tmp_path / "candidates.parquet")
    assert cands.column("candidate_finished").to_pylist() == [[False, True, True, False], [False, True]]
    assert stats["samples_truncated"] == 3 and stats["truncated_share"] == 0.5
    assert stats["failed_by_reason"] == {"truncated_only": 1}


def test_a_cut_response_gets_no_eos_and_no_end_of_turn(tiny_world):
    from rcs_ray.modeling.loading import load_tokenizer
    from rcs_ray.prompting import split_ids

    tok = load_tokenizer(tiny_world.policy)
    eos = tok.eos_token_id
    _, done = split_ids(tok, "how do I", "you can try", False)
    _, cut = split_ids(tok, "how do I", "you can try", False, finished=False)
    assert done == cut + [eos] and eos not in cut
    chat = [{"role": "user", "content": "how do I"}]
    p_done, r_done = split_ids(tok, chat, "you can try", True)
    p_cut, r_cut = split_ids(tok, chat, "you can try", True, finished=False)
    assert p_done == p_cut and r_done[: len(r_cut)] == r_cut and len(r_done) > len(r_cut)
    assert tok.decode(r_cut).strip().endswith("you can try")  # the turn is left open: nothing after it
