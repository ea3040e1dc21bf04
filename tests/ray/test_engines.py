"""Generation engines and model scorers on the tiny world's models (HF transformers on CPU; no Ray)."""

import numpy as np
import pytest

from rcs_ray.config import ModelConfig, ObjectiveConfig, SamplingConfig
from rcs_ray.prompting import prompt_ids, prompt_text
from rcs_ray.sampling.engines import HFEngine
from rcs_ray.sampling.job import ScorerSettings
from rcs_ray.sampling.scorers import ClassifierScorer, ImplicitRewardScorer
from tests.ray.sampling_helpers import rm_head

pytestmark = [pytest.mark.slow]

PROMPTS = ["ask cooking how briefly", "ask chess why kindly", "ask travel where honestly"]


@pytest.fixture(scope="module")
def engine(tiny_world):
    return HFEngine(ModelConfig(path=tiny_world.policy), SamplingConfig(max_tokens=24, temperature=1.0))


def test_prompt_text_uses_the_chat_template(engine):
    text = prompt_text(engine.tokenizer, PROMPTS[0], True)
    assert text == engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True, tokenize=False
    )
    assert prompt_text(engine.tokenizer, PROMPTS[0], use_chat_template=False) == PROMPTS[0]


def test_hf_samples_are_seeded_and_batch_invariant(engine):
    texts = [prompt_ids(engine.tokenizer, p, True) for p in PROMPTS]
    seeds = [[11, 12, 13], [21, 22], [31]]
    together = engine.generate(texts, seeds)
    alone = [engine.generate([t], [s])[0] for t, s in zip(texts, seeds)]
    assert [[c.text for c in g] for g in together] == [[c.text for c in g] for g in alone]
    again = engine.generate(texts[:1], [[11, 12, 13]])[0]
    assert [c.text for c in again] == [c.text for c in together[0]]
    assert len({c.text for c in engine.generate(texts[:1], [list(range(8))])[0]}) > 4  # real sampling
    assert all(c.num_tokens > 0 for g in together for c in g)


def _greedy_with_penalty(engine, ids, penalty):
    """Greedy decoding by hand with vLLM's repetition penalty on every token of the prompt and the response."""
    import torch

    seq = list(ids)
    for _ in range(engine.sampling.max_tokens):
        with torch.no_grad():
            logits = engine.model(torch.tensor([seq])).logits[0, -1].double()
        seen = torch.tensor(sorted(set(seq)))
        logits[seen] = torch.where(logits[seen] > 0, logits[seen] / penalty, logits[seen] * penalty)
        seq.append(int(logits.argmax()))
        if seq[-1] in engine.eos:
            break
    return engine.tokenizer.decode(seq[len(ids) :], skip_special_tokens=True)


def test_hf_engine_honours_top_k_repetition_penalty_and_stop_strings(engine):
    """top_k 1 samples the greedy answer; the repetition penalty gives the hand-computed greedy answer and keeps
    sampling batch-invariant (padding does not count); a stop string in a sample cuts it before the string, as a
    finished response, the tokens before it unchanged (same seeds, same draws)."""
    import dataclasses

    base, texts = engine.sampling, [prompt_ids(engine.tokenizer, p, True) for p in PROMPTS]
    try:
        engine.sampling = dataclasses.replace(base, temperature=0.0)
        greedy = [g[0].text for g in engine.generate(texts, [[0]] * 3)]
        engine.sampling = dataclasses.replace(base, top_k=1)
        assert [[c.text for c in g] for g in engine.generate(texts, [[1, 2]] * 3)] == [[t, t] for t in greedy]
        engine.sampling = dataclasses.replace(base, temperature=0.0, repetition_penalty=1.5)
        penalised = [g[0].text for g in engine.generate(texts, [[0]] * 3)]
        assert penalised == [_greedy_with_penalty(engine, ids, 1.5) for ids in texts] and penalised != greedy
        engine.sampling = dataclasses.replace(base, repetition_penalty=1.3, top_k=5, min_p=0.05)
        seeds = [[11, 12], [21], [31, 32]]
        together = [[c.text for c in g] for g in engine.generate(texts, seeds)]
        assert together == [[c.text for c in engine.generate([t], [s])[0]] for t, s in zip(texts, seeds)]
        engine.sampling = base
        free = engine.generate(texts[:1], [list(range(8))])[0]
        stop = " " + max(free, key=lambda c: len(c.text)).text.split()[2]  # a word inside a sample
        engine.sampling = dataclasses.replace(base, stop=[stop])
        cut = engine.generate(texts[:1], [list(range(8))])[0]
    finally:
        engine.sampling = base
    assert any(stop in f.text for f in free)
    for f, c in zip(free, cut):
        if stop in f.text:
            assert c.text == f.text[: f.text.index(stop)] and c.finished and 0 < c.num_tokens < f.num_tokens
        else:
            assert (c.text, c.num_tokens, c.finished) == (f.text, f.num_tokens, f.finished)


