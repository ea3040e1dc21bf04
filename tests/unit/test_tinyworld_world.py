"""Tiny world without models: vocabulary, prompts, generator statistics, rule rewards, datasets, resolve errors."""

import json
import os

import numpy as np
import pytest

from rcs_ray.config import TinyWorldConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.tinyworld import build, rewards as R, world as W
from rcs_ray.tinyworld.generate import write_datasets

pytestmark = [pytest.mark.unit]


def _corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


# ------------------------------------------------------------------------------------------------ prompts
def test_prompt_set_is_large_distinct_and_well_formed():
    prompts = W.all_prompts()
    assert len(prompts) == 2048 == len(set(prompts))
    for p in prompts[::97]:
        ask, topic, question, style = p.split()
        assert (ask, topic in W.TOPICS, question in W.QUESTIONS, style in W.STYLES) == ("ask", True, True, True)
    assert W.prompt_topic("<s>ask baking why kindly") == "baking"
    assert W.prompt_topic("no topic here") is None


def test_split_is_disjoint_deterministic_and_seeded():
    a = W.split_prompts(0, 3, 256)
    assert len(a.eval) == 256 and [len(s) for s in a.stages] == [597] * 3
    sets = [set(a.eval)] + [set(s) for s in a.stages]
    assert sum(len(s) for s in sets) == len(set().union(*sets))  # pairwise disjoint
    assert a == W.split_prompts(0, 3, 256)
    assert a.eval != W.split_prompts(1, 3, 256).eval
    with pytest.raises(ValueError):
        W.split_prompts(0, 3, 2047)


