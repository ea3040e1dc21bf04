"""RS-DPO proper (every pair above the threshold, several per prompt) and RSDPO-W's target win, by hand."""

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from rcs_ray import selection
from rcs_ray.config import RCConfig
from rcs_ray.data.pairs import group_table

pytestmark = pytest.mark.unit

# candidates x (harmless, helpful); target helpful: 3, 1, 2, 0
G = [[0, 3], [1, 1], [2, 2], [1, 0]]


def test_rs_dpo_keeps_every_pair_above_the_threshold_largest_gap_first():
    # tau 1, eta 0.85: the gap must exceed logit(0.85) = ln(0.85 / 0.15) = 1.7346
    assert selection.rs_dpo_pairs(G, 1, tau=1.0, eta=0.85) == [(0, 3), (0, 1), (2, 3)]  # gaps 3, 2, 2
    # tau 0.5: over 0.867, so the gap-1 pairs (0,2), (1,3) and (2,1) come in too (ties in the gap: row-major)
    every = [(0, 3), (0, 1), (2, 3), (0, 2), (1, 3), (2, 1)]
    assert selection.rs_dpo_pairs(G, 1, tau=0.5, eta=0.85) == every
    # eta 0.5: over 0, every strict win on the target (here the same six); no pair ever loses on the target
    assert selection.rs_dpo_pairs(G, 1, tau=1.0, eta=0.5) == every
    assert selection.rs_dpo_pairs([[0, 1], [0, 1]], 1, eta=0.5) == []  # a tie is no win
    assert math.isclose(1 / (1 + math.exp(-2 / 1.0)), 0.8808, abs_tol=1e-4)  # sigmoid(2) > 0.85
    assert selection.STRATEGIES["rs_dpo"](G, 1) == (0, 3)  # the best pair
    with pytest.raises(ValueError, match="rs_eta must be in"):
        selection.rs_dpo_pairs(G, 1, eta=0.4)
    with pytest.raises(ValueError, match="rs_tau must be a positive"):
        selection.rs_dpo_pairs(G, 1, tau=0.0)


def test_rs_dpo_respects_the_truncation_rule():
    allowed = selection.allowed_sides([False, True, True, True], "not_chosen")  # candidate 0 was cut
    assert selection.rs_dpo_pairs(G, 1, allowed=allowed) == [(2, 3)]


def test_rsdpo_w_needs_a_target_win():
    # equal weights: sums 2.5, 0.5, 0. The old argmax / argmin pair (0, 2) ties on helpful (0 vs 0): no target win.
    r = [[5, 0], [0, 1], [0, 0]]
    assert selection.STRATEGIES["weighted"](r, 1) == (1, 2)  # the only target win with a positive gap
    assert selection.STRATEGIES["weighted"]([[5, 0], [0, 1]], 1) is None  # the target winner loses the sum
    assert selection.STRATEGIES["weighted"](G, 1, weights=[1.0, 1.0]) == (2, 3)  # sums 3,2,4,1: gap 3, helpful 2 > 0


def test_the_rc_step_and_the_writer_give_every_pair_and_count_prompts_once(tmp_path):
    from rcs_ray.sampling.rc_step import RCFilterStage
    from rcs_ray.sampling.writer import OutputWriter

    rows = [
        {
            "prompt_id": "a",
            "prompt": "p",
            "candidates": ["c0", "c1", "c2", "c3"],
            "sources": ["sampled"] * 4,
            "reward__harmless": [g[0] for g in G],
            "reward__helpful": [g[1] for g in G],
        },
        {
            "prompt_id": "b",
            "prompt": "q",
            "candidates": ["d0", "d1"],
            "sources": ["sampled"] * 2,
            "reward__harmless": [0.0, 0.0],
            "reward__helpful": [1.0, 0.5],
        },
    ]  # gap 0.5 < 1.7346
    step = RCFilterStage(["harmless", "helpful"], "helpful", RCConfig(strategy="rs_dpo"))
    out = step(group_table(rows, False))
    assert out.column("chosen_indices").to_pylist() == [[0, 0, 2], []]
    assert out.column("rejected_indices").to_pylist() == [[3, 1, 3], []]
    assert out.column("chosen_index").to_pylist() == [0, None]
    assert out.column("failure_reason").to_pylist() == [None, "below_threshold"]
    writer = OutputWriter(str(tmp_path), ["harmless", "helpful"], "helpful")
    writer.write(out, 0)
    stats = writer.commit({})
    pairs = pq.read_table(tmp_path / "pairs.parquet").to_pylist()
    assert [(p["prompt_id"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("a", "c0", "c3"),
        ("a", "c0", "c1"),
        ("a", "c2", "c3"),
    ]
    assert [p["chosen_rewards"] for p in pairs] == [[0.0, 3.0], [0.0, 3.0], [2.0, 2.0]]
    assert (stats["prompts"], stats["pairs"], stats["prompts_paired"], stats["failed"]) == (2, 3, 1, 1)
    assert stats["failure_rate"] == 0.5 and stats["mean_target_gap"] == pytest.approx((3 + 2 + 2) / 3)
    assert np.all([p["chosen_rewards"][1] > p["rejected_rewards"][1] for p in pairs])


def test_a_tie_fails_as_tied_on_target():
    from rcs_ray.sampling.rc_step import RCFilterStage

    rows = [
        {
            "prompt_id": "t",
            "prompt": "p",
            "candidates": ["x", "y"],
            "sources": ["sampled"] * 2,
            "reward__harmless": [0.0, 1.0],
            "reward__helpful": [1.0, 1.0],
        }
    ]
    out = RCFilterStage(["harmless", "helpful"], "helpful", RCConfig(strategy="rs_dpo"))(group_table(rows, False))
    assert out.column("failure_reason").to_pylist() == ["tied_on_target"]
