"""RC-filter stage and scorer planning on hand-made prompt-group batches (no Ray, no models)."""

import math

import numpy as np
import pytest

from rcs_ray.config import ObjectiveConfig, RCConfig
from rcs_ray.data.pairs import MESSAGES, group_table
from rcs_ray.sampling.pipeline import n_schedule
from rcs_ray.sampling.rc_step import RCFilterStage
from rcs_ray.sampling.scorers import plan_scorers
from rcs_ray.sampling.seeds import sample_seed

pytestmark = pytest.mark.unit


def group(pid, candidates, harmless, helpful, sources=None, error=None):
    return {
        "prompt_id": pid,
        "prompt": "ask x",
        "candidates": candidates,
        "sources": sources or ["sampled"] * len(candidates),
        "error": error,
        "reward__harmless": harmless,
        "reward__helpful": helpful,
    }


def select(rows, **rc):
    stage = RCFilterStage(["harmless", "helpful"], "helpful", RCConfig(**rc))
    return {r["prompt_id"]: r for r in stage(group_table(rows, False)).to_pylist()}


def test_rc_filter_hand_computed_and_reasons():
    rows = [
        group("ok", ["a", "b", "c", "d"], [1, 0, 2, 1], [0, 3, 2, 1]),  # RC pairs (2,0) gap 2, (2,3), (3,0) -> (2,0)
        group("conflict", ["a", "b"], [0, 1], [1, 0]),
        group("tied", ["a", "b"], [0, 1], [1, 1]),
        group("same", ["a", "a", "a"], [0, 0, 0], [1, 1, 1]),
        group("one", ["a"], [0], [1]),
        group("nan", ["a", "b"], [0, math.nan], [1, 0]),
        group("long", [], [], [], error="prompt_too_long: 600 tokens"),
    ]
    out = select(rows)
    assert (out["ok"]["chosen_index"], out["ok"]["rejected_index"]) == (2, 0)
    assert out["ok"]["failure_reason"] is None
    assert out["conflict"]["failure_reason"] == "no_rc_pair" and out["conflict"]["chosen_index"] is None
    assert out["tied"]["failure_reason"] == "tied_on_target"
    assert out["same"]["failure_reason"] == "all_candidates_identical"
    assert out["one"]["failure_reason"] == "too_few_candidates"
    assert out["nan"]["failure_reason"] == "non_finite_reward" and "harmless" in out["nan"]["error"]
    assert out["long"]["failure_reason"] == "prompt_too_long"


def test_rc_filter_margin_and_strategies():
    ties = [group("t", ["a", "b", "c"], [1, 1, 1], [1, 3, 2])]
    assert select(ties)["t"]["failure_reason"] == "no_rc_pair"
    picked = select(ties, margin=-0.5)["t"]
    assert (picked["chosen_index"], picked["rejected_index"]) == (1, 0)
    orig = [
        group("o", ["a", "b", "c"], [0, 1, 2], [3, 0, 4], sources=["original_chosen", "original_rejected", "sampled"])
    ]
    assert select(orig, strategy="filter_only")["o"]["failure_reason"] == "original_not_rc"
    got = select(orig, strategy="original")["o"]
    assert (got["chosen_index"], got["rejected_index"]) == (0, 1)
    got = select(orig, strategy="target_only")["o"]
    assert (got["chosen_index"], got["rejected_index"]) == (2, 1)
    a = select(orig * 1, strategy="rc_random")["o"]
    b = select(orig * 1, strategy="rc_random")["o"]
    assert (a["chosen_index"], a["rejected_index"]) == (b["chosen_index"], b["rejected_index"])  # seeded per prompt


def test_rc_filter_names_missing_columns():
    stage = RCFilterStage(["harmless", "helpful"], "helpful", RCConfig())
    table = group_table([{"prompt_id": "x", "candidates": ["a"], "sources": ["sampled"]}], False)
    with pytest.raises(KeyError, match="reward__harmless"):
        stage(table)


def test_plan_scorers_groups_one_pool_per_model():
    objs = [
        ObjectiveConfig(name="a", kind="rule", function="m:f"),
        ObjectiveConfig(name="b", kind="multi_head", model="/rm", head=0),
        ObjectiveConfig(name="c", kind="rule", function="m:g"),
        ObjectiveConfig(name="d", kind="multi_head", model="/rm", head=2),
        ObjectiveConfig(name="e", kind="classifier", model="/other"),
        ObjectiveConfig(name="f", kind="implicit", model="/pi", reference="/ref"),
    ]
    specs = plan_scorers(objs)
    assert [(s.kind, s.names) for s in specs] == [
        ("rule", ["a", "c"]),
        ("classifier", ["b", "d"]),
        ("classifier", ["e"]),
        ("implicit", ["f"]),
    ]


