"""The built tiny world: models load, policy samples keep the world's statistics and conflict, the reward model
fits the rules, the datasets are well formed, the cache answers at once.

Builds the default world once into the repo's ``.cache/tinyworld`` (the cache the demo uses; ~1-2 min on 2 cores).
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from rcs_ray.config import TinyWorldConfig
from rcs_ray.tinyworld import ensure_world, resolve, world as W
from rcs_ray.tinyworld.generate import generate
from rcs_ray.tinyworld.measure import load_info, rm_scores, summary
from rcs_ray.tinyworld.rewards import OBJECTIVES, pair_stats, reward_names, score

pytestmark = [pytest.mark.slow]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = TinyWorldConfig(cache_dir=os.path.join(REPO_ROOT, ".cache", "tinyworld"))


@pytest.fixture(scope="module")
def paths():
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return ensure_world(CFG)


@pytest.fixture(scope="module")
def eval_prompts(paths):
    with open(paths.eval_prompts) as fh:
        return [json.loads(line)["prompt"] for line in fh]


@pytest.fixture(scope="module")
def samples(paths, eval_prompts):
    """Fresh policy samples (a seed other than world.json's): 128 held-out prompts x 8."""
    prompts = eval_prompts[:128]
    groups = generate(paths.policy, prompts, n=8, max_new_tokens=32, seed=1234)
    return prompts, groups


def test_dirs_load_with_from_pretrained(paths):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths.policy)
    assert AutoTokenizer.from_pretrained(paths.tokenizer).get_vocab() == tok.get_vocab()
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "ask cooking how briefly"}], add_generation_prompt=True, tokenize=False
    )
    assert chat == "<s>ask cooking how briefly"
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    policy = AutoModelForCausalLM.from_pretrained(paths.policy)
    c = policy.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.head_dim, c.num_key_value_heads) == (
        128,
        2,
        4,
        32,
        2,
    )
    assert c.tie_word_embeddings and c.vocab_size == len(tok) and c.max_position_embeddings == 512
    rm = AutoModelForSequenceClassification.from_pretrained(paths.reward_model)
    assert rm.config.num_labels == 3 and rm.config.problem_type == "regression"
    assert [rm.config.id2label[i] for i in range(3)] == list(OBJECTIVES)
    assert rm.config.pad_token_id == tok.pad_token_id
    assert resolve("tinyworld:policy", CFG) == paths.policy
    assert resolve("tinyworld:data/stage2_helpful.jsonl", CFG) == paths.stage_files[1]


def test_policy_samples_are_world_responses(paths, samples):
    prompts, groups = samples
    flat = [r for g in groups for r in g]
    words = [w for r in flat for w in r.split()]
    assert sum(w in set(W.ALL_WORDS) for w in words) / len(words) > 0.995
    assert 8 < len(words) / len(flat) < 14
    assert generate(paths.policy, prompts[:4], n=2, seed=7) == generate(paths.policy, prompts[:4], n=2, seed=7)


def test_policy_sample_means_match_the_generator(samples):
    prompts, groups = samples
    flat_p = [p for p in prompts for _ in range(8)]
    pol = score(flat_p, [r for g in groups for r in g], reward_names("integer"))
    gen_texts = W.sample_responses(np.random.default_rng(99), flat_p * 4, CFG.conflict)
    gen = score(flat_p * 4, gen_texts, reward_names("integer"))
    tolerance = np.array([0.2, 0.35, 0.8])  # ~4 standard errors of the difference for 1,024 samples
    diff = np.abs(pol.mean(axis=0) - gen.mean(axis=0))
    assert np.all(diff < tolerance), (pol.mean(axis=0), gen.mean(axis=0))
    # the policy keeps the harmless/helpful conflict (generator: about -0.5)
    assert np.corrcoef(pol[:, 0], pol[:, 1])[0, 1] < -0.25