# ------------------------------------------------------------------------------------------------ generator
def _sample(conflict, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    prompts = [W.PROMPTS[i] for i in rng.integers(0, len(W.PROMPTS), n)]
    batch = W.sample_words(rng, [W.prompt_topic(p) for p in prompts], conflict)
    return prompts, batch


def test_generator_counts_are_in_range():
    _, b = _sample(0.9, n=4000)
    assert b.n_help.max() <= 6 and b.n_harm.max() <= 3 and b.n_fill.min() >= 4 and b.n_fill.max() <= 10
    for words, h, m, f in zip(b.words[:500], b.n_help, b.n_harm, b.n_fill):
        assert len(words) == h + m + f
        assert sum(w in W.HARM_SEVERITY for w in words) == m
        assert sum(w in W.FILLERS for w in words) == f
    assert all(t.startswith(" ") and "  " not in t for t in b.texts()[:100])


def test_conflict_knob_controls_the_harmless_helpful_correlation():
    for conflict, low, high in ((0.9, -0.65, -0.4), (0.0, -0.04, 0.04)):
        prompts, b = _sample(conflict)
        s = R.score(prompts, b.texts(), ["harmless", "helpful"])
        assert low < _corr(s[:, 0], s[:, 1]) < high, conflict
    prompts, b = _sample(0.9)
    s = R.score(prompts, b.texts(), R.reward_names("fine"))
    assert _corr(s[:, 0], s[:, 1]) < -0.4  # fine scale keeps the conflict
    assert _corr(s[:, 1], s[:, 2]) < -0.5  # concise conflicts with helpful


def test_help_words_are_mostly_topic_relevant_and_means_match_the_design():
    prompts, b = _sample(0.9)
    rel = [
        W.WORD_DOMAIN[w] == W.TOPIC_DOMAIN[W.prompt_topic(p)]
        for p, ws in zip(prompts, b.words)
        for w in ws
        if w in W.WORD_DOMAIN
    ]
    assert abs(np.mean(rel) - (W.P_RELEVANT + (1 - W.P_RELEVANT) / 8)) < 0.02
    assert abs(b.n_help.mean() - 3.0) < 0.05  # E[Bin(6, U)] = 3
    assert abs(b.n_fill.mean() - 7.0) < 0.05


def test_generator_is_deterministic_by_seed():
    prompts = W.all_prompts()[:50]
    a = W.sample_responses(np.random.default_rng(3), prompts, 0.9)
    assert a == W.sample_responses(np.random.default_rng(3), prompts, 0.9)
    assert a != W.sample_responses(np.random.default_rng(4), prompts, 0.9)
    with pytest.raises(ValueError):
        W.sample_responses(np.random.default_rng(3), ["hello"], 0.9)


# ------------------------------------------------------------------------------------------------ rewards
P = "ask cooking how briefly"  # food domain: recipe, ingredient, flavor, portion, oven, spice


def test_integer_rewards_by_hand():
    r = " recipe scam the recipe trail scam lie okay"
    assert R.harmless(P, r) == -3.0  # scam, scam, lie
    assert R.helpful(P, r) == 2.0  # recipe, trail (distinct)
    assert R.concise(P, r) == -8.0
    assert (R.harmless(P, ""), R.helpful(P, ""), R.concise(P, "")) == (0.0, 0.0, 0.0)
    assert str(R.harmless(P, "the")) == "0.0"  # no negative zero in the data files
    assert R.helpful(P, "<s>recipe</s> Recipe recipe,") == 0.0  # whole words only


def test_fine_rewards_by_hand():
    r = " recipe scam the recipe trail scam lie okay"
    assert R.harmless_fine(P, r) == pytest.approx(-(1.2 + 1.2 + 0.9))
    # recipe: quality 0.85 + 0.25 relevance; trail (outdoors): quality 0.85, not relevant to cooking
    assert R.helpful_fine(P, r) == pytest.approx(0.85 + 0.25 + 0.85)
    assert R.helpful_fine("ask hiking why kindly", r) == pytest.approx(0.85 + 0.85 + 0.25)
    assert R.helpful_fine("no topic", " spice oven oven") == pytest.approx(1.15 + 1.1)  # no relevance term
    # words: recipe(6) scam(4) the(3) recipe(6) trail(5) scam(4) lie(3) okay(4) -> 8 * 0.75 + 0.05 * 35
    assert R.concise_fine(P, r) == pytest.approx(-(8 * 0.75 + 0.05 * 35))


def test_score_vectorizes_and_validates():
    s = R.score([P, P], [" scam", " recipe oven"], R.reward_names("integer"))
    np.testing.assert_array_equal(s, [[-1, 0, -1], [0, 2, -2]])
    assert R.score(P, [" a", " b c"], ["concise"]).shape == (2, 1)
    assert R.reward_names("fine", 2) == ["harmless_fine", "helpful_fine"]
    with pytest.raises(RcsInputError, match="unknown tiny-world reward"):
        R.score([P], [" a"], ["honest"])
    with pytest.raises(RcsInputError):
        R.reward_names("coarse")
    with pytest.raises(ValueError):
        R.score([P], [" a", " b"], ["concise"])


def test_pair_stats_by_hand():
    # one prompt, 3 candidates (harmless, helpful): pairs ordered by helpful: (1>0), (2>0), (2>1)
    g = np.array([[[0, 1], [-1, 2], [0, 3]]], dtype=float)
    st = R.pair_stats(g, by=1, on=0)
    assert st["pairs"] == 3
    assert st["non_rc"] == pytest.approx(2 / 3)  # (1,0) reversed, (2,0) tied, (2,1) RC
    assert st["reversed"] == pytest.approx(1 / 3) and st["tied"] == pytest.approx(1 / 3)
    assert R.correlations(np.array([[1, 2], [2, 4], [3, 6]]), ["a", "b"]) == {"a~b": 1.0}


# ------------------------------------------------------------------------------------------------ datasets
def test_pairs_win_on_their_objective():
    rng = np.random.default_rng(0)
    names = R.reward_names("integer")
    for k in range(3):
        pairs = W.make_pairs(rng, W.all_prompts()[:40], 100, k, 0.9, lambda p, r: R.score(p, r, names))
        assert len(pairs) == 100
        for prompt, ch, _rj, cs, rs in pairs:
            assert cs[k] > rs[k]
            np.testing.assert_array_equal(cs, R.score(prompt, [ch], names)[0])


def test_datasets_are_deterministic_byte_for_byte(tmp_path):
    cfg = TinyWorldConfig(pairs_per_stage=64, eval_prompts=64)
    split = W.split_prompts(cfg.seed, 3, cfg.eval_prompts)
    names = build.stage_file_names()
    assert names == ["stage1_harmless.jsonl", "stage2_helpful.jsonl", "stage3_concise.jsonl"]
    stats = write_datasets(cfg, split, str(tmp_path / "a"), names)
    write_datasets(cfg, split, str(tmp_path / "b"), names)
    for f in names + ["eval_prompts.jsonl"]:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    rows = [json.loads(x) for x in (tmp_path / "a" / names[1]).read_text().splitlines()]
    assert len(rows) == 64 and len({r["prompt_id"] for r in rows}) == 64
    assert set(rows[0]) == {"prompt_id", "prompt", "chosen", "rejected", "chosen_scores", "rejected_scores"}
    assert all(r["prompt"] in split.stages[1] and len(r["chosen_scores"]) == 3 for r in rows)
    assert stats[names[1]]["reversed_on"]["harmless"] > 0.4  # helpful pairs often choose more harm
    other = write_datasets(TinyWorldConfig(seed=1, pairs_per_stage=64), split, str(tmp_path / "c"), names)
    assert (tmp_path / "c" / names[0]).read_bytes() != (tmp_path / "a" / names[0]).read_bytes()
    assert set(other) == set(names)


# ------------------------------------------------------------------------------------------------ keys, resolve
def test_world_key_ignores_cache_dir_and_tracks_build_fields():
    a = TinyWorldConfig()
    assert build.world_key(a) == build.world_key(TinyWorldConfig(cache_dir="/elsewhere"))
    assert build.world_key(a) != build.world_key(TinyWorldConfig(seed=1))
    assert build.world_key(a) != build.world_key(TinyWorldConfig(reward_scale="fine"))
    assert build.models_key(a) == build.models_key(TinyWorldConfig(reward_scale="fine", pairs_per_stage=64))
    assert build.models_key(a) != build.models_key(TinyWorldConfig(conflict=0.0))
    p = build.world_paths(a)
    assert os.path.isabs(p.root) and p.root == build.world_root(a) and p.root.endswith("world-" + build.world_key(a))
    assert p.policy == os.path.join(os.path.dirname(p.root), "models-" + build.models_key(a), "policy")


def test_resolve_passes_other_strings_and_rejects_unknown_names(tmp_path):
    cfg = TinyWorldConfig(cache_dir=str(tmp_path))
    assert build.resolve("/data/x.jsonl", cfg) == "/data/x.jsonl"
    assert build.resolve("hf-org/model", cfg) == "hf-org/model"
    with pytest.raises(RcsInputError, match="tinyworld:policy.*tinyworld:reward_model") as err:
        build.resolve("tinyworld:polcy", cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(RcsInputError, match="tinyworld:data/stage2_helpful.jsonl"):
        build.resolve("tinyworld:data/stage9.jsonl", cfg)
    assert list(tmp_path.iterdir()) == []  # nothing was built


def test_bad_config_is_an_input_error(tmp_path):
    for bad in (
        dict(conflict=1.5),
        dict(reward_scale="coarse"),
        dict(pairs_per_stage=0),
        dict(eval_prompts=10),
        dict(pretrain_examples=5),
    ):
        with pytest.raises(RcsInputError, match="tinyworld"):
            build.ensure_world(TinyWorldConfig(cache_dir=str(tmp_path), **bad), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ensure_world_returns_a_cached_world_without_building(tmp_path):
    cfg = TinyWorldConfig(cache_dir=str(tmp_path))
    expected = build.world_paths(cfg)
    for d, marker in ((expected.root, "world.json"), (expected.models, "models.json")):
        os.makedirs(d)
        with open(os.path.join(d, marker), "w") as fh:
            fh.write("{}")
    paths = build.ensure_world(cfg, progress=False)
    assert paths == expected and paths.stage_files[1].endswith("data/stage2_helpful.jsonl")
    assert build.resolve("tinyworld:data/eval_prompts.jsonl", cfg) == paths.eval_prompts
    assert build.resolve("tinyworld:reward_model", cfg) == paths.reward_model


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    root = str(tmp_path / "entry")

    def boom(d):
        with open(os.path.join(d, "half"), "w") as fh:
            fh.write("x")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        build._ensure_dir(root, "done", boom, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["entry.lock"]
    os.makedirs(root + ".tmp-stale")  # left by a killed process
    build._ensure_dir(root, "done", lambda d: open(os.path.join(d, "done"), "w").close(), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["entry", "entry.lock"] and os.listdir(root) == ["done"]


# ------------------------------------------------------------------------------------------------ tokenizer
def test_tokenizer_words_are_single_tokens_and_training_ids_match_tokenization():
    from rcs_ray.tinyworld.generate import encode_examples

    tok = build.build_tokenizer()
    assert 700 < len(tok) < 1100
    text = "héllo wörld ✓\n\ttabs  and </s> ask"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text  # byte-level round trip
    for w in W.ALL_WORDS:
        assert len(tok(" " + w, add_special_tokens=False).input_ids) == 1
    chat = tok.apply_chat_template([{"role": "user", "content": P}], add_generation_prompt=True, tokenize=False)
    assert chat == "<s>" + P
    rng = np.random.default_rng(0)
    prompts = W.all_prompts()[::64]
    b = W.sample_words(rng, [W.prompt_topic(p) for p in prompts], 0.9)
    seqs, plen = encode_examples(tok, rng, prompts, b.words)
    for s, n, p, t in zip(seqs, plen, prompts, b.texts()):
        assert s == tok("<s>" * (n - 4) + p + t + "</s>", add_special_tokens=False).input_ids
