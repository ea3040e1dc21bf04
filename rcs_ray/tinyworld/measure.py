"""Measurements of a built tiny world, recorded in world.json: reward-model scores and fit, sample statistics vs the
generator, conflict between the objectives in policy samples, and the one-screen summary of them."""

from __future__ import annotations

import json
from typing import Dict, List, Sequence

import numpy as np

from rcs_ray.tinyworld import world as W
from rcs_ray.tinyworld.generate import chat_prompts, generate_ids
from rcs_ray.tinyworld.rewards import OBJECTIVES, correlations, pair_stats, reward_names, score


def rm_scores(rm_dir: str, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Reward-model outputs (standardized objective scores) for N (prompt, response) texts: (N, num_labels).

    The text is the chat-formatted prompt followed by the response, as the policy sees it.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    texts = [c + r for c, r in zip(chat_prompts(tok, prompts), responses)]
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start : start + batch_size], add_special_tokens=False, padding=True, return_tensors="pt")
            out.append(model(**enc).logits.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels))


def _means(values: np.ndarray, names: Sequence[str]) -> Dict[str, float]:
    return {n: round(float(v), 4) for n, v in zip(names, values.mean(axis=0))}


def sample_stats(prompts: Sequence[str], responses: Sequence[str], finished: Sequence[bool] = ()) -> dict:
    """Mean rewards (both scales), reward correlations, length and vocabulary checks of a set of responses."""
    integer = score(prompts, responses, reward_names("integer"))
    fine = score(prompts, responses, reward_names("fine"))
    words = [w for r in responses for w in r.split()]
    known = set(W.ALL_WORDS)
    relevant = [
        W.WORD_DOMAIN[w] == W.TOPIC_DOMAIN[W.prompt_topic(p)]
        for p, r in zip(prompts, responses)
        for w in r.split()
        if w in W.WORD_DOMAIN
    ]
    out = {
        "n": len(responses),
        "mean": _means(integer, OBJECTIVES),
        "mean_fine": _means(fine, OBJECTIVES),
        "std": {n: round(float(v), 4) for n, v in zip(OBJECTIVES, integer.std(axis=0))},
        "correlation": correlations(integer, OBJECTIVES),
        "mean_words": round(len(words) / max(1, len(responses)), 3),
        "unknown_word_rate": round(sum(w not in known for w in words) / max(1, len(words)), 5),
        "help_relevant_rate": round(float(np.mean(relevant)) if relevant else 0.0, 4),
    }
    if len(finished):
        out["eos_rate"] = round(float(np.mean(finished)), 4)
    return out


def conflict_stats(prompts: Sequence[str], groups: Sequence[Sequence[str]]) -> dict:
    """RC statistics over all pairs inside each prompt's candidate group.

    ``helpful_vs_harmless``: pairs ordered by helpful (chosen strictly more helpful), checked on harmless;
    ``non_rc`` counts ties as not RC (strict), ``reversed`` only a strictly more harmful chosen.
    ``concise_vs_helpful``: pairs ordered by concise, checked on helpful. Both scales are reported.
    """
    m = len(groups[0])
    flat_p = [p for p in prompts for _ in range(m)]
    flat_r = [r for g in groups for r in g]
    out = {"prompts": len(prompts), "n": m}
    for scale in ("integer", "fine"):
        s = score(flat_p, flat_r, reward_names(scale)).reshape(len(prompts), m, -1)
        out[scale] = {
            "helpful_vs_harmless": _rounded(pair_stats(s, by=1, on=0)),
            "concise_vs_helpful": _rounded(pair_stats(s, by=2, on=1)),
        }
    return out


def _rounded(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def rm_fit(rm_dir: str, prompts: Sequence[str], responses: Sequence[str]) -> dict:
    """Per-head Pearson correlation of the reward model with the fine and integer rule rewards."""
    pred = rm_scores(rm_dir, prompts, responses)
    out = {}
    for scale in ("fine", "integer"):
        rule = score(prompts, responses, reward_names(scale))
        out[scale] = {n: round(float(np.corrcoef(pred[:, j], rule[:, j])[0, 1]), 4) for j, n in enumerate(OBJECTIVES)}
    return out


def measure(paths, cfg, eval_prompts: Sequence[str], n_prompts: int = 64, n: int = 8, seed: int = 0) -> dict:
    """The world.json measurements: policy samples vs the generator, conflict in policy samples, RM fit."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths.policy)
    model = AutoModelForCausalLM.from_pretrained(paths.policy).eval()
    prompts = list(eval_prompts[:n_prompts])
    ids = generate_ids(model, tok, prompts, n=n, max_new_tokens=32, seed=seed)
    groups = [[tok.decode(s, skip_special_tokens=True) for s in g] for g in ids]
    finished = [bool(s) and s[-1] == tok.eos_token_id for g in ids for s in g]
    flat_p = [p for p in prompts for _ in range(n)]
    flat_r = [r for g in groups for r in g]
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 3]))
    gen_groups = np.array(W.sample_responses(rng, flat_p, cfg.conflict)).reshape(len(prompts), n).tolist()
    gen_flat = [r for g in gen_groups for r in g]
    # The RM is checked on fresh generator texts and on policy samples (both unseen in its training).
    return {
        "policy_samples": sample_stats(flat_p, flat_r, finished),
        "generator_samples": sample_stats(flat_p, gen_flat),
        "conflict_policy": conflict_stats(prompts, groups),
        "conflict_generator": conflict_stats(prompts, gen_groups),
        "reward_model_fit": {
            "generator": rm_fit(paths.reward_model, flat_p, gen_flat),
            "policy": rm_fit(paths.reward_model, flat_p, flat_r),
        },
        "example": {"prompt": prompts[0], "responses": groups[0][:3]},
    }


def load_info(info_path: str) -> dict:
    """world.json as a dict."""
    with open(info_path, encoding="utf-8") as fh:
        return json.load(fh)


def summary(info: dict, root: str = "") -> List[str]:
    """A few human-readable lines about a built world (for the CLI); ``root`` is its directory."""
    m = info["measure"]
    ps, gs = m["policy_samples"]["mean"], m["generator_samples"]["mean"]
    conflict = m["conflict_policy"]["integer"]["helpful_vs_harmless"]
    rm = m["reward_model_fit"]["policy"]["fine"]
    stage2 = info["datasets"]["stage2_helpful.jsonl"]["reversed_on"]["harmless"]
    return [
        f"tiny world {info['key']} (v{info['version']}) {root}".rstrip(),
        f"  {info['prompts']['total']} prompts ({info['prompts']['eval']} held out), vocab "
        f"{info['tokenizer']['vocab_size']}, objectives {', '.join(info['objectives'])}, conflict "
        f"{info['config']['conflict']}, reward scale {info['config']['reward_scale']}",
        "  policy samples: " + ", ".join(f"{k} {v:+.2f} (generator {gs[k]:+.2f})" for k, v in ps.items()),
        f"  conflict: {conflict['non_rc']:.0%} of helpful-ordered policy sample pairs are not RC on harmless "
        f"({conflict['reversed']:.0%} reversed); stage-2 data: {stage2:.0%} chose the more harmful response",
        "  reward model correlation: " + ", ".join(f"{k} {v:.2f}" for k, v in rm.items()),
        f"  built in {info['seconds']['total']:.0f} s",
    ]
