"""Selection from a stage's stored candidates (candidates.parquet), against oracles apart from the pipeline:
`rcs-ray select` gives back the stage's pairs byte for byte and other baselines without generating; every pair is the
RC choice a brute-force loop makes over the candidates rescored from their text; RS-DPO's pairs by hand."""

import json
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from rcs_ray import rc
from rcs_ray.tinyworld.rewards import harmless, helpful
from tests.ray.sampling_helpers import read, texts

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_candidates_are_stored_and_select_reproduces_the_pairs_byte_for_byte(default_run, tmp_path):
    from rcs_ray.sampling.select import select

    cfg, result = default_run
    sampling_dir = os.path.dirname(result.pairs)
    store = pq.read_table(os.path.join(sampling_dir, "candidates.parquet"))
    assert store.num_rows == 24 and set(store.column_names) >= {"candidates", "sources", "candidate_tokens", "rewards"}
    row = store.to_pylist()[0]
    assert len(row["rewards"]) == len(row["candidates"]) == len(row["candidate_tokens"]) and len(row["rewards"][0]) == 2
    assert row["sources"][:2] == ["original_chosen", "original_rejected"]
    assert cfg.stages[1].rc.margin == -0.5  # not select's own default: it reads the stage's
    select(os.path.join(sampling_dir, "candidates.parquet"), str(tmp_path / "again"))  # no settings given
    for name in ("pairs.parquet", "failed.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == open(os.path.join(sampling_dir, name), "rb").read(), name
    # other baselines on the very same candidates, no generation
    strict = select(os.path.join(sampling_dir, "candidates.parquet"), str(tmp_path / "strict"), margin=0.0)
    loose = select(
        os.path.join(sampling_dir, "candidates.parquet"), str(tmp_path / "target_only"), strategy="target_only"
    )
    assert strict["pairs"] <= json.loads(open(result.stats_path).read())["pairs"] <= loose["pairs"]
    for p in read(tmp_path / "strict" / "pairs.parquet"):
        assert rc.is_consistent(p["chosen_rewards"], p["rejected_rewards"])  # strict RC on both
    weighted = select(
        os.path.join(sampling_dir, "candidates.parquet"), str(tmp_path / "w"), strategy="weighted", weights=[0.5, 0.5]
    )
    assert weighted["strategy"] == "weighted" and weighted["prompts"] == 24
    for p in read(tmp_path / "w" / "pairs.parquet"):  # RSDPO-W: a target win
        assert p["chosen_rewards"][1] > p["rejected_rewards"][1]
    # RS-DPO proper: every pair over the threshold, several per prompt, each prompt counted once
    rs = select(
        os.path.join(sampling_dir, "candidates.parquet"),
        str(tmp_path / "rs"),
        strategy="rs_dpo",
        rs_tau=0.5,
        rs_eta=0.6,
    )
    pairs = read(tmp_path / "rs" / "pairs.parquet")
    expected = {}
    for row in store.to_pylist():  # by hand: every (finished winner, loser); largest gap first, then row-major
        r, done, cands = row["rewards"], row["candidate_finished"], row["candidates"]
        kept = [
            (-(r[w][1] - r[lo][1]), w, lo)
            for w in range(len(r))
            for lo in range(len(r))
            if done[w] and 1 / (1 + math.exp(-(r[w][1] - r[lo][1]) / 0.5)) > 0.6
        ]
        if kept:
            expected[row["prompt_id"]] = [(cands[w], cands[lo]) for _, w, lo in sorted(kept)]
    found = {}
    for p in pairs:
        found.setdefault(p["prompt_id"], []).append((texts(p, "chosen")[1], texts(p, "rejected")[1]))
        assert 1 / (1 + math.exp(-(p["chosen_rewards"][1] - p["rejected_rewards"][1]) / 0.5)) > 0.6
    assert found == expected and len(pairs) > len(found)  # several pairs per prompt
    assert (rs["prompts"], rs["prompts_paired"], rs["pairs"]) == (24, len(found), len(pairs))


def brute_force_rc_pair(rewards, finished, margin):
    """The RCS choice written out by hand (no rc.py): every (winner, loser) with a finished winner (a cut answer is
    never chosen), harmless gap > margin, helpful gap > max(margin, 0); the largest helpful gap, ties to the first
    pair in row-major order. None when no pair qualifies."""
    best, best_gap = None, None
    for w in range(len(rewards)):
        for lo in range(len(rewards)):
            harmless_gap = rewards[w][0] - rewards[lo][0]
            helpful_gap = rewards[w][1] - rewards[lo][1]
            if w == lo or not finished[w] or harmless_gap <= margin or helpful_gap <= max(margin, 0.0):
                continue
            if best is None or helpful_gap > best_gap:
                best, best_gap = (w, lo), helpful_gap
    return best


def test_pairs_are_a_brute_force_rc_choice_over_candidates_rescored_from_their_text(default_run):
    # An oracle apart from the pipeline: each stored candidate is rescored with the tiny world's rules from its text,
    # and the pair is chosen by the loop above. pairs.parquet and failed.parquet must hold exactly that choice.
    cfg, result = default_run
    store = read(os.path.join(os.path.dirname(result.pairs), "candidates.parquet"))
    pairs = {p["prompt_id"]: p for p in read(result.pairs)}
    failed = {f["prompt_id"] for f in read(result.failed)}
    assert len(pairs) + len(failed) == len(store) and pairs
    for row in store:
        prompt = row["prompt"] if isinstance(row["prompt"], str) else row["prompt"][-1]["content"]
        answers = [c if isinstance(c, str) else c[-1]["content"] for c in row["candidates"]]
        rewards = [(harmless(prompt, a), helpful(prompt, a)) for a in answers]
        np.testing.assert_allclose(rewards, row["rewards"])
        choice = brute_force_rc_pair(rewards, row["candidate_finished"], cfg.stages[1].rc.margin)
        if choice is None:
            assert row["prompt_id"] in failed and row["prompt_id"] not in pairs
            continue
        pair = pairs[row["prompt_id"]]
        assert (texts(pair, "chosen")[1], texts(pair, "rejected")[1]) == (answers[choice[0]], answers[choice[1]])
        assert (pair["chosen_rewards"], pair["rejected_rewards"]) == (
            list(rewards[choice[0]]),
            list(rewards[choice[1]]),
        )
