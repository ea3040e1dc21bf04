"""The columnar helpers and the columnar writer on hand-made batches (hand-computed expectations)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rcs_ray.data.pairs import group_table

pytestmark = pytest.mark.unit


def test_append_lists_keeps_each_rows_old_values_first():
    from rcs_ray.sampling.columns import append_lists

    old = pa.array([["a"], None, ["b", "c"], []], pa.list_(pa.string())).slice(0)
    out = append_lists(old, [["x"], ["y", "z"], [], ["w"]], pa.list_(pa.string()))
    assert out.to_pylist() == [["a", "x"], ["y", "z"], ["b", "c"], ["w"]]
    sliced = pa.array([["q"], ["a"], ["b"]], pa.list_(pa.string())).slice(1)  # offsets not from 0
    assert append_lists(sliced, [["1"], []], pa.list_(pa.string())).to_pylist() == [["a", "1"], ["b"]]
    assert append_lists(None, [[1], [2, 3]], pa.list_(pa.int64())).to_pylist() == [[1], [2, 3]]


def test_pick_rows_of_positions_and_messages():
    from rcs_ray.sampling.columns import begins, messages, pick, positions, rows_of

    col = pa.array([["a", "b"], None, ["c", "d", "e"]], pa.list_(pa.string()))
    assert pick(col, np.array([0, 2]), np.array([1, 2])).to_pylist() == ["b", "e"]
    assert rows_of(np.array([[1.0, 2.0], [3.0, 4.0]]), 2).to_pylist() == [[1.0, 2.0], [3.0, 4.0]]
    assert messages(pa.array(["hi"]), "user").to_pylist() == [[{"role": "user", "content": "hi"}]]
    assert begins(np.array([2, 0, 3])).tolist() == [0, 2, 2] and begins(np.array([], dtype=np.int64)).size == 0
    run, at = positions(np.array([2, 0, 3]))
    assert run.tolist() == [0, 0, 2, 2, 2] and at.tolist() == [0, 1, 0, 1, 2]


def test_with_system_puts_the_rules_system_message_in_conversational_prompts():
    """A system prompt goes first in every chat prompt without one, as the prompt rule reads it (so a pairs file in
    TRL's conversational form holds the text the policy was given); a row's own system message stays."""
    from rcs_ray.data.pairs import MESSAGES
    from rcs_ray.prompting import PromptRule, as_chat
    from rcs_ray.sampling.columns import messages, with_system

    user = [{"role": "user", "content": "hi"}]
    own = [{"role": "system", "content": "mine"}, {"role": "user", "content": "yo"}]
    prompts = pa.array([user, user, own, user], MESSAGES).slice(1)  # offsets not from 0
    got = with_system(pa.chunked_array([prompts]), "be brief").to_pylist()
    rule = PromptRule(system="be brief")
    assert got == [as_chat(p, None, rule) for p in prompts.to_pylist()]
    assert got == [
        [{"role": "system", "content": "be brief"}] + user,
        own,
        [{"role": "system", "content": "be brief"}] + user,
    ]
    assert with_system(messages(pa.array(["hi"]), "user"), None).to_pylist() == [user]


def _row(pid, cands, h, failure=None, w=None, l=None, error=None, sources=None):
    return {
        "prompt_id": pid,
        "prompt": f"ask {pid}",
        "candidates": cands,
        "sources": sources or ["sampled"] * len(cands),
        "candidate_tokens": [1] * len(cands),
        "reward__h": h,
        "reward__g": [-x for x in h],
        "chosen_index": w,
        "rejected_index": l,
        "failure_reason": failure,
        "error": error,
        "seconds__generate": 0.25,
        "generate_started": 5.0,
    }


def test_writer_routes_a_batch_columnar(tmp_path):
    from rcs_ray.sampling.writer import OutputWriter

    w = OutputWriter(str(tmp_path), ["h", "g"], "h", candidates=True)
    batch = group_table(
        [
            _row("p", ["a", "b", "c"], [0.0, 2.0, 1.0], w=1, l=0, sources=["original_chosen", "sampled", "sampled"]),
            _row("q", ["x", "x", "y"], [1.0, 1.0, 1.0], failure="tied_on_target"),  # resampled: carried
            _row("r", [], [], failure="prompt_too_long", error="prompt_too_long: 9 > 8"),
            _row("s", ["u", "v"], [1.0], failure="missing_rewards"),  # shorter reward list
        ],
        False,
    )
    carry = w.write(batch, 2, resample=("tied_on_target",))
    assert carry.column("prompt_id").to_pylist() == ["q"]
    assert not any(
        c.startswith("seconds__") or c in ("chosen_index", "failure_reason", "generate_started")
        for c in carry.column_names
    ) and carry.column("reward__h").to_pylist() == [[1.0, 1.0, 1.0]]
    stats = w.commit({})
    pair = pq.read_table(tmp_path / "pairs.parquet").to_pylist()
    assert pair == [
        {
            "prompt": "ask p",
            "chosen": "b",
            "rejected": "a",
            "prompt_id": "p",
            "chosen_rewards": [2.0, -2.0],
            "rejected_rewards": [0.0, -0.0],
            "target": "h",
            "chosen_source": "sampled",
            "rejected_source": "original_chosen",
            "chosen_finished": True,
            "rejected_finished": True,
            "num_candidates": 3,
            "round": 2,
        }
    ]
    failed = pq.read_table(tmp_path / "failed.parquet").to_pylist()
    assert [
        (f["prompt_id"], f["reason"], f["detail"], f["num_candidates"], f["num_distinct"], f["rounds"]) for f in failed
    ] == [("r", "prompt_too_long", "prompt_too_long: 9 > 8", 0, 0, 3), ("s", "missing_rewards", None, 2, 2, 3)]
    stored = {c["prompt_id"]: c for c in pq.read_table(tmp_path / "candidates.parquet").to_pylist()}
    assert sorted(stored) == ["p", "r", "s"]  # the carried group is not final yet
    assert stored["p"]["rewards"] == [[0.0, -0.0], [2.0, -2.0], [1.0, -1.0]] and stored["p"]["round"] == 2
    assert stored["s"]["rewards"] == [] and stored["r"]["candidates"] == []
    assert stats["pairs"] == 1 and stats["failed"] == 2 and stats["pair_sources"] == {"sampled>original_chosen": 1}
    assert stats["failed_by_reason"] == {"missing_rewards": 1, "prompt_too_long": 1}
    assert stats["mean_target_gap"] == 2.0 and w.sampled == 2 + 0 + 2  # sampled candidates of final groups
    assert stats["actor_seconds_by_stage"] == {"generate": 1.0}


def test_writer_row_groups_do_not_depend_on_how_batches_arrive(tmp_path):
    from rcs_ray.sampling.writer import OutputWriter

    rows = [_row(str(i), ["a", "b"], [1.0, 0.0], w=0, l=1) for i in range(23)]
    files = []
    for sizes in ([23], [5, 1, 9, 8]):
        out = tmp_path / str(len(sizes))
        w = OutputWriter(str(out), ["h", "g"], "h")
        w.pairs.flush_rows = 4
        at = 0
        for size in sizes:
            w.write(group_table(rows[at : at + size], False), 0)
            at += size
        w.commit({})
        files.append((out / "pairs.parquet").read_bytes())
        assert [pq.ParquetFile(out / "pairs.parquet").metadata.row_group(i).num_rows for i in range(6)] == [
            4,
            4,
            4,
            4,
            4,
            3,
        ]
    assert files[0] == files[1]


def test_chat_writer_wraps_plain_prompts_and_responses(tmp_path):
    from rcs_ray.sampling.writer import OutputWriter

    w = OutputWriter(str(tmp_path), ["h", "g"], "h", chat=True)
    w.write(group_table([_row("p", ["a", "b"], [1.0, 0.0], w=0, l=1)], False), 0)
    w.commit({})
    pair = pq.read_table(tmp_path / "pairs.parquet").to_pylist()[0]
    assert pair["prompt"] == [{"role": "user", "content": "ask p"}]
    assert pair["chosen"] == [{"role": "assistant", "content": "a"}]


def test_select_names_the_file_of_a_reward_matrix_of_the_wrong_width(tmp_path):
    from rcs_ray.data.sampling_files import candidates_schema
    from rcs_ray.errors import RcsInputError
    from rcs_ray.sampling.select import select

    path = tmp_path / "candidates.parquet"
    row = {
        "prompt_id": "p",
        "prompt": "ask",
        "candidates": ["a", "b"],
        "sources": ["sampled"] * 2,
        "candidate_tokens": [1, 1],
        "rewards": [[1.0, 0.0], [0.0]],
        "error": None,
        "round": 0,
    }
    pq.write_table(pa.Table.from_pylist([row], schema=candidates_schema(False, ["h", "g"], "h")), path)
    with pytest.raises(RcsInputError, match=rf"{path}: a reward matrix row does not have 2 values"):
        select(str(path), str(tmp_path / "out"))
    assert not (tmp_path / "out" / "pairs.parquet").exists()