def test_sample_seeds_and_schedule():
    assert sample_seed(0, "p", 3) == sample_seed(0, "p", 3)
    assert len({sample_seed(0, "p", i) for i in range(100)}) == 100
    assert sample_seed(1, "p", 0) != sample_seed(0, "p", 0)

    from rcs_ray.config import AdaptiveConfig, SamplingConfig

    s = SamplingConfig(n=2, adaptive=AdaptiveConfig(enabled=True, n_max=12, rounds=3))
    assert n_schedule(s) == [2, 4, 8, 12]
    s.adaptive.enabled = False
    assert n_schedule(s) == [2]


def test_gumbel_sampler_matches_softmax_and_top_p():
    import numpy as np
    import torch

    from rcs_ray.sampling.engines import _GumbelNoise

    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = torch.tensor(np.log(probs), dtype=torch.float32).repeat(4000, 1)
    picks = _GumbelNoise(range(4000), temperature=1.0, top_p=1.0)(None, logits).argmax(-1).numpy()
    np.testing.assert_allclose(np.bincount(picks, minlength=4) / 4000, probs, atol=0.03)
    picks = _GumbelNoise(range(4000), temperature=1.0, top_p=0.7)(None, logits).argmax(-1).numpy()
    np.testing.assert_allclose(np.bincount(picks, minlength=4) / 4000, [0.625, 0.375, 0, 0], atol=0.03)
    # temperature 2 flattens: p ~ sqrt(probs), renormalized
    flat = np.sqrt(probs) / np.sqrt(probs).sum()
    picks = _GumbelNoise(range(4000), temperature=2.0, top_p=1.0)(None, logits).argmax(-1).numpy()
    np.testing.assert_allclose(np.bincount(picks, minlength=4) / 4000, flat, atol=0.03)
    # same seeds, same draws
    a = _GumbelNoise([7, 8], 1.0, 1.0)(None, logits[:2])
    b = _GumbelNoise([7, 8], 1.0, 1.0)(None, logits[:2])
    assert torch.equal(a, b) and torch.isfinite(a).all()


class _Tok:
    """A character-level stand-in tokenizer: one id per character, no chat template."""

    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}


class _FakeEngine:
    """Echo engine that breaks on prompts containing 'boom' (as a real engine breaks on a bad prompt)."""

    tokenizer = _Tok()
    max_model_len = 40

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, seeds):
        from rcs_ray.sampling.engines import Completion

        self.calls += 1
        prompts = ["".join(map(chr, ids)) for ids in prompts]  # the engine is given token ids
        if any("boom" in p for p in prompts):
            raise RuntimeError("engine exploded")
        return [
            [Completion(text=f"{p}#{s}", num_tokens=2, finished=True) for s in row] for p, row in zip(prompts, seeds)
        ]


def test_generate_stage_isolates_bad_prompts():
    from rcs_ray.config import ModelConfig, SamplingConfig
    from rcs_ray.sampling.stages import GenerateStage

    stage = GenerateStage(ModelConfig(path="x"), SamplingConfig(max_tokens=8), n_target=2, engine=_FakeEngine())
    rows = [
        {"prompt_id": pid, "prompt": p, "original_chosen": c, "original_rejected": r}
        for pid, p, c, r in [
            ("a", "fine", "yes", "no"),
            ("b", "boom", None, None),
            ("c", "x" * 40, None, None),
            ("d", "ok", None, None),
        ]
    ]
    out = {r["prompt_id"]: r for r in stage.generate_batch(group_table(rows, False)).to_pylist()}
    assert out["a"]["sources"] == ["original_chosen", "original_rejected", "sampled", "sampled"]
    assert out["a"]["candidates"][:2] == ["yes", "no"] and out["a"]["generated_tokens"] == 4
    assert out["b"]["error"].startswith("generation_failed: RuntimeError: engine exploded")
    assert out["c"]["error"].startswith("prompt_too_long: 40 prompt tokens + max_tokens 8 > max_model_len 40")
    assert out["d"]["candidates"] == [f"ok#{sample_seed(0, 'd', 0)}", f"ok#{sample_seed(0, 'd', 1)}"]
    # a second pass with a larger target only adds the missing samples, with the next sample indices
    stage.n_target = 3
    again = {r["prompt_id"]: r for r in stage.generate_batch(group_table(list(out.values()), False)).to_pylist()}
    assert again["d"]["candidates"][2] == f"ok#{sample_seed(0, 'd', 2)}" and again["d"]["generated_tokens"] == 6
    assert again["b"]["candidates"] == []


def test_writer_commits_atomically_and_aborts_cleanly(tmp_path):
    import os

    import pyarrow.parquet as pq

    from rcs_ray.sampling.writer import OutputWriter

    row = {
        "prompt_id": "p",
        "prompt": "ask",
        "candidates": ["a", "b"],
        "sources": ["sampled", "sampled"],
        "reward__h": [1.0, 0.0],
        "chosen_index": 0,
        "rejected_index": 1,
        "failure_reason": None,
        "seconds__generate": 0.5,
    }
    w = OutputWriter(str(tmp_path), ["h"], "h")
    w.write(group_table([row], False), 0)
    assert not os.path.exists(tmp_path / "pairs.parquet")  # nothing visible before commit
    w.abort()
    assert os.listdir(tmp_path) == []
    w = OutputWriter(str(tmp_path), ["h"], "h")
    failed = dict(
        row, prompt_id="q", failure_reason="no_rc_pair", chosen_index=None, rejected_index=None, seconds__generate=0.0
    )
    assert w.write(group_table([row, failed], False), 0).num_rows == 0
    stats = w.commit({"extra": 1})
    assert pq.read_table(tmp_path / "pairs.parquet").to_pylist()[0]["chosen_rewards"] == [1.0]
    assert pq.read_table(tmp_path / "failed.parquet").to_pylist()[0]["reason"] == "no_rc_pair"
    assert stats["failure_rate"] == 0.5 and stats["actor_seconds_by_stage"] == {"generate": 0.5}
    assert sorted(os.listdir(tmp_path)) == ["failed.parquet", "pairs.parquet", "stats.json"]