def test_classifier_scorer_matches_direct_forward(tiny_world):
    objs = [
        ObjectiveConfig(name="harmless", kind="multi_head", model=tiny_world.reward_model, head=0, sign=-1.0),
        ObjectiveConfig(name="helpful", kind="multi_head", model=tiny_world.reward_model, head=1),
    ]
    scorer = ClassifierScorer(objs, ScorerSettings())
    responses = [" recipe spice the", " scam weapon lie", " okay"]
    got = scorer.score(PROMPTS, responses)
    # the oracle: each conversation through the RM's template, one sequence at a time, straight from HF
    want = [
        [-rm_head(tiny_world.reward_model, p, r, 0), rm_head(tiny_world.reward_model, p, r, 1)]
        for p, r in zip(PROMPTS, responses)
    ]
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def perturbed_reference(tiny_world, path, seed):
    """(tokenizer, the world's policy, a reference: the policy with noise on every weight, saved to ``path``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_world.policy)
    policy = AutoModelForCausalLM.from_pretrained(tiny_world.policy).eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_world.policy).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    reference.save_pretrained(path)
    tok.save_pretrained(path)
    return tok, policy, reference


def _response_logp(model, tok, prompt, response):
    """log p(response | prompt) by hand: the chat-rendered conversation minus the rendered prompt."""
    import torch

    msgs = [{"role": "user", "content": prompt}]
    full = tok(
        tok.apply_chat_template(msgs + [{"role": "assistant", "content": response}], tokenize=False),
        add_special_tokens=False,
    )["input_ids"]
    n_prompt = len(
        tok(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False), add_special_tokens=False)[
            "input_ids"
        ]
    )
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([full])).logits[0].double(), -1)
    return sum(float(logp[t - 1, full[t]]) for t in range(n_prompt, len(full)))


def test_implicit_reward_hand_computed(tiny_world, tmp_path):
    tok, policy, reference = perturbed_reference(tiny_world, tmp_path / "ref", seed=0)
    obj = ObjectiveConfig(
        name="imp", kind="implicit", model=tiny_world.policy, reference=str(tmp_path / "ref"), beta=0.5, batch_size=2
    )
    responses = [" recipe spice", " scam", " okay the"]
    got = ImplicitRewardScorer([obj], ScorerSettings()).score(PROMPTS, responses)[:, 0]
    want = [
        0.5 * (_response_logp(policy, tok, p, r) - _response_logp(reference, tok, p, r))
        for p, r in zip(PROMPTS, responses)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.all(np.abs(got) > 1e-3)
    same = ImplicitRewardScorer(
        [ObjectiveConfig(name="imp", kind="implicit", model=tiny_world.policy, reference=tiny_world.policy)],
        ScorerSettings(),
    ).score(PROMPTS, responses)
    np.testing.assert_allclose(same, 0.0, atol=1e-5)


def test_implicit_reward_follows_the_policys_prompt_rule(tiny_world, tmp_path):
    """With ``policy.chat_template: false`` the policy samples and trains on the plain prompt (no template, so no
    template BOS here): the implicit reward must score that same text, not the templated one."""
    import torch

    from rcs_ray.modeling.logprobs import sequence_logps, tokenize_example

    tok, policy, reference = perturbed_reference(tiny_world, tmp_path / "ref", seed=1)
    obj = ObjectiveConfig(
        name="imp", kind="implicit", model=tiny_world.policy, reference=str(tmp_path / "ref"), beta=1.0, batch_size=4
    )
    responses = [" recipe spice", " scam", " okay the"]

    def delta(use_chat_template):
        """beta * (log pi - log pi_ref) on the tokens training reads under this prompt rule."""
        out = []
        for p, r in zip(PROMPTS, responses):
            ex = tokenize_example(tok, p, r, 64, use_chat_template=use_chat_template)
            ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
            with torch.no_grad():
                out.append(
                    float(
                        sequence_logps(policy(input_ids=ids).logits, labels)
                        - sequence_logps(reference(input_ids=ids).logits, labels)
                    )
                )
        return np.array(out)

    plain, templated = delta(False), delta(True)
    assert np.abs(plain - templated).max() > 1e-3  # the two prompt texts really score differently
    # generation's prompt ids under each rule are the prompt part of training's ids
    for flag in (False, True):
        ex = tokenize_example(tok, PROMPTS[0], responses[0], 64, use_chat_template=flag)
        ids = prompt_ids(tok, PROMPTS[0], flag)
        assert ex["input_ids"][: len(ids)] == ids and ex["labels"][len(ids) - 1] == -100
    for flag, want in ((False, plain), (True, templated)):
        got = ImplicitRewardScorer([obj], ScorerSettings(policy_chat_template=flag)).score(PROMPTS, responses)[:, 0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