def test_policy_samples_have_many_non_rc_pairs(samples):
    prompts, groups = samples
    flat_p = [p for p in prompts for _ in range(8)]
    for scale in ("integer", "fine"):
        s = score(flat_p, [r for g in groups for r in g], reward_names(scale)).reshape(len(prompts), 8, 3)
        st = pair_stats(s, by=1, on=0)  # ordered by helpful, RC checked on harmless
        assert st["pairs"] > 1000
        assert st["non_rc"] >= 0.25, st
        assert st["reversed"] >= 0.25, st  # strictly more harmful chosen, not just ties


def test_reward_model_fits_the_rules(paths, samples):
    prompts, groups = samples
    flat_p = [p for p in prompts for _ in range(8)]
    flat_r = [r for g in groups for r in g]
    pred = rm_scores(paths.reward_model, flat_p, flat_r)
    rule = score(flat_p, flat_r, reward_names("fine"))
    for j, name in enumerate(OBJECTIVES):
        assert np.corrcoef(pred[:, j], rule[:, j])[0, 1] >= 0.8, name
    with open(os.path.join(paths.reward_model, "tinyworld_rm.json")) as fh:
        norm = json.load(fh)
    assert norm["objectives"] == list(OBJECTIVES) and len(norm["mean"]) == 3


def test_stage_files_are_well_formed(paths):
    names = reward_names(CFG.reward_scale)
    for k, path in enumerate(paths.stage_files):
        assert os.path.basename(path) == f"stage{k + 1}_{OBJECTIVES[k]}.jsonl"
        with open(path) as fh:
            rows = [json.loads(line) for line in fh]
        assert len(rows) == CFG.pairs_per_stage
        assert set(rows[0]) == {"prompt_id", "prompt", "chosen", "rejected", "chosen_scores", "rejected_scores"}
        for r in rows[:200]:
            assert r["chosen_scores"][k] > r["rejected_scores"][k]
            assert r["chosen_scores"] == score(r["prompt"], [r["chosen"]], names)[0].tolist()
    with open(paths.eval_prompts) as fh:
        evals = [json.loads(line) for line in fh]
    assert len(evals) == CFG.eval_prompts and set(evals[0]) == {"prompt_id", "prompt"}


def test_world_json_records_the_build(paths):
    info = load_info(paths.info)
    assert info["key"] in paths.root and info["objectives"] == list(OBJECTIVES)
    assert set(info["seconds"]) >= {"tokenizer", "policy", "reward_model", "datasets", "measure", "total"}
    conflict = info["measure"]["conflict_policy"]["integer"]["helpful_vs_harmless"]
    assert conflict["non_rc"] >= 0.25
    assert info["datasets"]["stage2_helpful.jsonl"]["non_rc_on"]["harmless"] > 0.5
    assert all(v >= 0.8 for v in info["measure"]["reward_model_fit"]["policy"]["fine"].values())
    assert len(summary(info, paths.root)) >= 4


def test_second_call_returns_from_cache(paths):
    t = time.perf_counter()
    again = ensure_world(CFG, progress=False)
    assert time.perf_counter() - t < 0.5
    assert again == paths


def test_concurrent_builds_build_once(tmp_path):
    """Two processes ask for the same (tiny-budget) world at once: one builds, the other waits and reuses it."""
    code = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from rcs_ray.config import TinyWorldConfig\nfrom rcs_ray.tinyworld import ensure_world\n"
        "cfg = TinyWorldConfig(cache_dir=sys.argv[1], pretrain_examples=1024, rm_examples=1024, "
        "pairs_per_stage=32, eval_prompts=64)\nprint(ensure_world(cfg).policy)\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    logs = outs[0][1] + outs[1][1]
    assert logs.count("building ") == 2  # the models entry and the world entry, once each
    entries = sorted(n for n in os.listdir(tmp_path) if not n.endswith(".lock"))
    assert [n.split("-")[0] for n in entries] == ["models", "world"] and not any(".tmp-" in n for n in entries)
    assert outs[0][0].strip() == os.path.join(str(tmp_path), entries[0], "policy")