def test_chat_prompts_stay_arrow_messages_through_the_stages(tmp_path):
    import pyarrow.parquet as pq

    from rcs_ray.config import ModelConfig, SamplingConfig
    from rcs_ray.sampling.stages import GenerateStage
    from rcs_ray.sampling.writer import OutputWriter

    class ChatTok(_Tok):
        chat_template = "x"

        def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=False):
            return "|".join(m["content"] for m in messages) + (">" if add_generation_prompt else "")

    engine = _FakeEngine()
    engine.tokenizer = ChatTok()
    chat = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}]
    table = group_table([{"prompt_id": "c", "prompt": chat}], True)
    assert table.schema.field("prompt").type == MESSAGES
    out = GenerateStage(ModelConfig(path="x"), SamplingConfig(max_tokens=8), n_target=2, engine=engine).generate_batch(
        table
    )
    assert out.schema.field("prompt").type == MESSAGES
    row = out.to_pylist()[0]
    assert row["prompt"] == chat and row["candidates"][0].startswith("be kind|hi>#")  # the template, tokenized once
    w = OutputWriter(str(tmp_path), ["h"], "h", chat=True)
    w.write(
        group_table(
            [dict(row, **{"reward__h": [1.0, 0.0], "chosen_index": 0, "rejected_index": 1, "failure_reason": None})],
            True,
        ),
        0,
    )
    w.commit({})
    pair = pq.read_table(tmp_path / "pairs.parquet")
    assert pair.schema.field("prompt").type == MESSAGES and pair.schema.field("chosen").type == MESSAGES
    assert pair.to_pylist()[0]["chosen"] == [{"role": "assistant", "content": row["candidates"][0]}]


class _LengthScorer:
    """Two objectives from lengths, recording what it was asked to score."""

    def __init__(self):
        self.calls = []

    def score(self, prompts, responses):
        self.calls.append(list(zip(prompts, responses)))
        text = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
        return np.array([[len(p) + len(r), -len(r)] for p, r in zip(text, responses)], dtype=float)


def _score_stage():
    from rcs_ray.sampling.stages import ScoreStage

    stage = ScoreStage.__new__(ScoreStage)  # no model to load: the scorer is injected
    stage.names, stage.label, stage.scorer = ["a", "b"], "fake", _LengthScorer()
    return stage


def test_score_stage_scores_only_unscored_candidates_and_keeps_old_rewards():
    stage = _score_stage()
    rows = [
        {
            "prompt_id": "p",
            "prompt": "xy",
            "candidates": ["a", "bbb", "cc"],
            "reward__a": [100.0],
            "reward__b": [-100.0],
        },  # carried from a round: one scored already
        {"prompt_id": "q", "prompt": "z", "candidates": ["dddd"], "error": "generation_failed: boom"},
        {"prompt_id": "r", "prompt": "", "candidates": []},
        {"prompt_id": "s", "prompt": "w", "candidates": ["e", "ff"]},
    ]
    out = {r["prompt_id"]: r for r in stage(group_table(rows, False)).to_pylist()}
    assert stage.scorer.calls == [[("xy", "bbb"), ("xy", "cc"), ("w", "e"), ("w", "ff")]]
    assert out["p"]["reward__a"] == [100.0, 5.0, 4.0] and out["p"]["reward__b"] == [-100.0, -3.0, -2.0]
    assert out["q"]["reward__a"] == [] and out["r"]["reward__b"] == []  # an error row is not scored
    assert out["s"]["reward__a"] == [2.0, 3.0] and out["s"]["reward__b"] == [-1.0, -2.0]
    assert all(r["seconds__score:fake"] > 0 for r in out.values())  # by scorer: rcs_ray.sampling.sizing
    again = stage(group_table(list(out.values()), False)).to_pylist()  # nothing new: nothing scored
    assert len(stage.scorer.calls) == 1 and [r["reward__a"] for r in again] == [r["reward__a"] for r in out.values()]


def test_score_stage_passes_chat_prompts_as_messages():
    stage = _score_stage()
    prompt = [{"role": "user", "content": "hey"}]
    out = stage(group_table([{"prompt_id": "c", "prompt": prompt, "candidates": ["ok"]}], True)).to_pylist()
    assert stage.scorer.calls == [[(prompt, "ok")]] and out[0]["reward__a"] == [5.0]
